"""Where an SAE's analysis and steering results live, and the one reader of its analysis CSVs.

Each SAE has its results folder ``<data-dir>/<dataset>/analysis/<SAE file stem>/``:

    analysis.json                 the SAE's SHA-256 and a summary (written last: the folder is complete)
    cohens_d.csv                  cohen_d per neuron
    row_stats_popular.csv         mean and std of each neuron's pre-activation, popular-only profiles
    row_stats_unpopular.csv       the same, unpopular-only profiles
    neuron_top_items.csv          the items whose one-item profile activates each neuron most
    steering_grid.csv/.json       every grid point on valid and test, and what the grid was
    steering_pick.json            the validation pick and its test row
    tradeoff.png                  NDCG@10 against Gini@10 over the grid
    *-preserve.*, *-2d.*          the same three for the error-preserving grid and the two-strength grid

The seed's own files (``cohens_d.csv``, ``row_stats_*.csv``, ``steer_*.csv``,
``steering_grid_valid.csv``, ``steering_tuned_test.csv``) go to ``<data-dir>/<dataset>/`` too,
holding the latest analysed SAE; an SAE without its own folder is read from there.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from popsteer.errors import PopSteerError
from popsteer.steering.analysis import GroupStats
from popsteer.steering.steer import NeuronScores
from popsteer.util import checkpoint
from popsteer.util.atomic import write_csv, write_text

ANALYSIS_FILES = ("cohens_d.csv", "row_stats_popular.csv", "row_stats_unpopular.csv", "neuron_top_items.csv")


def seed_dir(data_dir: str | Path, dataset: str) -> Path:
    """The seed's report folder of a dataset (the latest analysed SAE's CSVs)."""
    return Path(data_dir) / dataset


def sae_dir(data_dir: str | Path, dataset: str, sae_path: str | Path) -> Path:
    """The results folder kept per SAE, so several SAEs of one dataset can be compared."""
    return seed_dir(data_dir, dataset) / "analysis" / Path(sae_path).stem


def analysis_dir(data_dir: str | Path, dataset: str, sae_path: str | Path) -> Path:
    """Where this SAE's analysis is: its own folder when complete, else the seed's folder."""
    own = sae_dir(data_dir, dataset, sae_path)
    return own if (own / "analysis.json").exists() else seed_dir(data_dir, dataset)


def write_analysis(folder: Path, d: np.ndarray, pop: GroupStats, unpop: GroupStats, top_items: pd.DataFrame,
                   summary: dict) -> list[Path]:
    """The analysis files in ``folder``, ``analysis.json`` last (it marks the folder complete)."""
    write_csv(folder / "cohens_d.csv", pd.DataFrame({"cohen_d": d}))
    write_csv(folder / "row_stats_popular.csv", pop.frame())
    write_csv(folder / "row_stats_unpopular.csv", unpop.frame())
    write_csv(folder / "neuron_top_items.csv", top_items, index=False)
    write_text(folder / "analysis.json", json.dumps(summary, indent=2))
    return [folder / f for f in (*ANALYSIS_FILES, "analysis.json")]


def read_scores(folder: Path, sae_path: str | Path, n: int) -> NeuronScores:
    """The analysis CSVs of this SAE in ``folder``, checked against the SAE's hash and width."""
    summary_path = folder / "analysis.json"
    if not summary_path.exists():
        raise PopSteerError(f"no neuron analysis in {folder}: run --analyze_neurons -p {sae_path} first")
    summary = json.loads(summary_path.read_text())
    if summary.get("sae_sha256") != checkpoint.file_sha256(sae_path):
        raise PopSteerError(f"the analysis in {folder} belongs to another SAE ({summary.get('sae_checkpoint')}): "
                            f"run --analyze_neurons -p {sae_path} first")
    try:
        d = pd.read_csv(folder / "cohens_d.csv", index_col=0)["cohen_d"].to_numpy()
        sp = pd.read_csv(folder / "row_stats_popular.csv", index_col=0)["std"].to_numpy()
        su = pd.read_csv(folder / "row_stats_unpopular.csv", index_col=0)["std"].to_numpy()
    except (OSError, KeyError, ValueError) as exc:
        raise PopSteerError(f"cannot read the analysis CSVs in {folder}: {exc}") from None
    if not len(d) == len(sp) == len(su) == n:
        raise PopSteerError(f"the analysis CSVs in {folder} have {len(d)} neurons, the SAE has {n}")
    return NeuronScores(d=d, sigma_pop=sp, sigma_unpop=su)
