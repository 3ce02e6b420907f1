"""The trade-off page's data: every steering grid of the SAE and the base recommender's baseline grids,
as plotly figures of NDCG@10 against Gini@10, one per split."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

X, Y = "gini@10", "ndcg@10"
FORMS = {"": "PopSteer", "-preserve": "PopSteer error-preserving", "-2d": "PopSteer α_pop × α_unpop",
         "-preserve-2d": "PopSteer error-preserving α_pop × α_unpop"}
NOT_PARAMS = {"split", "method", "extended"}


def _read(path: Path) -> pd.DataFrame | None:
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return None
    return table if {"split", X, Y} <= set(table.columns) else None


def _hover(table: pd.DataFrame) -> list[str]:
    params = [c for c in table.columns if "@" not in c and c not in NOT_PARAMS]
    return [", ".join(f"{c}={r[c]:g}" if isinstance(r[c], float) else f"{c}={r[c]}" for c in params if pd.notna(r[c]))
            + f"<br>NDCG@10 {r[Y]:.4f}, Gini@10 {r[X]:.4f}" for r in table.to_dict("records")]


def _trace(name: str, table: pd.DataFrame, group: str, marker: dict | None = None) -> dict:
    return {"type": "scatter", "mode": "markers", "name": name, "legendgroup": group, "x": table[X].tolist(),
            "y": table[Y].tolist(), "text": _hover(table), "hoverinfo": "text+name", "marker": marker or {"size": 7}}


def grid_of_this_sae(results_dir: Path, tag: str, sae_sha256: str | None) -> bool:
    """Whether ``steering_grid<tag>.json`` (the grid's identity, written last) names this SAE."""
    try:
        identity = json.loads((results_dir / f"steering_grid{tag}.json").read_text())
    except (OSError, ValueError):
        return False
    return sae_sha256 is None or identity.get("sae_sha256") == sae_sha256


def validation_pick(results_dir: Path, sae_sha256: str) -> tuple[dict | None, bool, bool]:
    """(the pick of this SAE's steering grid or None, its swap_sigma, whether the grid is this SAE's): what the
    served defaults and the browser's user pages both steer at. The pick is {"num_neurons" int, "alpha" float,
    "alpha_unpop" float or None} (a NaN alpha_unpop, a 1-d grid's, is None); no pick where no point kept the
    NDCG@10 drop within the limit, or where the grid is another SAE's or unreadable."""
    if not grid_of_this_sae(results_dir, "", sae_sha256):
        return None, False, False
    try:
        pick = json.loads((results_dir / "steering_pick.json").read_text()).get("pick")
        swap = bool(json.loads((results_dir / "steering_grid.json").read_text()).get("swap_sigma", False))
    except (OSError, ValueError, AttributeError):
        return None, False, False
    if not pick:
        return None, swap, True
    unpop = pick.get("alpha_unpop")
    return ({"num_neurons": int(pick["num_neurons"]), "alpha": float(pick["alpha"]),
             "alpha_unpop": None if unpop is None or unpop != unpop else float(unpop)}, swap, True)


def steering_grids(results_dir: Path, sae_sha256: str | None = None) -> dict[str, pd.DataFrame]:
    """Form label -> grid table, of every complete ``steering_grid*.csv`` of this SAE in its results folder."""
    out = {}
    for path in sorted(results_dir.glob("steering_grid*.csv")):
        tag = path.stem[len("steering_grid"):]
        if not grid_of_this_sae(results_dir, tag, sae_sha256):
            log.warning("%s: no identity of this SAE beside it (another SAE's, or unfinished): not shown", path)
            continue
        if (table := _read(path)) is not None:
            out[FORMS.get(tag, f"PopSteer {tag.lstrip('-')}")] = table.assign(_tag=tag)
    return out


def _pick_points(results_dir: Path, tag: str, split: str) -> tuple[dict | None, dict]:
    """(the picked point's row, {reference name: row}) on ``split`` from ``steering_pick<tag>.json``."""
    try:
        saved = json.loads((results_dir / f"steering_pick{tag}.json").read_text())
    except (OSError, ValueError):
        return None, {}
    return saved.get(split), saved.get(f"{split}_baselines") or {}


def tradeoff_figures(results_dir: Path, baselines_csv: Path | None,
                     sae_sha256: str | None = None) -> tuple[dict[str, dict], list[str]]:
    """split -> plotly figure ({"data", "layout"}), and the sources read (for the page's note)."""
    grids = steering_grids(results_dir, sae_sha256)
    base = _read(baselines_csv) if baselines_csv is not None and baselines_csv.is_file() else None
    sources = [f"steering_grid{t['_tag'].iloc[0]}.csv" for t in grids.values()]
    sources += [str(baselines_csv)] if base is not None else []
    figures = {}
    for split in ("valid", "test"):
        data, refs = [], {}
        for label, table in grids.items():
            rows = table[table["split"] == split].drop(columns="_tag")
            if rows.empty:
                continue
            data.append(_trace(label, rows, label))
            pick, found = _pick_points(results_dir, table["_tag"].iloc[0], split)
            refs |= found
            if pick:
                data.append(_trace(f"{label}: validation pick", pd.DataFrame([pick]), label,
                                   {"size": 15, "symbol": "star", "line": {"width": 1}}))
        if base is not None:
            for method, rows in base[base["split"] == split].groupby("method", sort=True):
                data.append(_trace(str(method), rows, "baselines", {"size": 6, "symbol": "diamond"}))
        for name, row in sorted(refs.items()):
            data.append(_trace({"sasrec": "SASRec", "sae": "SAE (unsteered)"}.get(name, name), pd.DataFrame([row]),
                               "references", {"size": 13, "symbol": "x"}))
        if data:
            figures[split] = {"data": data, "layout": {
                "title": {"text": f"NDCG@10 vs Gini@10 ({split})"}, "xaxis": {"title": {"text": "Gini@10"}},
                "yaxis": {"title": {"text": "NDCG@10"}}, "height": 560, "hovermode": "closest",
                "legend": {"orientation": "v"}}}
    return figures, sources
