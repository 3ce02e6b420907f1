"""Everything the neuron browser's pages show, gathered by the browse stage, rendered by ``pages_*``."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from popsteer.browse.metadata import ItemMeta
from popsteer.browse.users import Setting, UserCase


@dataclass
class SiteData:
    dataset: str
    sae_name: str
    neurons: pd.DataFrame
    """One row per neuron (index = neuron): d, sigma_pop, sigma_unpop, mu_pop, mu_unpop, freq, label, best_q."""
    top_items: pd.DataFrame
    """neuron_top_items.csv: neuron, rank, item_id, preactivation."""
    meta: ItemMeta
    popularity: np.ndarray
    """(n_items,) training count of each item (the analysis' popularity)."""
    group: np.ndarray
    """(n_items,) "H", "M", "T" (head / mid / tail), "" for padding."""
    pages: np.ndarray
    """The neurons with a page, top |d| first."""
    n_pages_top: int
    """How many of ``pages`` are there for their |d| (the rest for their label)."""
    histograms: dict[int, dict]
    top_users: dict[int, list[tuple[int, float]]]
    histories: dict[int, list[int]]
    """User -> internal item ids before its test target, oldest first (the users shown only)."""
    targets: np.ndarray
    """(U,) each user's held-out test item."""
    user_tokens: np.ndarray
    cases: list[UserCase]
    settings: list[Setting]
    setting_note: str
    figures: dict[str, dict]
    figure_sources: list[str]
    tests: pd.DataFrame | None = None
    """The significant enrichment tests (neuron, tag, hits, n_top, tag_items, p, q); None without metadata."""
    fdr: float = 0.05
    facts: dict = field(default_factory=dict)
    """Header facts shown on the index (probe, K, width, ...)."""

    @property
    def labelled(self) -> bool:
        return self.meta.tags is not None

    @cached_property
    def item_tags(self) -> dict[int, list[str]]:
        """Internal item id -> its tags (empty without metadata)."""
        if self.meta.tags is None:
            return {}
        return self.meta.tags.groupby("item_id")["tag"].apply(lambda s: sorted(s)).to_dict()

    @cached_property
    def top_of(self) -> dict[int, pd.DataFrame]:
        """Neuron -> its rows of ``top_items``, by rank."""
        return {int(j): g for j, g in self.top_items.sort_values(["neuron", "rank"]).groupby("neuron")}
