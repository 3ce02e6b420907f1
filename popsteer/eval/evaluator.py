"""Full-ranking evaluation streamed over user batches (and optionally item chunks).

Scores are ``reps @ item_emb.T`` with the padding item masked, exactly as RecBole's
sequential full-sort evaluation (history not masked). Any representation can be scored:
SASRec's own, the SAE reconstruction, or a steered one.
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np
import torch

from popsteer.eval.metrics import topk_metrics
from popsteer.eval.popularity import PopularityGroups
from popsteer.kernels.native import row_topk

if TYPE_CHECKING:  # not at run time: scoring processes (evaluator actors) need no pandas
    from popsteer.data import SequenceData


def rank_topk(reps: torch.Tensor, item_emb: torch.Tensor, k: int, batch_size: int = 256,
              item_chunk: int | None = None) -> torch.Tensor:
    """Top-k item ids per user, padding item 0 excluded.

    Args:
        reps: (U, d) user representations. item_emb: (n_items, d), row 0 = padding.
        item_chunk: score items in chunks of this many and keep a running top-k per user, so
            memory is O(batch x (chunk + k)) instead of O(batch x n_items), per calling thread
            (``evaluate_grid`` runs one per worker).
    Returns:
        (U, k) int64 item ids, best first. Dense: exactly ``torch.topk`` over each user's scores
        (what RecBole's evaluator ranks), through the native kernel. Chunked: the same items,
        except where exactly equal scores straddle chunks (then either may be kept).
    """
    out = []
    n_items = item_emb.shape[0]
    dense = item_chunk is None or item_chunk >= n_items
    if dense:  # one (d, n_items) copy and one score buffer, reused by every batch
        emb_t = item_emb.T.contiguous()  # (d, n_items)
        buf = torch.empty((min(batch_size, reps.shape[0]), n_items), dtype=torch.result_type(reps, item_emb),
                          device=reps.device)
    for start in range(0, reps.shape[0], batch_size):
        x = reps[start : start + batch_size]  # (B, d)
        if dense:
            scores = torch.mm(x, emb_t, out=buf[: len(x)])  # (B, n_items)
            scores[:, 0] = -torch.inf
            out.append(row_topk(scores, k)[1])
            continue
        best_v = torch.full((x.shape[0], k), -torch.inf, dtype=x.dtype, device=x.device)
        best_i = torch.zeros((x.shape[0], k), dtype=torch.long, device=x.device)
        for c0 in range(0, n_items, item_chunk):
            scores = x @ item_emb[c0 : c0 + item_chunk].T  # (B, C)
            if c0 == 0:
                scores[:, 0] = -torch.inf
            v, i = row_topk(scores, min(k, scores.shape[1]))
            cat_v, cat_i = torch.cat([best_v, v], 1), torch.cat([best_i, i + c0], 1)
            best_v, top = row_topk(cat_v, k)
            best_i = cat_i.gather(1, top)
        out.append(best_i)
    return torch.cat(out)


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

    @classmethod
    def for_split(cls, data: SequenceData, split: str, **kwargs) -> "Evaluator":
        _, _, targets = data.split(split)
        return cls(targets=targets, groups=PopularityGroups.from_counts(data.train_target_counts()), **kwargs)

    def topk(self, reps: torch.Tensor, item_emb: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return rank_topk(reps, item_emb, self.k, self.batch_size, self.item_chunk).cpu().numpy()

    def metrics_of_topk(self, topk: np.ndarray) -> dict[str, float]:
        g = self.groups
        return topk_metrics(topk, self.targets, g.counts, g.head, g.mid, g.tail, self.gini_n)

    def __call__(self, reps: torch.Tensor, item_emb: torch.Tensor) -> dict[str, float]:
        return self.metrics_of_topk(self.topk(reps, item_emb))
