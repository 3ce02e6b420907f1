"""Exact ``TopK(ReLU(h + delta), K)`` for a group of steering deltas, from a few candidate columns.

For a group of deltas (the grid points of one N), each column's steered value lies between
``relu(h + min delta)`` and ``relu(h + max delta)`` (both monotone in delta). A row's
(K+1)-th largest lower bound T is at most its (K+1)-th largest steered value at every delta
of the group, so each of those top-(K+1) columns has an upper bound >= T: the candidate
columns (upper bound >= T; ~90-220 of 4096 per row on ML-1M) are all that is ranked per
point. Rows whose top-(K+1) holds a tie are redone by ``popsteer.topk``'s eager path on the
whole row, so the result equals ``_eager_topk_relu_sparse(h + delta, K)`` exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from popsteer.topk import _eager_topk_relu_sparse


def _relu(x: Tensor) -> Tensor:
    return torch.where(x > 0, x, 0.0)  # as the eager top-k: -0.0 and NaN -> +0.0


class CandidateTopK:
    """Candidate columns of the rows of ``h`` (C, n) for every delta of ``deltas`` (P, n)."""

    def __init__(self, h: Tensor, deltas: Tensor, k: int) -> None:
        self.h, self.k = h, k
        C, n = h.shape
        lower = _relu(h + deltas.min(0).values)  # (C, n)
        upper = _relu(h + deltas.max(0).values)  # (C, n)
        bound = torch.topk(lower, min(k + 1, n), dim=1).values[:, -1:]  # (C, 1)
        mask = upper >= bound  # (C, n), >= k + 1 per row
        rows, cols = mask.nonzero(as_tuple=True)  # row-major: each row's columns ascending
        counts = torch.bincount(rows, minlength=C)  # (C,)
        width = int(counts.max()) if C else 0
        slot = torch.arange(len(rows), device=h.device) - (counts.cumsum(0) - counts)[rows]  # place in its row
        self.cols = torch.zeros((C, width), dtype=torch.long, device=h.device)  # (C, M) candidates, ascending
        self.cols[rows, slot] = cols
        self.pad = torch.arange(width, device=h.device) >= counts[:, None]  # (C, M) padding slots
        self.h_cand = h.gather(1, self.cols)  # (C, M)

    def __call__(self, delta: Tensor) -> tuple[Tensor, Tensor]:
        """delta (n,) of the group -> values (C, k), indices (C, k), as the eager top-k of h + delta."""
        k = self.k
        v = _relu(self.h_cand + delta[self.cols]).masked_fill(self.pad, -1.0)  # (C, M), padding below all
        top_v, pos = torch.topk(v, min(k + 1, v.shape[1]), dim=1)  # (C, k+1), largest first
        values, indices = top_v[:, :k].clone(), self.cols.gather(1, pos[:, :k])  # (C, k)
        tied = (top_v[:, 1:] == top_v[:, :-1]).any(1).nonzero().squeeze(1)
        if tied.numel():
            values[tied], indices[tied] = _eager_topk_relu_sparse(self.h[tied] + delta, k)
        return values, indices
