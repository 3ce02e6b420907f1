"""The report's popularity neurons: the largest |Cohen's d| with the items that drive each, by display name,
and each one's concept label where ``popsteer browse`` wrote ``neuron_labels.csv`` for this SAE."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from popsteer.data import EMBEDDED, SequenceData, embedded_data_dir
from popsteer.errors import PopSteerError
from popsteer.eval.popularity import PopularityGroups
from popsteer.report.markdown import md
from popsteer.steering.results import analysis_dir

log = logging.getLogger(__name__)

LABELS_FILE, LABELS_META = "neuron_labels.csv", "neuron_labels.json"
"""The concept labels (popsteer.browse.labels) beside the analysis CSVs, and their record (the SAE's hash)."""


def read_labels(folder: Path, sae_sha256: str | None = None) -> pd.DataFrame | None:
    """``neuron_labels.csv`` in ``folder``; None when absent, unreadable or (given the hash) of another SAE."""
    try:
        meta = json.loads((folder / LABELS_META).read_text())
        labels = pd.read_csv(folder / LABELS_FILE, keep_default_na=False)
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not {"neuron", "label"} <= set(labels.columns):  # an edited file
        log.warning("%s lacks the columns neuron,label (or its record is not a mapping): not used",
                    folder / LABELS_FILE)
        return None
    if sae_sha256 is not None and meta.get("sae_sha256") != sae_sha256:
        log.warning("%s belongs to another SAE: not used", folder / LABELS_FILE)
        return None
    return labels


def item_titles(data: SequenceData, data_dir: str | Path, shared: Path) -> np.ndarray:
    """A display name per item id (title / artist name where an ``.item`` file has one, else the token)."""
    name = data.name
    candidates = [Path(data_dir) / name / f"{name}.item", shared / name / f"{name}.item",
                  shared / name / "reference" / f"popsteer_{name}.item"]
    if name == EMBEDDED:
        try:
            candidates.append(embedded_data_dir() / name / f"{name}.item")
        except PopSteerError:
            pass
    for path in candidates:
        if not path.is_file():
            continue
        try:
            with path.open(encoding="utf-8", errors="replace") as fh:
                header = fh.readline().rstrip("\n").split("\t")
            fields = [h.split(":")[0] for h in header]
            title = next((f for f in ("movie_title", "title", "name") if f in fields), None)
            if title is None or "item_id" not in fields:
                continue
            table = pd.read_csv(path, sep="\t", dtype=str, usecols=[fields.index("item_id"), fields.index(title)],
                                quoting=3, encoding="utf-8", encoding_errors="replace")
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            log.warning("cannot read item names from %s: %s", path, exc)
            continue
        lookup = dict(zip(table.iloc[:, 0], table.iloc[:, 1]))
        return np.array([str(lookup.get(t, t)) for t in data.item_tokens])
    return data.item_tokens.astype(str)


def neuron_items(data: SequenceData, data_dir: str | Path, groups: PopularityGroups, shared: Path,
                 sae_path: str | Path, neurons, n_items: int = 5) -> dict[int, str]:
    """neuron -> "title (H/M/T); ..." of the items whose one-item profile activates it most (the analysis'
    ``neuron_top_items.csv``), for any neurons (the top |d|, a learned delta's most moved)."""
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
        out[int(j)] = "; ".join(f"{md(names[i])} ({tag[i]})" for i in top)
    return out


def top_neurons(data: SequenceData, data_dir: str | Path, groups: PopularityGroups, d: np.ndarray, shared: Path,
                sae_path: str | Path, n_top: int = 10, n_items: int = 5) -> pd.DataFrame:
    """The n_top neurons by |d| with the items whose one-item profile activates each most."""
    order = np.argsort(-np.abs(d), kind="stable")[:n_top]
    folder = analysis_dir(data_dir, data.name, sae_path)
    items = neuron_items(data, data_dir, groups, shared, sae_path, order, n_items)
    labels = read_labels(folder, _analysed_sha(folder))
    label = {} if labels is None else dict(zip(labels["neuron"], labels["label"]))
    return pd.DataFrame([{"rank": rank, "neuron": int(j), "d": float(d[j]),
                          "direction": "popular" if d[j] > 0 else "unpopular", "top items": items[int(j)],
                          "label": md(str(label.get(int(j), "")))} for rank, j in enumerate(order, 1)])


def _analysed_sha(folder: Path) -> str | None:
    try:
        return json.loads((folder / "analysis.json").read_text()).get("sae_sha256")
    except (OSError, ValueError):
        return None
