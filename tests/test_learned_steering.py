"""Learned steering: the fitted delta's objective, its gradient, determinism, and delta = 0 as the base model."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from popsteer.eval.evaluator import Evaluator, rank_topk
from popsteer.eval.popularity import PopularityGroups
from popsteer.sae.model import SAEConfig, TopKSAE
from popsteer.steering.grid import grid_topk
from popsteer.steering.learned import (FitSettings, batch_order, concentration, fit_delta, most_moved, steered_x,
                                       topk_concentration)
from popsteer.steering.steer import unsteered_decode


def case(seed: int = 0, n: int = 600, d: int = 16, n_items: int = 120):
    """An SAE, rows x with a popularity-skewed next item, an item table whose popular items score high."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    sae = TopKSAE(d, SAEConfig(k=4, scale=8))  # 128 latents
    x = torch.randn(n, d)
    emb = torch.randn(n_items, d) * 0.5
    emb[1:11] += x.mean(0) + 1.0  # ten head items every user scores high
    targets = torch.from_numpy(rng.integers(1, n_items, n))
    return sae, x, emb, targets


def gini(lists: np.ndarray, n_items: int) -> float:
    counts = np.sort(np.bincount(lists.ravel(), minlength=n_items)[1:])
    i = np.arange(1, len(counts) + 1)
    return float(2 * (i * counts).sum() / (len(counts) * counts.sum()) - (len(counts) + 1) / len(counts))


def test_zero_delta_is_the_recommender_bit_for_bit():
    sae, x, emb, _ = case()
    with torch.no_grad():
        h = sae.preact(x)
        out = steered_x(sae, x, h, unsteered_decode(sae, h), torch.zeros(sae.n))
    assert torch.equal(out, x)
    lists = grid_topk(sae, h, emb, 10, torch.zeros(2, sae.n), user_chunk=64, x=x)  # the grid's preserve path
    base = rank_topk(x, emb, 10).numpy()
    assert np.array_equal(lists[0], base) and np.array_equal(lists[1], base)


def test_the_gradient_is_the_exact_one_where_the_selection_holds():
    """Straight-through TopK: d/d delta of a loss through the K kept values equals the finite difference
    (the selection does not change under a small step)."""
    sae, x, emb, targets = case()
    x, targets = x[:64], targets[:64]
    with torch.no_grad():
        h = sae.preact(x)
        base = unsteered_decode(sae, h)
    delta = (torch.randn(sae.n) * 0.05).requires_grad_(True)

    def loss(dl):
        return F.cross_entropy(steered_x(sae, x, h, base, dl) @ emb.T, targets)

    loss(delta).backward()
    grad = delta.grad.clone()
    assert grad.abs().sum() > 0
    for j in torch.argsort(-grad.abs())[:5].tolist():
        eps = 1e-3
        step = torch.zeros(sae.n)
        step[j] = eps
        with torch.no_grad():
            fd = (loss(delta.detach() + step) - loss(delta.detach() - step)) / (2 * eps)
        assert float(fd) == pytest.approx(float(grad[j]), rel=2e-2, abs=1e-5)


def test_concentration_is_one_for_uniform_exposure_and_n_for_one_item():
    n_items = 50
    uniform = torch.zeros(8, n_items)
    uniform[:, 0] = -torch.inf  # padding: not an item
    assert float(concentration(uniform, 0.25)) == pytest.approx(1.0)
    peaked = torch.full((8, n_items), -1e4)
    peaked[:, 0], peaked[:, 3] = -torch.inf, 10.0
    assert float(concentration(peaked, 0.25)) == pytest.approx(n_items - 1, rel=1e-4)


def test_topk_concentration_counts_the_top_k_exposure():
    """Every row with the same top 10 of 101 items: the shares sit on 10 items, concentration ~ 100/10; rows whose
    top 10 tile the catalogue: ~ 1. A sharp tau makes the relaxed membership the hard top-10 indicator."""
    n_items, k = 101, 10
    same = torch.zeros(10, n_items)
    same[:, 0] = -torch.inf
    same[:, 1:11] = torch.arange(20.0, 10.0, -1.0)  # items 1..10 on top of every row, distinct scores
    assert float(topk_concentration(same, 1e-3, k)) == pytest.approx((n_items - 1) / k, rel=1e-3)
    tiled = torch.zeros(10, n_items)
    tiled[:, 0] = -torch.inf
    for b in range(10):
        tiled[b, 1 + 10 * b : 11 + 10 * b] = torch.arange(20.0, 10.0, -1.0)
    assert float(topk_concentration(tiled, 1e-3, k)) == pytest.approx(1.0, rel=1e-3)
    grad_scores = same.clone().requires_grad_(True)
    topk_concentration(grad_scores, 0.1, k).backward()
    assert grad_scores.grad[:, 1:11].sum() > 0 > grad_scores.grad[:, 11:].sum()  # lowering the head spreads exposure


def test_batch_order_visits_every_row_once_per_pass():
    order = batch_order(100, steps=7, batch_size=30, seed=1)  # 210 rows: two full passes and a bit
    flat = order.ravel()
    assert order.shape == (7, 30)
    assert sorted(flat[:100]) == list(range(100)) and sorted(flat[100:200]) == list(range(100))
    assert np.array_equal(order, batch_order(100, 7, 30, seed=1)) and not np.array_equal(order, batch_order(100, 7, 30, 2))


def test_fit_is_deterministic_and_independent_of_the_thread_count():
    sae, x, emb, targets = case()
    settings = FitSettings(steps=20, batch_size=128)
    first = fit_delta(sae, x, targets, emb, 1.0, settings).delta
    torch.set_num_threads(1)
    try:
        second = fit_delta(sae, x, targets, emb, 1.0, settings).delta
    finally:
        torch.set_num_threads(2)
    box = {}
    thread = threading.Thread(target=lambda: box.update(d=fit_delta(sae, x, targets, emb, 1.0, settings).delta))
    thread.start()
    thread.join()
    assert torch.equal(first, second) and torch.equal(first, box["d"])


def test_the_exposure_term_spreads_the_lists():
    """At lam > 0 the fitted delta lowers the Gini of the steered top-10 below the fit at lam = 0, and more
    with a larger lam; the L1 term keeps fewer neurons moved."""
    sae, x, emb, targets = case()
    settings = FitSettings(steps=60, batch_size=200)
    with torch.no_grad():
        h = sae.preact(x)
    ginis = []
    for lam in (0.0, 1.0, 10.0):
        delta = fit_delta(sae, x, targets, emb, lam, settings).delta
        lists = grid_topk(sae, h, emb, 10, delta[None], x=x)[0]
        ginis.append(gini(lists, len(emb)))
    assert ginis[2] < ginis[1] < ginis[0]
    dense = fit_delta(sae, x, targets, emb, 1.0, settings).delta
    sparse = fit_delta(sae, x, targets, emb, 1.0, FitSettings(steps=60, batch_size=200, l1=0.05)).delta
    assert sparse.abs().sum() < dense.abs().sum()


def test_most_moved_orders_by_magnitude_and_skips_zeros():
    assert most_moved(np.array([0.1, -0.5, 0.0, 0.3]), 10) == [(1, -0.5), (3, 0.3), (0, 0.1)]
