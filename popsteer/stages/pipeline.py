"""``popsteer pipeline``: every stage on one dataset, in this process (the quick start's main job).

recommender -> SAE -> analysis -> steering at (N, alpha) on test -> the grid on valid, its pick on test.
"""

from __future__ import annotations

import dataclasses

from popsteer.data import load_dataset
from popsteer.models.registry import get_model
from popsteer.stages.analysis import analyze
from popsteer.stages.config import AnalysisConfig, GridStageConfig, PipelineConfig, SAERef, SAEStageConfig, SteerConfig
from popsteer.stages.recommender import train_recommender
from popsteer.stages.sae import train_sae
from popsteer.stages.steer import steer, tune_steering
from popsteer.steering.steer import check_strength


def pipeline(cfg: PipelineConfig) -> dict:
    """Run every stage; bad SAE or steering settings are refused before the recommender trains, not after."""
    rec_cfg = dataclasses.replace(cfg.recommender, train=dataclasses.replace(cfg.recommender.train, seed=cfg.seed))
    cfg.sae.hidden(get_model(rec_cfg.model).d(rec_cfg.architecture()))
    check_strength(cfg.num_neurons, cfg.alpha)
    where = rec_cfg.where
    rec = train_recommender(rec_cfg)
    data = load_dataset(rec_cfg.dataset, where.data_dir, max_len=rec_cfg.architecture().max_len, cfg=rec_cfg.data)
    sae = train_sae(SAEStageConfig(base=rec.checkpoint, sae=cfg.sae, where=where), data=data, resumable=True)
    ref = SAERef(path=sae.checkpoint, dataset=data.name, where=where)
    analysis = analyze(AnalysisConfig(ref, seed=cfg.seed, probe=cfg.probe), data=data)
    n = analysis.summary["n_neurons"]
    steered = steer(SteerConfig(ref, num_neurons=min(cfg.num_neurons, n), alpha=cfg.alpha), data=data)
    tuned = tune_steering(GridStageConfig(ref), data=data)
    return {"recommender": rec.checkpoint, "sae": sae.checkpoint, "analysis": analysis.files,
            "steer_test": {k: steered[k] for k in ("sasrec", "sae", "popsteer")}, "tuned": tuned.get("pick")}
