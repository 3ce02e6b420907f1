"""The x-space re-rankers (PPD, SPREE-like) and P-MMF against direct computations, and the
popularity direction on the small ml-100k SASRec."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from popsteer.baselines import BASELINES, RerankContext
from popsteer.baselines.direction import popularity_direction, ppd_rerank, spree_rerank, with_direction
from popsteer.baselines.pmmf import pmmf_rerank, project_budget
from popsteer.baselines.tuning import ScoredSplit, rerank_split
from popsteer.errors import PopSteerError
from popsteer.eval.evaluator import Evaluator
from popsteer.eval.popularity import PopularityGroups

K = 10


@pytest.fixture(scope="module")
def catalog():
    """60 items (+ padding), popularity falling with the id."""
    return PopularityGroups.from_counts(np.r_[0, 10 + 4 * (60 - np.arange(1, 61))].astype(np.int64))


def case(groups: PopularityGroups, n_users: int = 40, d: int = 8, seed: int = 0):
    """Random x (U, d), E (n_items, d), unit u (d,), float64, and a context with varied head shares."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_users, d, generator=g, dtype=torch.float64)
    emb = torch.randn(len(groups.counts), d, generator=g, dtype=torch.float64)
    u = torch.randn(d, generator=g, dtype=torch.float64)
    u = (u / u.norm()).numpy()
    head = np.linspace(0.0, 1.0, n_users)
    history = np.stack([head, (1 - head) / 2, (1 - head) / 2], 1)
    ctx = with_direction(RerankContext(groups, np.arange(n_users), history), x, emb, u)
    return x, emb, u, ctx


def scores_of(x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    s = x @ emb.T
    s[:, 0] = -torch.inf
    return s


def topk(s: torch.Tensor, k: int = K) -> torch.Tensor:
    return torch.topk(s, k, dim=1).indices


# ------------------------------------------------------------------ PPD and SPREE


def test_zero_strength_is_the_base_topk(catalog):
    x, emb, _, ctx = case(catalog)
    s = scores_of(x, emb).float()
    assert torch.equal(ppd_rerank(s, ctx, K, lam=0.0), topk(s))
    assert torch.equal(spree_rerank(s, ctx, K, beta=0.0), topk(s))


@pytest.mark.parametrize("lam", [0.5, 1.0, 2.5])
def test_ppd_is_the_topk_of_the_projected_representation(catalog, lam):
    x, emb, u, ctx = case(catalog, seed=1)
    ut = torch.as_tensor(u)
    x_new = x - lam * (x @ ut)[:, None] * ut[None, :]  # x' = x - lam (x.u) u
    want = topk(scores_of(x_new, emb))
    assert torch.equal(ppd_rerank(scores_of(x, emb), ctx, K, lam=lam), want)
    if lam == 1.0:
        assert torch.allclose(x_new @ ut, torch.zeros(len(x), dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("beta", [0.5, 3.0])
def test_spree_is_the_topk_of_the_steered_representation(catalog, beta):
    x, emb, u, ctx = case(catalog, seed=2)
    ut = torch.as_tensor(u)
    t_u = torch.as_tensor(ctx.history[:, 0])  # head share of the history
    c = float((x @ ut).std(unbiased=False))  # SD of x.u over the users
    want = topk(scores_of(x - beta * c * t_u[:, None] * ut[None, :], emb))
    assert torch.equal(spree_rerank(scores_of(x, emb), ctx, K, beta=beta), want)
    # a user with no head items in its history is not moved
    assert torch.equal(spree_rerank(scores_of(x, emb), ctx, K, beta=beta)[0], topk(scores_of(x, emb))[0])


def test_direction_methods_refuse_bad_input(catalog):
    x, emb, _, ctx = case(catalog)
    bare = RerankContext(catalog, ctx.users, ctx.history)
    with pytest.raises(PopSteerError):
        ppd_rerank(scores_of(x, emb), bare, K, lam=1.0)
    with pytest.raises(PopSteerError):
        spree_rerank(scores_of(x, emb), ctx, K, beta=-1.0)
    with pytest.raises(PopSteerError):
        popularity_direction(np.ones((3, 4)), np.ones((2, 4)))


def test_context_rows_slice_the_projection(catalog):
    _, _, _, ctx = case(catalog)
    part = ctx.rows(slice(5, 9))
    assert np.array_equal(part.xu, ctx.xu[5:9]) and part.eu is ctx.eu and part.xu_std == ctx.xu_std


def test_direction_from_synthetic_profiles_points_to_popular(ml100k_small, small_sasrec):
    """Estimated on one draw of profiles, checked on fresh draws and on the real users."""
    from popsteer.models.encode import encode_users
    from popsteer.stages.encode import part_inputs
    from popsteer.stages.encoded import Part
    from popsteer.steering.analysis import user_groups

    model, _ = small_sasrec

    def encoded(kind, seed):
        return encode_users(model, *part_inputs(Part(kind, seed=seed), ml100k_small)).numpy()

    u = popularity_direction(encoded("popular", 2020), encoded("unpopular", 2021))
    assert u.shape == (model.item_embedding.weight.shape[1],) and np.isclose(np.linalg.norm(u), 1.0)
    pop, unpop = encoded("popular", 7) @ u, encoded("unpopular", 8) @ u
    assert pop.mean() > unpop.mean() and (pop > np.median(unpop)).mean() > 0.9
    x_users = encode_users(model, *ml100k_small.split("valid")[:2]).numpy()
    top, bottom = user_groups(ml100k_small, 0.1)
    assert (x_users[top] @ u).mean() > (x_users[bottom] @ u).mean()
    # the item side: popular items project higher on average (E u)
    emb = model.item_embedding.weight.detach().numpy()
    groups = PopularityGroups.from_counts(ml100k_small.train_target_counts())
    assert (emb[groups.head] @ u).mean() > (emb[groups.tail] @ u).mean()


# ------------------------------------------------------------------ P-MMF


def reference_projection(v: np.ndarray, lam: float) -> np.ndarray:
    """argmin ||nu - v|| over {nu >= 0, sum nu <= lam}, by bisection on the threshold."""
    if np.maximum(v, 0).sum() <= lam:
        return np.maximum(v, 0)
    lo, hi = 0.0, float(v.max())
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.maximum(v - mid, 0).sum() > lam else (lo, mid)
    return np.maximum(v - hi, 0)


def reference_pmmf(scores: torch.Tensor, groups: PopularityGroups, k: int, lam: float, eta: float,
                   providers: str) -> np.ndarray:
    """The stated algorithm, one user at a time over every item, no shortcut."""
    s = scores.double().numpy()
    label = groups.label()
    if providers == "items":
        prov = np.arange(len(label)) - 1  # item i -> provider i - 1, padding -1
        w = np.full(len(label) - 1, 1.0 / (len(label) - 1))
    else:
        sizes = np.array([(label == g).sum() for g in (1, 2, 3)], dtype=np.float64)
        prov, w = label - 1, sizes / sizes.sum()
    nu = np.zeros(len(w))
    out = []
    for row in s:
        boost = np.array([nu[p] / (k * w[p]) if p >= 0 else 0.0 for p in prov])
        adjusted = np.where(prov >= 0, row + boost, -np.inf)
        chosen = np.argsort(-adjusted, kind="stable")[:k]
        out.append(sorted(chosen, key=lambda i: (-row[i], i)))
        counts = np.array([np.sum(prov[chosen] == p) for p in range(len(w))], dtype=np.float64)
        nu = reference_projection(nu + eta * (1.0 / w.max() - counts / (k * w)), lam)
    return np.asarray(out)


@pytest.mark.parametrize("v,lam", [([0.3, -0.2, 1.5, 0.7], 1.0), ([0.1, 0.2], 5.0), ([2.0, 2.0, -1.0], 0.5),
                                   ([-1.0, -2.0], 1.0), ([1.0, 3.0], 0.0)])
def test_projection_onto_the_budget(v, lam):
    v = np.asarray(v)
    got = project_budget(v, lam)
    np.testing.assert_allclose(got, reference_projection(v, lam), atol=1e-9)
    assert (got >= 0).all() and got.sum() <= lam + 1e-12


@pytest.mark.parametrize("providers", ["items", "groups"])
@pytest.mark.parametrize("lam,eta", [(0.5, 0.01), (5.0, 0.05), (50.0, 0.2)])
def test_pmmf_matches_the_direct_algorithm(catalog, providers, lam, eta):
    x, emb, _, ctx = case(catalog, n_users=60, seed=3)
    s = scores_of(x, emb).float()
    got, nu = pmmf_rerank(s, ctx, K, lam=lam, eta=eta, providers=providers)
    want = reference_pmmf(s, catalog, K, lam, eta, providers)
    assert np.array_equal(got.numpy(), want)
    assert (nu >= 0).all() and nu.sum() <= lam + 1e-9
    assert not np.array_equal(got.numpy(), topk(s).numpy())  # it does re-rank
    assert all(len(set(r)) == K and 0 not in r for r in got.tolist())


def test_pmmf_without_budget_or_step_is_the_base_topk(catalog):
    x, emb, _, ctx = case(catalog, seed=4)
    s = scores_of(x, emb).float()
    for lam, eta in [(0.0, 0.1), (10.0, 0.0)]:
        assert torch.equal(pmmf_rerank(s, ctx, K, lam=lam, eta=eta)[0], topk(s))


def test_pmmf_state_carries_across_batches(catalog):
    x, emb, _, ctx = case(catalog, n_users=50, seed=5)
    evaluator = Evaluator(targets=np.ones(len(x), dtype=np.int64), groups=catalog, k=K)
    split = ScoredSplit(x.float(), emb.float(), evaluator, ctx)
    params = {"lam": 5.0, "eta": 0.05}
    whole = rerank_split(BASELINES["pmmf"], params, split, batch_size=1000)
    for bs in (1, 7, 16):
        assert np.array_equal(rerank_split(BASELINES["pmmf"], params, split, batch_size=bs), whole)
    s = scores_of(x.float(), emb.float())
    first, nu = pmmf_rerank(s[:20], ctx.rows(slice(0, 20)), K, **params)
    rest, _ = pmmf_rerank(s[20:], ctx.rows(slice(20, None)), K, state=nu, **params)
    assert np.array_equal(torch.cat([first, rest]).numpy(), whole)
    fresh, _ = pmmf_rerank(s[20:], ctx.rows(slice(20, None)), K, **params)
    assert not np.array_equal(fresh.numpy(), whole[20:])  # the state matters


def test_pmmf_refuses_bad_parameters(catalog):
    x, emb, _, ctx = case(catalog)
    with pytest.raises(PopSteerError):
        pmmf_rerank(scores_of(x, emb), ctx, K, lam=-1.0, eta=0.1)
    with pytest.raises(PopSteerError):
        pmmf_rerank(scores_of(x, emb), ctx, K, lam=1.0, eta=0.1, providers="artists")
