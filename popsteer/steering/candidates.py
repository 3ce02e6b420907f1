"""Exact ``TopK(ReLU(h + delta), K)`` for a group of steering deltas, from a few candidate columns.

For a group of deltas (the grid points), each column's steered value lies between
``relu(h + min delta)`` and ``relu(h + max delta)`` (both monotone in delta). A row's
(K+1)-th largest lower bound T is at most its (K+1)-th largest steered value at every delta
of the group, so each of those top-(K+1) columns has an upper bound >= T: the candidate
columns (upper bound >= T; ~300 of 4096 per row on average for ML-1M's 56 points) are all that is ranked per
point. Rows whose top-(K+1) holds a tie are redone by ``popsteer.sae.topk``'s eager path on the
whole row, so the result equals ``topk_relu_sparse(h + delta, K)`` (the one TopK entry point) exactly.

Rows are ranked in buckets of similar candidate counts, each padded only to its own widest
row (one row with 500 candidates would otherwise pad every row of the chunk to 500).
"""

from __future__ import annotations

import torch
from torch import Tensor

from popsteer.sae.topk import relu, topk_relu_sparse


class CandidateTopK:
    """Candidate columns of the rows of ``h`` (C, n) for every delta of ``deltas`` (P, n)."""

    def __init__(self, h: Tensor, deltas: Tensor, k: int, buckets: int = 32) -> None:
        self.h, self.k = h, k
        C, n = h.shape
        lower = relu(h + deltas.min(0).values)  # (C, n)
        upper = relu(h + deltas.max(0).values)  # (C, n)
        bound = torch.topk(lower, min(k + 1, n), dim=1).values[:, -1:]  # (C, 1)
        mask = upper >= bound  # (C, n), >= k + 1 per row
        rows, cols = mask.nonzero(as_tuple=True)  # row-major: each row's columns ascending
        self.counts = torch.bincount(rows, minlength=C)  # (C,) candidates per row
        width = int(self.counts.max()) if C else 0
        slot = torch.arange(len(rows), device=h.device) - (self.counts.cumsum(0) - self.counts)[rows]
        all_cols = torch.zeros((C, width), dtype=torch.long, device=h.device)  # (C, M) ascending
        all_cols[rows, slot] = cols
        # buckets of rows with similar counts: (rows (Cb,), cols (Cb, Mb), pad (Cb, Mb), h at cols)
        self.buckets: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        for part in torch.argsort(self.counts).tensor_split(min(buckets, max(C, 1))):
            if not len(part):
                continue
            w = int(self.counts[part].max())
            cols_b = all_cols[part, :w]  # (Cb, Mb)
            pad_b = torch.arange(w, device=h.device) >= self.counts[part, None]  # (Cb, Mb)
            self.buckets.append((part, cols_b, pad_b, h[part].gather(1, cols_b)))

    def __call__(self, deltas: Tensor) -> tuple[Tensor, Tensor]:
        """deltas (G, n) of the group -> values (G, C, k), indices (G, C, k), each [g] equal to
        the eager top-k of h + deltas[g]."""
        k, C, G = self.k, self.h.shape[0], deltas.shape[0]
        values = self.h.new_empty((G, C, k))
        indices = torch.empty((G, C, k), dtype=torch.long, device=self.h.device)
        tied = []
        for rows, cols, pad, h_cand in self.buckets:
            v = relu(h_cand + deltas[:, cols]).masked_fill(pad, -1.0)  # (G, Cb, Mb), padding below all
            top_v, pos = torch.topk(v, min(k + 1, v.shape[2]), dim=2)  # (G, Cb, k+1), largest first
            values[:, rows] = top_v[..., :k]
            indices[:, rows] = cols.expand(G, -1, -1).gather(2, pos[..., :k])
            g, r = (top_v[..., 1:] == top_v[..., :-1]).any(2).nonzero(as_tuple=True)
            if g.numel():
                tied.append((g, rows[r]))
        for g, r in tied:  # ties decide set or order: the eager path on whole rows
            for gi in g.unique().tolist():
                rr = r[g == gi]
                values[gi, rr], indices[gi, rr] = topk_relu_sparse(self.h[rr] + deltas[gi], k)
        return values, indices
