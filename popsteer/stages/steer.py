"""The seed's steering commands on top of the grid stage: one point (``--test_popsteer``) and the
validation-tuned point (``--tune_popsteer``), with the seed's CSVs in ``<data-dir>/<dataset>/``."""

from __future__ import annotations

import logging

import pandas as pd

from popsteer.data import SequenceData
from popsteer.stages.config import GridConfig, GridStageConfig, SteerConfig
from popsteer.stages.grid import POINT_KEYS, steering_grid
from popsteer.steering.results import dataset_dir
from popsteer.util.atomic import write_csv

log = logging.getLogger(__name__)

SHOWN = ["ndcg@10", "precision@10", "lt_coverage@10", "gini@10", "arp@10", "ndcg_head@10", "ndcg_mid@10", "ndcg_tail@10"]


def steer(cfg: SteerConfig, data: SequenceData | None = None) -> dict:
    """SASRec, the unsteered SAE and the SAE steered at (N, alpha) on one split; writes ``steer_N<N>_a<alpha>_<split>.csv``."""
    grid = GridConfig(ns=[cfg.num_neurons], alphas=[cfg.alpha], splits=[cfg.split], swap_sigma=cfg.swap_sigma)
    result = steering_grid(GridStageConfig(cfg.ref, grid), write=False, strict_n=True, data=data)
    rows = dict(result.baselines[cfg.split])
    (point,) = result.rows[cfg.split]
    rows["popsteer"] = {k: v for k, v in point.items() if k not in ("num_neurons", "alpha")}
    table = pd.DataFrame(rows).T
    log.info("%s split, N=%d alpha=%g:\n%s", cfg.split, cfg.num_neurons, cfg.alpha,
             table[SHOWN].to_string(float_format=lambda v: f"{v:.4f}"))
    out = dataset_dir(cfg.ref.where.data_dir, result.dataset) / f"steer_N{cfg.num_neurons}_a{cfg.alpha:g}_{cfg.split}.csv"
    write_csv(out, table)
    return {"split": cfg.split, "num_neurons": cfg.num_neurons, "alpha": cfg.alpha, "report": str(out), **rows}


def tune_steering(cfg: GridStageConfig, data: SequenceData | None = None) -> dict:
    """The grid on valid and test, the pick on valid; writes the SAE's grid files and the seed's
    ``steering_grid_valid.csv`` and ``steering_tuned_test.csv``."""
    result = steering_grid(cfg, data=data)
    folder = dataset_dir(cfg.ref.where.data_dir, result.dataset)
    write_csv(folder / "steering_grid_valid.csv", pd.DataFrame(result.rows["valid"]), index=False)
    out = {"grid_points": len(result.points), "valid_baselines": result.baselines["valid"], "pick": None,
           "files": result.files}
    if result.pick is None:
        log.warning("no grid point keeps the NDCG@10 drop within %g%% of SASRec on validation",
                    100 * cfg.grid.max_ndcg_drop)
        return out
    tuned = {k: v for k, v in result.picked("test").items() if k not in POINT_KEYS}
    test_rows = {**result.baselines["test"], "popsteer_tuned": tuned}
    write_csv(folder / "steering_tuned_test.csv", pd.DataFrame(test_rows).T)
    p = result.pick
    log.info("tuned on valid: %s (valid Gini drop %.1f%%, NDCG drop %.1f%%); test NDCG@10 %.4f Gini@10 %.4f",
             " ".join(f"{k}={v:g}" for k, v in p.items() if k in POINT_KEYS), 100 * p["valid_gini_drop"],
             100 * p["valid_ndcg_drop"], tuned["ndcg@10"], tuned["gini@10"])
    out.update(pick=p, test=test_rows)
    return out
