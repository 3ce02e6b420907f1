"""Fidelity checks of a report section against the authors' artifacts: Cohen's d distributions and recorded validation figures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from popsteer.errors import PopSteerError


# The authors' unsteered SASRec on validation (docs/METHOD.md §5).
REFERENCE_VALID = {"ml-1m": {"ndcg@10": 0.1212, "gini@10": 0.7573, "lt_coverage@10": 0.4859,
                             "ndcg_head@10": 0.1848, "ndcg_mid@10": 0.1234, "ndcg_tail@10": 0.0621}}
REFERENCE_D = "popsteer_cohens_d.csv.gz"


def shared_dir(configured: str | None) -> Path:
    """The folder of the authors' files: the configured one, else $POPSTEER_SHARED_DATASETS or ../shared/datasets."""
    return Path(configured or os.environ.get("POPSTEER_SHARED_DATASETS", "../shared/datasets"))


def d_summary(d: np.ndarray, top_n: int) -> dict:
    mag = np.abs(d)
    top = np.argsort(-mag, kind="stable")[:top_n]
    return {"neurons": len(d), "share d > 0": float((d > 0).mean()), "mean |d|": float(mag.mean()),
            "median |d|": float(np.median(mag)), "90th pct |d|": float(np.quantile(mag, 0.9)),
            "max |d|": float(mag.max()), f"share d > 0 in top {top_n} by |d|": float((d[top] > 0).mean())}


def compare_d(ours: np.ndarray, theirs: np.ndarray) -> dict:
    """Distribution-level agreement (neuron ids of two SAEs do not correspond).

    Spearman and Pearson correlations of the two |d| quantile functions (99 percentiles;
    Spearman only falls below 1 where one quantile function is flat), and the two-sample
    Kolmogorov-Smirnov distance of |d| and of d.
    """
    q = np.linspace(0.01, 0.99, 99)
    qo, qt = np.quantile(np.abs(ours), q), np.quantile(np.abs(theirs), q)
    return {"Spearman, |d| quantiles": float(stats.spearmanr(qo, qt).statistic),
            "Pearson, |d| quantiles": float(np.corrcoef(qo, qt)[0, 1]),
            "KS distance, |d|": float(stats.ks_2samp(np.abs(ours), np.abs(theirs)).statistic),
            "KS distance, d": float(stats.ks_2samp(ours, theirs).statistic)}


def fidelity(dataset: str, d: np.ndarray, shared: Path, valid_sasrec: dict) -> dict:
    """Our Cohen's d and validation metrics against the authors' files / recorded figures, where present."""
    out: dict = {"reference_path": None, "summary": None, "agreement": None, "valid": None}
    path = shared / dataset / "reference" / REFERENCE_D
    if path.is_file():
        try:
            theirs = pd.read_csv(path, index_col=0)["cohen_d"].to_numpy(dtype=np.float64)
        except (OSError, KeyError, ValueError) as exc:
            raise PopSteerError(f"cannot read the authors' Cohen's d {path}: {exc}") from None
        top_n = max(1, min(len(d), len(theirs)) // 10)
        out.update(reference_path=str(path.relative_to(shared)), summary=pd.DataFrame({"PopSteer (ours)": d_summary(d, top_n),
                                                                    "authors'": d_summary(theirs, top_n)}),
                   agreement=compare_d(d, theirs))
    if dataset in REFERENCE_VALID:
        ref = REFERENCE_VALID[dataset]
        out["valid"] = pd.DataFrame({"this SASRec": {k: valid_sasrec[k] for k in ref}, "authors' recorded": ref})
    return out
