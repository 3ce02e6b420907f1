"""Fused exact scoring (popsteer/kernels/native/fused.py): tile by tile, exactly torch.topk over the full scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from popsteer.eval.evaluator import full_scores, rank_topk
from popsteer.kernels import native
from popsteer.kernels.native.fused import FusedScorer, sorted_csr, tile_width

pytestmark = pytest.mark.skipif(not native.available(), reason="no C compiler: rank_topk takes the torch path")


def _csr(rng: np.random.Generator, rows: int, n_items: int, most: int) -> tuple[np.ndarray, np.ndarray]:
    lens = rng.integers(0, most + 1, rows)
    return np.concatenate([[0], np.cumsum(lens)]), rng.integers(0, n_items, lens.sum())  # unsorted, repeats, item 0


def _unfused(x, emb, k, batch_size=256, bias=None, exclude=None):
    """The reference: the dense path (one full (B, n_items) product per batch, then torch.topk over it)."""
    with native.disabled():
        return rank_topk(x, emb, k, batch_size=batch_size, bias=bias, exclude=exclude)


@pytest.mark.parametrize("d", [16, 64, 100])
def test_a_tiles_product_has_the_full_products_bits(d):
    """What exactness rests on: a tile's torch.mm (8 or more rows, 512 or more items, any offset) gives its
    columns of the full product, bit for bit."""
    g = torch.Generator().manual_seed(d)
    emb, x = torch.randn(12_345, d, generator=g), torch.randn(256, d, generator=g)
    for rows in (8, 37, 256):
        full = x[:rows] @ emb.T
        scorer = FusedScorer(emb)
        for w in (512, tile_width(rows), 3000):
            scorer.tile = w
            for c0, c1, _, t in scorer.tiles(rows):
                assert torch.equal(torch.mm(x[:rows], t), full[:, c0:c1]), (rows, w, c0)


@pytest.mark.parametrize("n_items,k,tile", [(2, 1, None), (12, 10, None), (33, 10, None), (600, 10, 512),
                                            (1100, 10, 512), (5000, 600, 512), (40_000, 10, None), (40_000, 10, 513)])
def test_fused_equals_torch_topk_with_bias_and_exclusion(n_items, k, tile):
    """Random scores, an item bias, unsorted exclusion lists (with repeats and the padding item), k larger than
    a tile, catalogs barely larger than k: the items of torch.topk over x @ E.T + b, padding and excluded at -inf."""
    g = torch.Generator().manual_seed(n_items + k)
    rng = np.random.default_rng(k)
    x, emb, b = torch.randn(70, 16, generator=g), torch.randn(n_items, 16, generator=g), torch.randn(n_items, generator=g)
    csr = _csr(rng, 70, n_items, min(5, n_items - k - 1))
    scorer = FusedScorer(emb, b, tile=tile)
    for lo, hi in ((0, 8), (8, 70)):
        ex = (csr[0][lo : hi + 1], csr[1])
        values, ids = scorer.topk(x[lo:hi], k, ex)
        want = torch.topk(full_scores(x[lo:hi], emb, b, csr, lo), k)
        assert torch.equal(ids, want.indices) and torch.equal(values, want.values)
    assert torch.equal(rank_topk(x, emb, k, batch_size=16, bias=b, exclude=csr),
                       _unfused(x, emb, k, batch_size=16, bias=b, exclude=csr))


def test_ties_nan_and_rows_with_too_few_items_follow_torch():
    """Duplicated items tie on every user (small integers: every score exact); a row whose exclusions leave
    fewer than k finite scores; a NaN user: all as torch.topk ranks them."""
    g = torch.Generator().manual_seed(0)
    emb = torch.randint(-3, 4, (3000, 8), generator=g).float()
    emb[1500:] = emb[1:1501].clone()
    x = torch.randint(-3, 4, (40, 8), generator=g).float()
    x[7] = torch.nan
    lens = np.zeros(40, dtype=np.int64)
    lens[3] = 2995  # row 3 keeps 4 items only
    csr = (np.concatenate([[0], np.cumsum(lens)]), np.arange(1, 2996))
    want = torch.topk(full_scores(x, emb, None, csr), 10).indices
    got = rank_topk(x, emb, 10, batch_size=16, exclude=csr)
    assert torch.equal(got, want)
    for tile in (512, 700, 4096):
        v, i = FusedScorer(emb, tile=tile).topk(x[:16], 10, (csr[0][:17], csr[1]))
        assert torch.equal(i, want[:16])


def test_rank_topk_fused_equals_unfused_on_near_ties_and_any_batch():
    """Near-duplicate items (scores apart by a few ulps), 300 users in 256-row batches, alone, or in a small last
    batch: the fused lists are the unfused ones (the product's bits do not depend on the tiling)."""
    g = torch.Generator().manual_seed(1)
    base = torch.randn(50, 64, generator=g)
    emb = torch.cat([torch.zeros(1, 64), base.repeat(200, 1) + 1e-6 * torch.randn(10_000, 64, generator=g)])
    x = torch.randn(300, 64, generator=g) * 4
    b = torch.randn(len(emb), generator=g) * 1e-3
    want = _unfused(x, emb, 10, bias=b)
    assert torch.equal(rank_topk(x, emb, 10, bias=b), want)
    assert torch.equal(torch.cat([rank_topk(x[i : i + 1], emb, 10, bias=b) for i in range(0, 300, 37)]), want[::37])
    assert torch.equal(rank_topk(x[256:], emb, 10, batch_size=5, bias=b), want[256:])


def test_sorted_csr_pads_rows_and_sorts_within_rows():
    ptr, items = sorted_csr((np.array([4, 6, 6, 9]), np.array([0, 0, 0, 0, 5, 2, 9, 1, 3])), 5)
    assert ptr.tolist() == [0, 2, 2, 5, 5, 5] and items.tolist() == [2, 5, 1, 3, 9]
    assert sorted_csr(None, 3) is None


def test_inputs_the_kernel_does_not_take_go_the_torch_way():
    emb = torch.randn(50, 4)
    assert not FusedScorer.takes(torch.randn(3, 4, dtype=torch.float64), emb, 5)
    assert not FusedScorer.takes(torch.randn(3, 4), emb, 50)  # k must be < n_items
    x = torch.randn(3, 4, dtype=torch.float64)
    assert torch.equal(rank_topk(x, emb.double(), 5), torch.topk(full_scores(x, emb.double()), 5).indices)
