"""The error-preserving variant and separate popular / unpopular strengths, against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from popsteer.eval.evaluator import Evaluator, rank_topk
from popsteer.eval.popularity import PopularityGroups
from popsteer.sae.model import SAEConfig, TopKSAE
from popsteer.sae.topk import topk_relu
from popsteer.steering.grid import GridPoint, evaluate_grid, evaluate_point, grid_points, grid_topk, point_deltas
from popsteer.steering.steer import NeuronScores, steered_reconstruction, steering_delta, steering_weights


def case(seed: int = 0, n_users: int = 211, d: int = 16, n_items: int = 89):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    sae = TopKSAE(d, SAEConfig(k=4, scale=8))  # 128 latents
    x = torch.randn(n_users, d)
    h = sae.preact(x).detach()
    counts = rng.zipf(1.5, n_items).astype(np.int64)
    counts[0] = 0
    ev = Evaluator(targets=rng.integers(1, n_items, n_users), groups=PopularityGroups.from_counts(counts))
    n = sae.n
    scores = NeuronScores(d=rng.normal(size=n), sigma_pop=rng.uniform(0.1, 1, n), sigma_unpop=rng.uniform(0.1, 1, n))
    return sae, x, h, torch.randn(n_items, d), ev, scores


def test_alpha_unpop_none_or_equal_is_the_single_alpha():
    _, _, _, _, _, s = case()
    for n, a in ((16, 1.5), (128, 3.0)):
        one = steering_delta(s, n, a)
        torch.testing.assert_close(steering_delta(s, n, a, alpha_unpop=a), one, rtol=0, atol=0)


def test_alpha_unpop_weighs_each_side_by_its_own_strength():
    s = NeuronScores(d=np.array([2.0, -1.0, 0.5, -3.0]), sigma_pop=np.array([10.0, 20.0, 30.0, 40.0]),
                     sigma_unpop=np.array([1.0, 2.0, 3.0, 4.0]))
    base = steering_weights(s.d, 3, 1.0)  # neurons 3, 0, 1 (top 3 by |d|)
    delta = steering_delta(s, 3, alpha=2.0, alpha_unpop=0.5).numpy()
    np.testing.assert_allclose(delta, [-2.0 * base[0] * 10.0, 0.5 * base[1] * 2.0, 0.0, 0.5 * base[3] * 4.0],
                               rtol=1e-6)
    only_boost = steering_delta(s, 3, alpha=0.0, alpha_unpop=1.0).numpy()  # suppression off, boosting on
    assert only_boost[0] == 0 and only_boost[1] > 0 and only_boost[3] > 0


def test_two_strength_grid_points_and_rows():
    pts = grid_points(4096, ns=(512, 4096), alphas=(0.0, 1.0), alpha_unpops=(0.0, 2.0, 4.0))
    assert len(pts) == 12 and pts[1] == GridPoint(512, 0.0, 2.0)
    assert pts[1].params() == {"num_neurons": 512, "alpha": 0.0, "alpha_unpop": 2.0}
    assert GridPoint(512, 1.0).params() == {"num_neurons": 512, "alpha": 1.0}


def test_preserve_at_alpha_zero_is_the_recommender_exactly():
    """x + (decode(steer(h)) - decode(h)) with no steering: x itself, bit for bit, so the lists are the model's."""
    sae, x, h, item_emb, ev, scores = case()
    points = [GridPoint(64, 0.0), GridPoint(128, 0.0, 0.0), GridPoint(64, 2.0)]
    lists = grid_topk(sae, h, item_emb, ev.k, point_deltas(scores, points), user_chunk=50, x=x)
    own = rank_topk(x, item_emb, ev.k).numpy()
    np.testing.assert_array_equal(lists[0], own)
    np.testing.assert_array_equal(lists[1], own)
    assert (lists[2] != own).any()  # steering does move the lists
    replaced = grid_topk(sae, h, item_emb, ev.k, point_deltas(scores, points[:1]))
    assert (replaced[0] != own).any()  # the reconstruction alone already differs from x


def test_preserve_is_x_plus_the_decoded_shift():
    """The variant's representation, computed directly from dense codes."""
    sae, x, h, item_emb, ev, scores = case(1)
    delta = steering_delta(scores, 64, 2.5)
    with torch.no_grad():
        want = x + (sae.decode(topk_relu(h + delta, sae.k)) - sae.decode(topk_relu(h, sae.k)))
    got = steered_reconstruction(sae, h, delta, batch_size=50, x=x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    recon = steered_reconstruction(sae, h, delta)
    assert (got - recon).abs().max() > 1e-3  # the error really is kept


@pytest.mark.parametrize("user_chunk", [1, 37, 10_000])
def test_preserve_grid_equals_per_point(user_chunk):
    """The batched grid (shared TopK candidates) == one reconstruction per point, for both variants and two strengths."""
    sae, x, h, item_emb, ev, scores = case(2)
    points = grid_points(sae.n, ns=(16, 128), alphas=(0.0, 1.0, 3.0), alpha_unpops=(0.5, 2.0))
    for xs in (None, x):
        rows = evaluate_grid(sae, h, item_emb, ev, scores, points, user_chunk=user_chunk, workers=1, x=xs)
        np.testing.assert_equal(rows, [evaluate_point(sae, h, item_emb, ev, scores, p, x=xs) for p in points])
