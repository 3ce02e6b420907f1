"""What every re-ranking baseline shares: its inputs besides the scores, and its registry entry.

A re-ranker is a function ``rerank(scores, ctx, k, **params) -> (U, k) int64 item ids``:

- ``scores``: (U, n_items) float tensor, SASRec's scores ``x @ item_emb.T`` for a batch of
  users, padding item 0 already at ``-inf``;
- ``ctx``: a :class:`RerankContext` for the same batch (popularity, groups, histories, and for
  the x-space methods the popularity direction's projections);
- ``k``: the list length; ``params``: one point of the method's grid.

It never recommends an item whose score is ``-inf`` unless fewer than k items are finite. A
*stateful* re-ranker (``Baseline.stateful``, P-MMF) also takes ``state=`` (None for the first
batch) and returns ``(ids, state)``; ``rerank_split`` threads the state through its batches in
user-row order, so the lists do not depend on the batch size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from popsteer.data import SequenceData
from popsteer.eval.popularity import PopularityGroups

GROUP_NAMES = ("head", "mid", "tail")


@dataclass(frozen=True)
class RerankContext:
    """A batch's side information.

    ``users`` are the batch's rows in its split (they seed the random re-ranker, so a user's
    list does not depend on how users are batched); ``history`` the head/mid/tail shares of
    each user's interactions before the target (what calibration aims at).

    The x-space methods (PPD, SPREE; ``popsteer.baselines.direction``) need a unit popularity
    direction u in x-space: ``xu = x . u`` per user, ``eu = E u`` per item and ``xu_std``, the
    population SD of ``x . u`` over *all* the split's users (not the batch's). None / 0 without one.
    """

    groups: PopularityGroups
    users: np.ndarray  # (U,) int64 rows in the split
    history: np.ndarray  # (U, 3) float64, rows sum to 1 (head, mid, tail)
    xu: np.ndarray | None = None  # (U,) float64, x . u
    eu: np.ndarray | None = None  # (n_items,) float64, E u (row 0 = padding)
    xu_std: float = 0.0

    def rows(self, sl: slice) -> "RerankContext":
        return dataclasses.replace(self, users=self.users[sl], history=self.history[sl],
                                   xu=None if self.xu is None else self.xu[sl])


def history_shares(data: SequenceData, split: str, groups: PopularityGroups) -> np.ndarray:
    """(U, 3) head/mid/tail shares of every interaction of each user before the split's target.

    The whole history, not only SASRec's window of ``max_len`` items.
    """
    back = {"valid": 2, "test": 1}[split]
    starts, ends = data.offsets[:-1], data.offsets[1:] - back  # ends: index of the target
    label = groups.label()[data.items]  # (total,) 1 head, 2 mid, 3 tail
    out = np.zeros((data.n_users, 3), dtype=np.float64)
    for g in range(3):
        cum = np.r_[0, np.cumsum(label == g + 1)]
        out[:, g] = cum[ends] - cum[starts]
    return out / np.maximum(out.sum(1, keepdims=True), 1)


def split_context(data: SequenceData, split: str, groups: PopularityGroups | None = None) -> RerankContext:
    groups = groups or PopularityGroups.from_counts(data.train_target_counts())
    return RerankContext(groups, np.arange(data.n_users, dtype=np.int64), history_shares(data, split, groups))


def finite_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk`` with k capped at the number of columns. (U, n) -> (U, k'), (U, k')."""
    return torch.topk(scores, min(k, scores.shape[1]), dim=1)


@dataclass(frozen=True)
class Baseline:
    """A registered re-ranker with its hyper-parameter grid (docs/METHOD.md §6)."""

    name: str
    """Registry key, also the CSV / CLI name."""
    label: str
    """Name in tables and plots."""
    rerank: Callable[..., torch.Tensor]
    """``rerank(scores (U, n_items), ctx, k, **params) -> (U, k)`` item ids."""
    grid: tuple[dict, ...]
    """Every hyper-parameter point the tuning tries."""
    symbols: dict = field(default_factory=dict)
    """Display name of each parameter (e.g. ``{"lam": "λ"}``)."""
    extend: Callable[[dict, int], dict | None] | None = None
    """``extend(last point, n_items) -> the next, stronger point, or None at the parameter's bound``:
    how ``tune_baseline(span_gini=...)`` grows the grid beyond its last (strongest) point
    (``popsteer.baselines.extension``). None: the grid cannot be extended."""
    stateful: bool = False
    """``rerank`` takes ``state=`` and returns ``(ids, state)``, carried across user batches (P-MMF)."""
    query_side: bool = False
    """The method moves the user's query vector (PPD, SPREE): in the serving setting it retrieves with its own
    query, as steering does, instead of re-ranking the base model's top-m (``ScoredSplit.top_m``)."""

    def describe(self, params: dict) -> str:
        return ", ".join(f"{self.symbols.get(k, k)}={v:g}" for k, v in params.items())

    def tiny_grid(self) -> tuple[dict, ...]:
        """First, middle and last point: a CI-sized grid."""
        idx = sorted({0, len(self.grid) // 2, len(self.grid) - 1})
        return tuple(self.grid[i] for i in idx)
