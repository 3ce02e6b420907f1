"""Hypervolume in the (NDCG@10, 1 - Gini@10) plane against an independent raster count."""

from __future__ import annotations

import numpy as np
import pytest

from popsteer.eval.tradeoff import hv_reference, hypervolume


def test_hypervolume_equals_a_raster_count():
    """The sweep's area against counting the cells of a fine grid that some point dominates."""
    rng = np.random.default_rng(3)
    base = {"ndcg@10": 0.1, "gini@10": 0.8}
    ref = hv_reference(base)
    assert ref == (0.05, pytest.approx(0.2))
    for _ in range(5):
        rows = [{"ndcg@10": n, "gini@10": g} for n, g in zip(rng.uniform(0.03, 0.11, 12), rng.uniform(0.6, 0.85, 12))]
        cells = 800
        ns = np.linspace(0.0, 0.12, cells, endpoint=False) + 0.12 / cells / 2  # cell centres
        fs = np.linspace(0.0, 0.5, cells, endpoint=False) + 0.5 / cells / 2
        N, F = np.meshgrid(ns, fs, indexing="ij")
        hit = np.zeros_like(N, dtype=bool)
        for r in rows:
            hit |= (N <= r["ndcg@10"]) & (F <= 1 - r["gini@10"])
        hit &= (N > ref[0]) & (F > ref[1])
        raster = hit.sum() * (0.12 / cells) * (0.5 / cells)
        assert hypervolume(rows, ref) == pytest.approx(raster, rel=0.02, abs=2e-5)
    assert hypervolume([base], ref) == 0.0  # the base model alone adds nothing
    assert hypervolume([], ref) == 0.0
