"""The re-ranking baselines on hand-made cases, and their tuning rule on ml-100k."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from popsteer.baselines import BASELINES, RerankContext, history_shares
from popsteer.baselines.calibration import calibrated_rerank, js_divergence
from popsteer.baselines.fair import adjusted_mtable, fail_probability, fair_rerank, mtable, protected_mask
from popsteer.baselines.ipr import ipr_rerank
from popsteer.baselines.random_topm import random_rerank
from popsteer.baselines.tuning import ScoredSplit, rerank_split, tune_baseline
from popsteer.eval.tradeoff import pick_with_fallback
from popsteer.errors import PopSteerError
from popsteer.eval.evaluator import Evaluator
from popsteer.eval.tradeoff import tradeoff
from popsteer.eval.popularity import PopularityGroups

K = 10


@pytest.fixture(scope="module")
def catalog():
    """60 items (+ padding), popularity falling with the id: 6 head, 29 mid, 25 tail items."""
    counts = np.r_[0, 10 + 4 * (60 - np.arange(1, 61))].astype(np.int64)
    return PopularityGroups.from_counts(counts)


def context(groups: PopularityGroups, n_users: int, history=(1 / 3, 1 / 3, 1 / 3)) -> RerankContext:
    return RerankContext(groups, np.arange(n_users), np.tile(np.asarray(history, dtype=np.float64), (n_users, 1)))


def random_scores(n_users: int, n_items: int, seed: int = 0, shift: float = 0.0) -> torch.Tensor:
    s = torch.randn(n_users, n_items, generator=torch.Generator().manual_seed(seed)) + shift
    s[:, 0] = -torch.inf
    return s


def plain_topk(scores: torch.Tensor) -> torch.Tensor:
    return torch.topk(scores, K, dim=1).indices


def test_catalog_has_all_three_groups(catalog):
    assert (catalog.head.sum(), catalog.mid.sum(), catalog.tail.sum()) == (6, 29, 25)


# ------------------------------------------------------------------ IPR


def test_ipr_with_a_zero_is_plain_topk(catalog):
    s = random_scores(32, 61)
    assert torch.equal(ipr_rerank(s, context(catalog, 32), K, a=0.0), plain_topk(s))


@pytest.mark.parametrize("shift,space", [(3.0, "raw"), (0.0, "softmax"), (-50.0, "softmax")],
                         ids=["positive-raw", "mixed-sign-softmax", "all-negative-softmax"])
def test_ipr_large_a_moves_popular_items_down(catalog, shift, space):
    s = random_scores(64, 61, seed=1, shift=shift)
    ctx = context(catalog, 64)
    pop = torch.as_tensor(catalog.counts, dtype=torch.float64)
    arp = [float(pop[ipr_rerank(s, ctx, K, a=a, space=space)].mean()) for a in (0.0, 0.5, 1e3)]
    assert arp[0] > arp[1] > arp[2]
    # the most popular item falls in every user's list where it was ranked
    item = int(np.argmax(catalog.counts))
    s2 = s.clone()
    s2[:, item] = s2[:, 1:].max(1).values + 0.01  # item 1st everywhere for plain top-k
    ranked = ipr_rerank(s2, ctx, K, a=1e3, space=space)
    assert not (ranked[:, 0] == item).any()


def test_ipr_refuses_a_negative_strength(catalog):
    with pytest.raises(PopSteerError):
        ipr_rerank(random_scores(2, 61), context(catalog, 2), K, a=-1.0)


# ------------------------------------------------------------------ FA*IR


def test_mtable_is_the_binomial_quantile():
    from scipy import stats

    for p, a in [(0.5, 0.1), (0.9, 0.05), (0.3, 0.01)]:
        m = mtable(12, p, a)
        for i in range(1, 13):
            assert m[i - 1] == max(0, int(stats.binom.ppf(a, i, p)))
            # the smallest count whose CDF reaches alpha
            assert stats.binom.cdf(m[i - 1], i, p) >= a - 1e-12
            assert m[i - 1] == 0 or stats.binom.cdf(m[i - 1] - 1, i, p) < a


def brute_force_fail(m, p):
    k = len(m)
    total = 0.0
    for bits in itertools.product((0, 1), repeat=k):
        if (np.cumsum(bits) < np.asarray(m)).any():
            total += p ** sum(bits) * (1 - p) ** (k - sum(bits))
    return total


@pytest.mark.parametrize("p,alpha", [(0.5, 0.1), (0.7, 0.1), (0.9, 0.05), (0.99, 0.01)])
def test_fail_probability_is_exact_and_adjustment_lands_near_alpha(p, alpha):
    m = np.asarray(adjusted_mtable(K, p, alpha))
    assert fail_probability(m, p) == pytest.approx(brute_force_fail(m, p), abs=1e-12)
    unadjusted = mtable(K, p, alpha)
    assert fail_probability(unadjusted, p) == pytest.approx(brute_force_fail(unadjusted, p), abs=1e-12)
    # multiple testing: the unadjusted table fails more often than alpha; the adjusted one is nearer alpha
    assert abs(fail_probability(m, p) - alpha) <= abs(fail_probability(unadjusted, p) - alpha)
    assert (m <= unadjusted).all() and (np.diff(m) >= 0).all()


@pytest.mark.parametrize("params", BASELINES["fair"].grid, ids=lambda d: f"p{d['p']}-a{d['significance']}")
@pytest.mark.parametrize("protected", ["non_head", "tail"])
def test_fair_satisfies_ranked_group_fairness_at_every_prefix(catalog, params, protected):
    s = random_scores(50, 61, seed=3)
    s[:, 1:] += torch.as_tensor(np.log(catalog.counts[1:] + 1.0), dtype=torch.float32)  # popular items score higher
    ctx = context(catalog, 50)
    out = fair_rerank(s, ctx, K, protected=protected, **params)
    m = np.asarray(adjusted_mtable(K, params["p"], params["significance"]))
    prot = protected_mask(ctx, protected)[out.numpy()]  # (U, k)
    assert (np.cumsum(prot, axis=1) >= m[None, :]).all()
    assert all(len(set(row)) == K for row in out.tolist()) and (out > 0).all()
    # within each group the order is the score order (FA*IR only interleaves the two queues)
    for row, flags, sc in zip(out.numpy(), prot, s.numpy()):
        for group in (True, False):
            vals = sc[row[flags == group]]
            assert (np.diff(vals) <= 0).all()


def test_fair_without_requirement_is_plain_topk(catalog):
    s = random_scores(40, 61, seed=4)
    assert adjusted_mtable(K, 0.3, 0.01) == (0,) * K
    assert torch.equal(fair_rerank(s, context(catalog, 40), K, p=0.3, significance=0.01), plain_topk(s))


# ------------------------------------------------------------------ calibration (PCT)


def group_shares(out: torch.Tensor, groups: PopularityGroups) -> np.ndarray:
    lab = groups.label()[out.numpy()]
    return np.stack([(lab == g).mean(1) for g in (1, 2, 3)], 1)  # (U, 3)


def test_calibration_with_lambda_zero_is_plain_topk(catalog):
    s = random_scores(30, 61, seed=5)
    assert torch.equal(calibrated_rerank(s, context(catalog, 30), K, lam=0.0), plain_topk(s))


def test_calibration_moves_the_lists_groups_toward_the_history(catalog):
    s = random_scores(40, 61, seed=6)
    s[:, 1:] += torch.as_tensor(np.log(catalog.counts[1:] + 1.0), dtype=torch.float32)  # head-heavy top-k
    history = (0.1, 0.2, 0.7)  # a tail lover
    ctx = context(catalog, 40, history)
    target = torch.as_tensor(ctx.history)
    js = []
    for lam in (0.0, 0.5, 0.9):
        out = calibrated_rerank(s, ctx, K, lam=lam)
        assert all(len(set(row)) == K for row in out.tolist())
        js.append(float(js_divergence(target, torch.as_tensor(group_shares(out, catalog))).mean()))
    assert js[0] > js[1] > js[2]
    assert group_shares(calibrated_rerank(s, ctx, K, lam=0.9), catalog)[:, 2].mean() > group_shares(plain_topk(s), catalog)[:, 2].mean()


def test_js_divergence_bounds():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    q = torch.tensor([[0.0, 0.0, 1.0], [0.2, 0.3, 0.5]])
    np.testing.assert_allclose(js_divergence(p, q).numpy(), [1.0, 0.0], atol=1e-12)


def test_history_shares_count_every_item_before_the_target(ml100k_small):
    g = PopularityGroups.from_counts(ml100k_small.train_target_counts())
    shares = history_shares(ml100k_small, "valid", g)
    u = 7
    hist = ml100k_small.sequence(u)[:-2]
    lab = g.label()[hist]
    np.testing.assert_allclose(shares[u], [(lab == i).mean() for i in (1, 2, 3)])
    np.testing.assert_allclose(shares.sum(1), 1.0)


# ------------------------------------------------------------------ random top-m


def test_random_rerank_draws_from_the_top_m_and_is_seeded(catalog):
    s = random_scores(64, 61, seed=7)
    ctx = context(catalog, 64)
    for m in (15, 30, 50):
        out = random_rerank(s, ctx, K, m=m, seed=11)
        top = torch.topk(s, m, dim=1).indices
        assert all(set(o) <= set(t) and len(set(o)) == K for o, t in zip(out.tolist(), top.tolist()))
        assert torch.equal(out, random_rerank(s, ctx, K, m=m, seed=11))
        assert not torch.equal(out, random_rerank(s, ctx, K, m=m, seed=12))
    # a user's draw does not depend on the batch it comes in
    out = random_rerank(s, ctx, K, m=30, seed=11)
    half = random_rerank(s[32:], ctx.rows(slice(32, None)), K, m=30, seed=11)
    assert torch.equal(out[32:], half)
    # m = k is a permutation of the plain top-k
    same = random_rerank(s, ctx, K, m=K, seed=11)
    assert (same.sort(1).values == plain_topk(s).sort(1).values).all() and not torch.equal(same, plain_topk(s))
    with pytest.raises(PopSteerError):
        random_rerank(s, ctx, K, m=5)


# ------------------------------------------------------------------ tuning


def test_pick_with_fallback_keeps_the_five_percent_rule():
    base = {"ndcg@10": 0.10, "gini@10": 0.80}
    rows = [{"ndcg@10": 0.099, "gini@10": 0.78}, {"ndcg@10": 0.096, "gini@10": 0.70},
            {"ndcg@10": 0.080, "gini@10": 0.40}]
    assert pick_with_fallback(rows, base) == (1, True)  # row 2 gains more Gini but drops NDCG 20%
    assert pick_with_fallback(rows[2:], base) == (0, False)
    assert pick_with_fallback([rows[2], {"ndcg@10": 0.09, "gini@10": 0.75}], base) == (1, False)  # smallest drop


@pytest.fixture(scope="module")
def ml100k_splits(ml100k_small, small_sasrec):
    """valid and test of the small SASRec, with the popularity direction of its synthetic profiles (PPD, SPREE)."""
    from popsteer.baselines.direction import popularity_direction
    from popsteer.models.encode import encode_users
    from popsteer.stages.encode import part_inputs
    from popsteer.stages.encoded import Part

    model, _ = small_sasrec
    u = popularity_direction(*(encode_users(model, *part_inputs(Part(kind, seed=seed), ml100k_small)).numpy()
                               for kind, seed in (("popular", 2020), ("unpopular", 2021))))
    out = {}
    for split in ("valid", "test"):
        seq, ln, _ = ml100k_small.split(split)
        out[split] = ScoredSplit.of(encode_users(model, seq, ln), model.item_embedding.weight.detach(),
                                    Evaluator.for_split(ml100k_small, split), ml100k_small, split, u)
    return out


def test_rerank_split_matches_the_evaluator_without_reranking(ml100k_splits):
    valid = ml100k_splits["valid"]
    plain = valid.evaluator.topk(valid.x, valid.item_emb)
    assert np.array_equal(rerank_split(BASELINES["ipr"], {"a": 0.0}, valid, batch_size=100), plain)


@pytest.mark.parametrize("name", list(BASELINES))
def test_tuned_baselines_respect_the_ndcg_drop_rule(ml100k_splits, name):
    valid, test = ml100k_splits["valid"], ml100k_splits["test"]
    base = valid.evaluator(valid.x, valid.item_emb)
    out = tune_baseline(BASELINES[name], valid, test, base)
    assert len(out["valid_rows"]) == len(out["test_rows"]) == len(BASELINES[name].grid)
    picked = out["valid_rows"][out["pick"]]
    gini_drop, ndcg_drop = tradeoff(picked, base)
    if out["within_limit"]:
        assert ndcg_drop <= 0.05 + 1e-12
        better = [r for r in out["valid_rows"] if tradeoff(r, base)[1] <= 0.05]
        assert all(tradeoff(r, base)[0] - tradeoff(r, base)[1] <= gini_drop - ndcg_drop + 1e-12 for r in better)
    else:
        assert all(tradeoff(r, base)[1] > 0.05 for r in out["valid_rows"])
    assert all(np.isfinite(out["test"][k]) for k in ("ndcg@10", "gini@10", "lt_coverage@10", "arp@10"))
    assert out["test"] == {k: v for k, v in out["test_rows"][out["pick"]].items() if k not in out["params"]}
