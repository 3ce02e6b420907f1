"""Fused exact scoring: ``x @ E.T (+ bias)`` and its top-k, item tile by item tile.

The unfused path writes a block's whole (B, n_items) scores (1 GB for 256 users x 1M items),
then reads them twice to select: at 1M items that ran at ~1.9x the bare product. Here each
(B, T) tile of scores is written by ``torch.mm`` into one reused buffer small enough to stay in
cache, and ``popsteer_tile_topk_f32`` (``row_topk.c``) folds it into running per-row lists of the
best k + 1: bias added, padding item 0 and excluded items set to -inf (as the unfused path, in
the same order), then each score is mostly one compare against the row's running (k+1)-th value.

Exactness. For blocks of 8 or more users (``rank_topk`` pads to ``MIN_ROWS``) and tiles of 512 or
more items, MKL's sgemm gave every score the same bits as the full product's (d = 8 to 256 here;
narrower tiles, 16 items, or single rows did not, see ``tests/test_fused_scoring.py``). So no tile is
narrower than ``MIN_TILE``: the last one overlaps its predecessor, and only its new columns are
selected. The tiles then hold exactly the unfused scores. As in
``row_topk``, where a row's best k + 1 are distinct, finite and not NaN, its top k is unique
and is the kernel's; the other rows (an exact tie, fewer than k + 1 finite scores, a NaN) get
their full scores again, from the same block product, and ``torch.topk`` ranks them, so the
result is exactly ``torch.topk`` over the full scores, its order among equal scores included.

Hand-written because no library fuses a GEMM with a per-row running top-k on CPU: FAISS's
exact ``IndexFlatIP`` search does (with blocked ``sgemm`` and heaps), but its order among equal
scores is not ``torch.topk``'s, it has no per-row exclusion lists, and its scores are summed in
another order, so its lists would differ from the grid's and RecBole's at near ties.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from popsteer.kernels.native import _load

TILE_FLOATS = 1 << 19
"""Scores per tile (2 MB fp32, in this machine's L3 beside the other worker's): 2,048 items for a 256-user
block; a small block (a served request) gets wider tiles, up to ``MAX_TILE``, so that the per-tile
overhead (a torch call, a ctypes call: ~10 us) stays small beside its product."""
MIN_TILE, MAX_TILE = 512, 65536


def tile_width(rows: int) -> int:
    """Items per tile for a block of ``rows`` users."""
    return max(MIN_TILE, min(MAX_TILE, TILE_FLOATS // max(rows, 1)))


def sorted_csr(exclude: tuple[np.ndarray, np.ndarray] | None, rows: int) -> tuple[Tensor, Tensor] | None:
    """A CSR over ``rows`` rows (rows past its own get nothing), items ascending within each row, as
    contiguous int64 tensors (the kernel's layout); None stays None."""
    if exclude is None:
        return None
    indptr, items = np.asarray(exclude[0], dtype=np.int64), np.asarray(exclude[1], dtype=np.int64)
    ptr = np.full(rows + 1, indptr[-1] - indptr[0], dtype=np.int64)
    ptr[: len(indptr)] = indptr - indptr[0]
    items = items[indptr[0] : indptr[-1]]
    row_of = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))  # (nnz,)
    order = np.lexsort((items, row_of))
    return torch.from_numpy(ptr), torch.from_numpy(np.ascontiguousarray(items[order]))


class FusedScorer:
    """Top-k of ``x @ item_emb.T (+ bias)`` over blocks of users, tile by tile.

    Args:
        item_emb: (n_items, d) fp32 CPU, row 0 the padding item (never ranked).
        bias: (n_items,) fp32, added to every score, or None.
        tile: items per tile (default: ``tile_width`` of each block's rows; at least ``MIN_TILE``).
    Use ``takes`` first: fp32 CPU inputs, the kernel built, 1 <= k < n_items.
    """

    def __init__(self, item_emb: Tensor, bias: Tensor | None = None, tile: int | None = None):
        self.lib = _load()
        self.emb = item_emb.detach().contiguous()
        self.bias = None if bias is None else bias.detach().to(torch.float32).contiguous()
        self.tile = None if tile is None else max(MIN_TILE, tile)
        self._tiles: dict[int, list[tuple[int, int, Tensor]]] = {}
        self.buf: Tensor | None = None

    def tiles(self, rows: int) -> list[tuple[int, int, int, Tensor]]:
        """Per tile, for a block of ``rows`` users: (c0, c1, new, (d, c1 - c0) view of the item table). The
        product covers items c0..c1, all tiles equally wide (the last overlaps its predecessor); items
        new..c1 are the tile's own."""
        w, n = self.tile or tile_width(rows), self.emb.shape[0]
        if w not in self._tiles:
            spans = [(max(0, min(c0, n - w)), min(c0 + w, n), c0) for c0 in range(0, n, w)]
            self._tiles[w] = [(a, b, new, self.emb[a:b].T) for a, b, new in spans]
        return self._tiles[w]

    @staticmethod
    def takes(x: Tensor, item_emb: Tensor, k: int, bias: Tensor | None = None) -> bool:
        fp32_cpu = lambda t: t is None or (t.dtype == torch.float32 and t.device.type == "cpu")  # (ids need no grad)
        return (_load() is not None and fp32_cpu(x) and fp32_cpu(item_emb) and fp32_cpu(bias) and x.dim() == 2
                and 1 <= k < item_emb.shape[0])

    def _product(self, x: Tensor, c0: int, c1: int, t: Tensor) -> Tensor:
        """(B, c1 - c0) scores of tile c0..c1 in the reused buffer (the same bits as the full product's columns)."""
        need = x.shape[0] * (c1 - c0)
        if self.buf is None or self.buf.numel() < need:
            self.buf = torch.empty(x.shape[0] * (self.tile or tile_width(x.shape[0])), dtype=torch.float32)
        return torch.mm(x, t, out=self.buf[:need].view(x.shape[0], c1 - c0))

    def topk(self, x: Tensor, k: int, exclude: tuple[np.ndarray, np.ndarray] | None = None,
             live: int | None = None) -> tuple[Tensor, Tensor]:
        """Exactly ``torch.topk(scores, k)`` of one block, scores = ``full_scores(x, item_emb, bias, exclude)``.

        Args:
            x: (B, d) fp32. exclude: CSR over (at most) the B rows of x: items never ranked.
            live: only the first ``live`` rows are wanted (the rest pad the block to ``MIN_ROWS``); the
                others' lists are left as the kernel made them, never ranked again (a zero row ties
                everywhere, and ranking its 1M scores again cost 7x a served request's product).
        Returns:
            values (B, k) fp32, item ids (B, k) int64, best first (rows past ``live``: unspecified).
        """
        x = x.detach().contiguous()
        B, m = x.shape[0], k + 1
        best_v = torch.empty((B, m), dtype=torch.float32)
        best_i = torch.empty((B, m), dtype=torch.int64)
        count = torch.zeros(B, dtype=torch.int64)
        nan = torch.zeros(B, dtype=torch.uint8)
        ex = sorted_csr(exclude, B)
        ex_args = (None, None, None) if ex is None else (ex[0].data_ptr(), ex[1].data_ptr(), ex[0][:-1].clone())
        cur = ex_args[2]
        bias_ptr = None if self.bias is None else self.bias.data_ptr()
        for c0, c1, new, t in self.tiles(B):
            s = self._product(x, c0, c1, t)  # (B, T)
            self.lib.popsteer_tile_topk_f32(
                s.data_ptr() + 4 * (new - c0), B, c1 - new, c1 - c0, new, None if bias_ptr is None else bias_ptr + 4 * new,
                ex_args[0], ex_args[1], None if cur is None else cur.data_ptr(),
                m, best_v.data_ptr(), best_i.data_ptr(), count.data_ptr(), nan.data_ptr())
        redo = nan.bool() | (count < m) | (best_v[:, :-1] == best_v[:, 1:]).any(1)  # (B,) not unique: torch ranks it
        if live is not None:
            redo[live:] = False
        values, indices = best_v[:, :k].contiguous(), best_i[:, :k].contiguous()
        if redo.any():
            rows = redo.nonzero().flatten()
            values[rows], indices[rows] = torch.topk(self._full_rows(x, rows, exclude), k, dim=-1)
        return values, indices

    def _full_rows(self, x: Tensor, rows: Tensor, exclude: tuple[np.ndarray, np.ndarray] | None) -> Tensor:
        """(R, n_items) the full scores of the given rows of the block, from the block's own tile products
        (fewer rows could take another BLAS kernel that rounds differently), bias added, masked."""
        full = torch.empty((len(rows), self.emb.shape[0]), dtype=torch.float32)
        for c0, c1, _, t in self.tiles(x.shape[0]):
            full[:, c0:c1] = self._product(x, c0, c1, t)[rows]
        if self.bias is not None:
            full += self.bias
        full[:, 0] = -torch.inf
        if exclude is not None:
            indptr, items = exclude
            for j, r in enumerate(rows.tolist()):
                if r < len(indptr) - 1:
                    cols = np.asarray(items[indptr[r] : indptr[r + 1]], dtype=np.int64)
                    cols = cols[(cols >= 0) & (cols < full.shape[1])]  # as the kernel: others name no item
                    full[j, torch.from_numpy(cols)] = -torch.inf
        return full
