"""Cohen's d, Eq. 3 / Eq. 4 and the grid pick, checked against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from popsteer.steering.analysis import RunningMoments, cohens_d, profile_lengths, synthetic_profiles
from popsteer.errors import PopSteerError
from popsteer.eval.tradeoff import pick_point
from popsteer.steering.grid import grid_points
from popsteer.steering.steer import NeuronScores, steering_delta, steering_weights


def test_cohens_d_matches_scipy_and_numpy():
    rng = np.random.default_rng(1)
    a = rng.normal(1.0, 2.0, size=(3000, 6)) + np.arange(6)
    b = rng.normal(0.0, 1.0, size=(2000, 6))
    ma, mb = RunningMoments(6), RunningMoments(6)
    for chunk in np.array_split(a, 7):
        ma.update(torch.as_tensor(chunk, dtype=torch.float32))
    for chunk in np.array_split(b, 3):
        mb.update(torch.as_tensor(chunk, dtype=torch.float32))
    d = cohens_d(ma.result(), mb.result())
    sa, sb = np.std(a, axis=0, ddof=0), np.std(b, axis=0, ddof=0)  # population SD
    expected = (a.mean(0) - b.mean(0)) / np.sqrt((sa**2 + sb**2) / 2)
    np.testing.assert_allclose(d, expected, rtol=1e-5)
    # scipy: the same from its describe() moments (variance ddof=0 rescaled)
    da, db = stats.describe(a, ddof=0), stats.describe(b, ddof=0)
    np.testing.assert_allclose(d, (da.mean - db.mean) / np.sqrt((da.variance + db.variance) / 2), rtol=1e-5)


def test_synthetic_profiles_draw_only_from_the_set(ml100k_small):
    lengths = profile_lengths(ml100k_small)
    assert lengths.max() == ml100k_small.max_len and lengths.min() >= 1
    assert len(lengths) == ml100k_small.n_users
    items = np.array([5, 7, 11])
    prof = synthetic_profiles(lengths[:500], items, ml100k_small.max_len, seed=3)
    assert set(np.unique(prof[prof > 0])) <= set(items.tolist())
    assert ((prof > 0).sum(1) == lengths[:500]).all()
    assert np.array_equal(prof, synthetic_profiles(lengths[:500], items, ml100k_small.max_len, seed=3))


def test_steering_weights_eq3():
    d = np.array([0.5, -3.0, 2.0, -0.1, 1.0])
    w = steering_weights(d, 3, 2.0)
    mag = np.abs(d)
    top = [1, 2, 4]
    expected = np.zeros(5)
    expected[top] = 2.0 * (mag[top] - mag.min()) / (mag[top].max() - mag.min())
    np.testing.assert_allclose(w, expected)
    assert w[1] == pytest.approx(2.0)  # the strongest neuron gets alpha
    assert (steering_weights(d, 5, 0.0) == 0).all()
    with pytest.raises(PopSteerError):
        steering_weights(d, 6, 1.0)
    with pytest.raises(PopSteerError):
        steering_weights(d, 2, -0.5)


def test_steering_delta_eq4_and_quirk():
    s = NeuronScores(d=np.array([2.0, -2.0, 0.0]), sigma_pop=np.array([10.0, 20.0, 30.0]),
                     sigma_unpop=np.array([1.0, 2.0, 3.0]))
    w = steering_weights(s.d, 3, 1.0)
    delta = steering_delta(s, 3, 1.0).numpy()
    np.testing.assert_allclose(delta, [-w[0] * 10.0, +w[1] * 2.0, 0.0])  # own group's sigma
    quirk = steering_delta(s, 3, 1.0, swap_sigma=True).numpy()
    np.testing.assert_allclose(quirk, [-w[0] * 1.0, +w[1] * 20.0, 0.0])


def test_grid_and_pick():
    pts = grid_points(4096)
    assert len(pts) == 56 and pts[0].num_neurons == 512 and pts[-1].alpha == 4.0
    assert len(grid_points(256)) == 7
    base = {"gini@10": 0.8, "ndcg@10": 0.1}
    rows = [
        {"num_neurons": 1, "alpha": 1.0, "gini@10": 0.70, "ndcg@10": 0.099},  # 12.5% - 1%
        {"num_neurons": 2, "alpha": 1.0, "gini@10": 0.60, "ndcg@10": 0.090},  # 25% - 10%: over the 5% cap
        {"num_neurons": 3, "alpha": 1.0, "gini@10": 0.66, "ndcg@10": 0.096},  # 17.5% - 4% = 13.5%: best
    ]
    assert pick_point(rows, base)["num_neurons"] == 3
    assert pick_point(rows[1:2], base) is None


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("user_chunk", [1, 37, 256, 10_000])
def test_batched_grid_equals_per_point(user_chunk, workers):
    """Chunked multi-point evaluation (in 1 or 3 threads) == one full reconstruction + scoring
    per point, exactly."""
    from popsteer.eval.evaluator import Evaluator
    from popsteer.steering.grid import evaluate_grid, evaluate_point
    from popsteer.eval.popularity import PopularityGroups
    from popsteer.sae.model import SAEConfig, TopKSAE

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    rng = np.random.default_rng(0)
    n_users, d, n_items = 301, 16, 97
    sae = TopKSAE(d, SAEConfig(k=4, scale=8))  # 128 latents
    h = sae.preact(torch.randn(n_users, d)).detach()  # (U, n)
    h[:5, :10] = 0.25  # rows with ties inside and at the top-k boundary
    item_emb = torch.randn(n_items, d)
    counts = rng.zipf(1.5, n_items).astype(np.int64)
    counts[0] = 0
    ev = Evaluator(targets=rng.integers(1, n_items, n_users), groups=PopularityGroups.from_counts(counts))
    n = 128
    scores = NeuronScores(d=rng.normal(size=n), sigma_pop=rng.uniform(0.1, 1, n), sigma_unpop=rng.uniform(0.1, 1, n))
    points = grid_points(n, ns=(16, 64, 128), alphas=(0.0, 1.0, 3.5))
    rows = evaluate_grid(sae, h, item_emb, ev, scores, points, user_chunk=user_chunk, workers=workers)
    assert torch.get_num_threads() == threads  # the threaded path gives torch its threads back
    want = [evaluate_point(sae, h, item_emb, ev, scores, p) for p in points]
    np.testing.assert_equal(rows, want)  # exact; NaN (a group with no target) equals NaN
    assert len({r["gini@10"] for r in rows}) > 1  # the points really differ


@pytest.mark.parametrize("k", [1, 4, 32])
def test_candidate_topk_equals_eager(k):
    """TopK over a group's candidate columns == the eager top-k of every steered row, exactly."""
    from popsteer.steering.candidates import CandidateTopK
    from popsteer.sae.topk import _eager_topk_relu_sparse

    g = torch.Generator().manual_seed(k)
    n = 256
    h = torch.randn(50, n, generator=g)  # (50, n)
    h[:6] = (h[:6] * 2).round() / 2  # ties inside and at the boundary
    h[6] = -1.0  # nothing positive: zeros, lowest columns first
    h[7, : k // 2] = 5.0  # fewer positives than k
    h[7, k // 2 :] = -5.0
    direction = torch.randn(n, generator=g) * (torch.rand(n, generator=g) < 0.4)  # some columns unsteered
    deltas = torch.stack([a * direction for a in (0.0, 1.0, 2.5, 4.0)])  # (4, n), one N group
    latents = CandidateTopK(h, deltas, k, buckets=3)
    assert latents.counts.float().median() < n / 2  # most rows rank few of their columns
    values, indices = latents(deltas)  # (4, 50, k)
    for delta, v, i in zip(deltas, values, indices):
        ve, ie = _eager_topk_relu_sparse(h + delta, k)
        assert torch.equal(i, ie) and torch.equal(v, ve)
