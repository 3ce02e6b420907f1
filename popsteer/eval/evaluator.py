"""Full-ranking evaluation streamed over user batches (and optionally item chunks).

Scores are ``reps @ item_emb.T (+ item_bias)`` with the padding item masked, exactly as RecBole's
full-sort evaluation: a sequential model's history is not masked; a general model's (LightGCN)
is, through ``exclude`` (each user's earlier items, ``SequenceData.history_csr``). Any
representation can be scored: the recommender's own, the SAE reconstruction, or a steered one.
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np
import torch

from popsteer.eval.metrics import topk_metrics
from popsteer.eval.popularity import PopularityGroups
from popsteer.kernels.native import row_topk
from popsteer.kernels.native.fused import FusedScorer

if TYPE_CHECKING:  # not at run time: scoring processes (evaluator actors) need no pandas
    from popsteer.data import SequenceData


MIN_ROWS = 8
"""Rows per score product at least. With fewer (1-3 here), the BLAS takes another kernel whose sums round
differently, so a user's scores, and at an exact-to-the-last-bit near tie its list, would depend on how
many users share its batch; padded to this many rows, each score is the same bits in any batch or shard."""


def rank_topk(reps: torch.Tensor, item_emb: torch.Tensor, k: int, batch_size: int = 256,
              item_chunk: int | None = None, bias: torch.Tensor | None = None,
              exclude: tuple[np.ndarray, np.ndarray] | None = None) -> torch.Tensor:
    """Top-k item ids per user, padding item 0 excluded.

    Args:
        reps: (U, d) user representations. item_emb: (n_items, d), row 0 = padding.
        bias: (n_items,) the model's item bias (BERT4Rec's ``output_bias``), added to every score.
        exclude: CSR ``(indptr (U+1,), items)`` of items never ranked for each row (a general
            model's history, as RecBole masks it).
        item_chunk: score items in chunks of this many and keep a running top-k per user, so
            memory is O(batch x (chunk + k)) instead of O(batch x n_items), per calling thread
            (``evaluate_grid`` runs one per worker).
    Returns:
        (U, k) int64 item ids, best first: exactly ``torch.topk`` over each user's scores (what
        RecBole's evaluator ranks). With the native kernels (fp32 CPU, k < n_items), scoring is
        fused (``popsteer.kernels.native.fused``): items are scored and selected tile by tile, so
        memory is O(batch x tile) and ``item_chunk`` is not needed. Without them, dense is
        ``torch.topk``; chunked gives the same items, except where exactly equal scores straddle
        chunks (then either may be kept).
    """
    if FusedScorer.takes(reps, item_emb, k, bias):
        return _fused_rank(reps, item_emb, k, batch_size, bias, exclude)
    out = []
    n_items = item_emb.shape[0]
    dense = item_chunk is None or item_chunk >= n_items
    if dense:  # one (d, n_items) copy and one score buffer, reused by every batch
        emb_t = item_emb.T.contiguous()  # (d, n_items)
        buf = torch.empty((max(MIN_ROWS, min(batch_size, reps.shape[0])), n_items),
                          dtype=torch.result_type(reps, item_emb), device=reps.device)
    for start in range(0, reps.shape[0], batch_size):
        x = reps[start : start + batch_size]  # (B, d)
        n = len(x)
        if n < MIN_ROWS:  # zero rows, dropped below: the product's kernel, hence its rounding, is the same
            x = torch.cat([x, x.new_zeros((MIN_ROWS - n, x.shape[1]))])
        if dense:
            scores = torch.mm(x, emb_t, out=buf[: len(x)])  # (B, n_items)
            if bias is not None:
                scores += bias
            scores[:, 0] = -torch.inf
            if exclude is not None:
                _mask_rows(scores[:n], exclude, start, 0)
            out.append(row_topk(scores, k)[1][:n])
            continue
        best_v = torch.full((x.shape[0], k), -torch.inf, dtype=x.dtype, device=x.device)
        best_i = torch.zeros((x.shape[0], k), dtype=torch.long, device=x.device)
        for c0 in range(0, n_items, item_chunk):
            scores = x @ item_emb[c0 : c0 + item_chunk].T  # (B, C)
            if bias is not None:
                scores += bias[c0 : c0 + item_chunk]
            if c0 == 0:
                scores[:, 0] = -torch.inf
            if exclude is not None:
                _mask_rows(scores[:n], exclude, start, c0)
            v, i = row_topk(scores, min(k, scores.shape[1]))
            cat_v, cat_i = torch.cat([best_v, v], 1), torch.cat([best_i, i + c0], 1)
            best_v, top = row_topk(cat_v, k)
            best_i = cat_i.gather(1, top)
        out.append(best_i[:n])
    return torch.cat(out)


def _fused_rank(reps: torch.Tensor, item_emb: torch.Tensor, k: int, batch_size: int, bias: torch.Tensor | None,
                exclude: tuple[np.ndarray, np.ndarray] | None) -> torch.Tensor:
    """``rank_topk`` through the fused kernel: the same batches, padded to MIN_ROWS rows, as the dense path."""
    scorer = FusedScorer(item_emb, bias)
    out = []
    for start in range(0, reps.shape[0], batch_size):
        x = reps[start : start + batch_size]  # (B, d)
        n = len(x)
        if n < MIN_ROWS:
            x = torch.cat([x, x.new_zeros((MIN_ROWS - n, x.shape[1]))])
        ex = None if exclude is None else (exclude[0][start : start + n + 1], exclude[1])
        out.append(scorer.topk(x, k, ex, live=n)[1][:n])
    return torch.cat(out) if out else torch.empty((0, k), dtype=torch.long)


@dataclass(frozen=True)
class ItemTable:
    """What a model scores users against: ``x @ emb.T (+ bias)``. RecBole's rules per model type: a
    ``general`` model (LightGCN) has the user's history masked and its items' popularity counted
    over every training interaction; a sequential one has neither (popularity: training targets)."""

    emb: torch.Tensor  # (n_items, d), row 0 = padding
    bias: torch.Tensor | None = None  # (n_items,)
    general: bool = False


def full_scores(x: torch.Tensor, item_emb: torch.Tensor, bias: torch.Tensor | None = None,
                exclude: tuple[np.ndarray, np.ndarray] | None = None, row0: int = 0) -> torch.Tensor:
    """Scores (B, n_items) of rows row0.. as ``rank_topk`` ranks them: bias added, padding and excluded items -inf."""
    scores = x @ item_emb.T
    if bias is not None:
        scores += bias
    scores[:, 0] = -torch.inf
    if exclude is not None:
        _mask_rows(scores, exclude, row0, 0)
    return scores


def _mask_rows(scores: torch.Tensor, exclude: tuple[np.ndarray, np.ndarray], row0: int, col0: int) -> None:
    """scores (B, C) of rows row0.. and items col0..: -inf at each row's excluded items."""
    indptr, items = exclude
    lo, hi = indptr[row0], indptr[row0 + scores.shape[0]]
    cols = items[lo:hi] - col0
    rows = np.repeat(np.arange(scores.shape[0]), np.diff(indptr[row0 : row0 + scores.shape[0] + 1]))
    keep = (cols >= 0) & (cols < scores.shape[1])
    scores[torch.from_numpy(rows[keep]), torch.from_numpy(cols[keep]).long()] = -torch.inf


def slice_csr(csr: tuple[np.ndarray, np.ndarray] | None, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Rows lo..hi of a CSR (None stays None)."""
    if csr is None:
        return None
    indptr, items = csr
    return indptr[lo : hi + 1] - indptr[lo], items[indptr[lo] : indptr[hi]]


def repeat_csr(exclude: tuple[np.ndarray, np.ndarray], lo: int, hi: int, times: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows lo..hi of a CSR, the block repeated ``times`` times (the grid's (P, C) rows)."""
    indptr, items = exclude
    block = items[indptr[lo] : indptr[hi]]
    lens = np.diff(indptr[lo : hi + 1])
    new_ptr = np.concatenate([[0], np.cumsum(np.tile(lens, times))])
    return new_ptr, np.tile(block, times)


@dataclass
class Evaluator:
    """Scores user representations of one split against an item table."""

    targets: np.ndarray  # (U,)
    groups: PopularityGroups
    k: int = 10
    batch_size: int = 256
    """Users scored per matmul: small batches keep the (batch, n_items) scores in cache (~2x faster here)."""
    item_chunk: int | None = None
    gini_n: int | None = None
    bias: torch.Tensor | None = None
    """(n_items,) the model's item bias, or None."""
    exclude: tuple[np.ndarray, np.ndarray] | None = None
    """CSR of each user's items never ranked (a general model's history), or None."""

    @classmethod
    def for_split(cls, data: SequenceData, split: str, table=None, **kwargs) -> "Evaluator":
        """The split's evaluator; ``table`` (an ``ItemTable``) brings the model's bias and history masking."""
        _, _, targets = data.split(split)
        general = table is not None and table.general
        if table is not None:
            kwargs.setdefault("bias", table.bias)
            if general:
                kwargs.setdefault("exclude", data.history_csr(split))
        counts = data.train_item_counts() if general else data.train_target_counts()
        return cls(targets=targets, groups=PopularityGroups.from_counts(counts), **kwargs)

    def topk(self, reps: torch.Tensor, item_emb: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return rank_topk(reps, item_emb, self.k, self.batch_size, self.item_chunk, self.bias,
                             self.exclude).cpu().numpy()

    def metrics_of_topk(self, topk: np.ndarray) -> dict[str, float]:
        g = self.groups
        return topk_metrics(topk, self.targets, g.counts, g.head, g.mid, g.tail, self.gini_n)

    def __call__(self, reps: torch.Tensor, item_emb: torch.Tensor) -> dict[str, float]:
        return self.metrics_of_topk(self.topk(reps, item_emb))
