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
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from popsteer.errors import PopSteerError
from popsteer.steering.analysis import GroupStats
from popsteer.steering.steer import NeuronScores
from popsteer.util import checkpoint
from popsteer.util.atomic import write_csv, write_text
from popsteer.util.filelock import file_lock, lock_file

SUMMARY = "analysis.json"
ANALYSIS_FILES = ("cohens_d.csv", "row_stats_popular.csv", "row_stats_unpopular.csv", "neuron_top_items.csv")


def dataset_dir(data_dir: str | Path, dataset: str) -> Path:
    """A dataset's report folder: the latest analysed SAE's CSVs, where the original codebase reads them."""
    return Path(data_dir) / dataset


def sae_dir(data_dir: str | Path, dataset: str, sae_path: str | Path) -> Path:
    """The results folder kept per SAE, so several SAEs of one dataset can be compared."""
    return dataset_dir(data_dir, dataset) / "analysis" / Path(sae_path).stem


def analysis_dir(data_dir: str | Path, dataset: str, sae_path: str | Path) -> Path:
    """Where this SAE's analysis is: its own folder when complete, else the seed's folder."""
    own = sae_dir(data_dir, dataset, sae_path)
    return own if (own / "analysis.json").exists() else dataset_dir(data_dir, dataset)


class AnalysisSummary(BaseModel):
    """The schema of ``analysis.json`` (keys not listed are allowed)."""

    model_config = ConfigDict(extra="allow", strict=True)

    sae_checkpoint: str
    sae_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    n_neurons: int = Field(ge=1)
    n_positive: int = Field(ge=0)
    median_abs_d: float
    profiles_per_group: int = Field(ge=0)
    seed: int
    probe: str = "synthetic"


def read_summary(path: Path) -> dict:
    """``analysis.json``, checked against ``AnalysisSummary``: one line naming the file and the field if not."""
    try:
        summary = json.loads(path.read_text())
    except OSError as exc:
        raise PopSteerError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise PopSteerError(f"{path} is not valid JSON (cut or edited?): {exc}") from None
    if not isinstance(summary, dict):
        raise PopSteerError(f"{path}: expected a JSON object, got {type(summary).__name__}")
    try:
        AnalysisSummary.model_validate(summary)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        why = "is missing" if err["type"] == "missing" else f"{str(err['msg']).lower()}, got {err.get('input')!r:.60}"
        raise PopSteerError(f"{path}: field '{field}' {why}") from None
    return summary


def write_analysis(folder: Path, d: np.ndarray, pop: GroupStats, unpop: GroupStats, top_items: pd.DataFrame,
                   summary: dict) -> list[Path]:
    """The analysis files in ``folder``, ``analysis.json`` last (it marks the folder complete), under the
    folder's lock: two analyses writing one folder (the seed's, shared by every SAE of a dataset) never mix."""
    with file_lock(lock_file(folder / SUMMARY)):
        write_csv(folder / "cohens_d.csv", pd.DataFrame({"cohen_d": d}))
        write_csv(folder / "row_stats_popular.csv", pop.frame())
        write_csv(folder / "row_stats_unpopular.csv", unpop.frame())
        write_csv(folder / "neuron_top_items.csv", top_items, index=False)
        write_text(folder / SUMMARY, json.dumps(summary, indent=2))
    return [folder / f for f in (*ANALYSIS_FILES, SUMMARY)]


def _column(path: Path, column: str, n: int) -> np.ndarray:
    """One column of an analysis CSV: n finite numbers, else one line naming the file and the neuron."""
    try:
        values = pd.read_csv(path, index_col=0)[column].to_numpy(dtype=np.float64)
    except (OSError, KeyError, ValueError, pd.errors.ParserError) as exc:
        raise PopSteerError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if len(values) != n:
        raise PopSteerError(f"{path} has {len(values)} neurons, the SAE has {n}")
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise PopSteerError(f"{path}: {column} of neuron {bad[0]} is {values[bad[0]]} ({len(bad)} neuron(s) not "
                            "finite); run the analysis again")
    return values


def read_scores(folder: Path, sae_path: str | Path, n: int) -> NeuronScores:
    """The analysis CSVs of this SAE in ``folder``, checked against the SAE's hash and width (read under the
    folder's lock, shared: never while an analysis rewrites them)."""
    summary_path = folder / SUMMARY
    blocker = next((p for p in [*reversed(folder.parents), folder] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise PopSteerError(f"cannot read the neuron analysis in {folder}: {blocker} is a file, not a folder "
                            "(check --data-dir)")
    if not summary_path.exists():
        raise PopSteerError(f"no neuron analysis of {sae_path} in {folder}: run `popsteer analyze -p {sae_path}` first")
    with file_lock(lock_file(summary_path), shared=True, create=False):
        summary = read_summary(summary_path)
        if summary["sae_sha256"] != checkpoint.file_sha256(sae_path):
            raise PopSteerError(f"the analysis in {folder} belongs to another SAE ({summary['sae_checkpoint']}): "
                                f"run `popsteer analyze -p {sae_path}` first")
        d = _column(folder / "cohens_d.csv", "cohen_d", n)
        sp = _column(folder / "row_stats_popular.csv", "std", n)
        su = _column(folder / "row_stats_unpopular.csv", "std", n)
    return NeuronScores(d=d, sigma_pop=sp, sigma_unpop=su)
