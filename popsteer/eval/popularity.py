"""Item popularity and head / mid / tail groups (docs/METHOD.md §3).

Popularity is an item's count as a training target. Head ("popular"): the most popular
items whose cumulative share of interactions is <= 20%; tail ("unpopular"): the least
popular items whose cumulative share is <= 20%; mid: the rest. Padding item 0 is in none.
Ties in count are broken by item id (stable sort), so the groups are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PopularityGroups:
    counts: np.ndarray  # (n_items,) int64 training-target counts; counts[0] is padding
    head: np.ndarray  # (n_items,) bool
    mid: np.ndarray  # (n_items,) bool
    tail: np.ndarray  # (n_items,) bool

    @classmethod
    def from_counts(cls, counts: np.ndarray, share: float = 0.2) -> "PopularityGroups":
        counts = np.asarray(counts, dtype=np.int64)
        n = len(counts)
        ids = np.arange(1, n)
        total = counts[1:].sum()
        head = np.zeros(n, dtype=bool)
        tail = np.zeros(n, dtype=bool)
        desc = ids[np.argsort(-counts[1:], kind="stable")]
        head[desc[np.cumsum(counts[desc]) / total <= share]] = True
        asc = ids[np.argsort(counts[1:], kind="stable")]
        tail[asc[np.cumsum(counts[asc]) / total <= share]] = True
        tail &= ~head
        mid = ~head & ~tail
        mid[0] = False
        return cls(counts=counts, head=head, mid=mid, tail=tail)

    def label(self) -> np.ndarray:
        """Per-item label: 1 head, 2 mid, 3 tail, 0 padding."""
        out = np.where(self.head, 1, np.where(self.tail, 3, 2))
        out[0] = 0
        return out
