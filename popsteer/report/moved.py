"""Any list of neurons with the items that drive each (the learned delta's most-moved neurons)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from popsteer.data import SequenceData
from popsteer.errors import PopSteerError
from popsteer.eval.popularity import PopularityGroups
from popsteer.report.markdown import md
from popsteer.report.neurons import item_titles
from popsteer.steering.results import analysis_dir


def neuron_items(data: SequenceData, data_dir: str | Path, groups: PopularityGroups, shared: Path,
                 sae_path: str | Path, neurons: list[int], n_items: int = 5) -> dict[int, str]:
    """neuron -> "title (H/M/T); ..." of the items whose one-item profile activates it most (the analysis'
    ``neuron_top_items.csv``)."""
    path = analysis_dir(data_dir, data.name, sae_path) / "neuron_top_items.csv"
    try:
        items = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise PopSteerError(f"cannot read {path}: {exc} (run `popsteer analyze` first)") from None
    names = item_titles(data, data_dir, shared)
    tag = np.array(["", "H", "M", "T"])[groups.label()]
    out = {}
    for j in neurons:
        top = items[items["neuron"] == j].sort_values("rank").head(n_items)["item_id"].to_numpy()
        out[j] = "; ".join(f"{md(names[i])} ({tag[i]})" for i in top)
    return out
