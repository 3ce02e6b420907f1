"""The stages around a sweep: train the base recommender, analyse SAE neurons, score the steering grid.

Each stage writes result files that the next one reads (checkpoints, CSVs, JSON), in the
experiment folder; the heavy parts run as Ray tasks or actors.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from popsteer.util import checkpoint
from popsteer.steering.analysis import GroupStats, RunningMoments, cohens_d
from popsteer.util.atomic import write_csv, write_text
from popsteer.models.config import SASRecConfig, TrainConfig
from popsteer.errors import PopSteerError
from popsteer.steering.grid import grid_points, pick_point, tradeoff
from popsteer.platform.evaluators import EvaluatorPool, GridTask, SAEEntry
from popsteer.platform.spec import SteeringSpec, SweepSpec, TrainRecommenderSpec
from popsteer.steering.steer import NeuronScores

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ stage 1: the base recommender


def _expected_recommender(spec: SweepSpec) -> tuple[dict, dict]:
    from popsteer.stages.steps import SMALL_SASREC

    tr = spec.train_recommender
    hp = SASRecConfig(**(SMALL_SASREC if tr.small else {}))
    train = TrainConfig(trainer="allpos", epochs=tr.epochs, learning_rate=tr.learning_rate, batch_size=tr.batch_size,
                        stopping_step=tr.stopping_step, seed=tr.seed, stride=min(tr.stride, hp.max_len),
                        time_budget_min=tr.time_budget_min, lr_schedule=tr.lr_schedule, warmup=tr.warmup,
                        ema_decay=tr.ema_decay)
    return asdict(hp), asdict(train)


def _train_recommender_task(tr: TrainRecommenderSpec, dataset: str, data_dir: str, out_dir: str) -> str:
    from popsteer.app.cli import setup_logging
    from popsteer.stages.steps import train_recommender

    setup_logging(False)
    args = argparse.Namespace(dataset=dataset, trainer="allpos", epochs=tr.epochs, learning_rate=tr.learning_rate,
                              batch_size=tr.batch_size, stopping_step=tr.stopping_step, seed=tr.seed, stride=tr.stride,
                              time_budget_min=tr.time_budget_min, lr_schedule=tr.lr_schedule, warmup=tr.warmup,
                              ema_decay=tr.ema_decay, small=tr.small, data_dir=data_dir, out_dir=out_dir)
    return train_recommender(args)["checkpoint"]


def recommender_stage(spec: SweepSpec) -> Path:
    """The base SASRec: the given checkpoint, or one trained (once) by a Ray task into ``<exp>/recommender``."""
    if spec.base_checkpoint:
        return Path(spec.base_checkpoint)
    import ray

    folder = spec.experiment_dir / "recommender"
    hp, train = _expected_recommender(spec)
    for path in sorted(folder.glob(f"SASRec-*-{spec.dataset}.safetensors"), reverse=True):
        meta = checkpoint.read_meta(path)
        trained = meta.get("train")  # fields added since it was written count as their defaults
        if (meta.get("dataset") == spec.dataset and meta.get("sasrec") == hp and trained
                and {**asdict(TrainConfig()), **trained} == train):
            log.info("base recommender reused: %s", path)
            return path
    log.info("training the base recommender (%s, %d epochs) as a Ray task", spec.dataset, spec.train_recommender.epochs)
    task = ray.remote(num_cpus=spec.train_recommender.cpus)(_train_recommender_task)
    return Path(ray.get(task.remote(spec.train_recommender, spec.dataset, spec.data_dir, str(folder))))


# ------------------------------------------------------------------ stage 4: neuron analysis


def analyze_encoded(sae_path: str, encoded_dir: str, batch_size: int = 4096) -> tuple[np.ndarray, GroupStats, GroupStats]:
    """Cohen's d of every neuron from the encoded synthetic profiles (``analyze_neurons`` without re-encoding)."""
    import torch

    from popsteer.platform.cluster import torch_device
    from popsteer.platform.encode import EncodedData
    from popsteer.stages.sae_steps import load_sae

    device = torch_device()
    sae, _ = load_sae(sae_path)
    sae = sae.to(device)
    encoded = EncodedData.open(encoded_dir)
    stats = []
    for split in ("popular", "unpopular"):
        x = torch.from_numpy(encoded.read(split))  # (P, d)
        moments = RunningMoments(sae.n)
        with torch.no_grad():
            for s in range(0, len(x), batch_size):
                moments.update(sae.preact(x[s : s + batch_size].to(device)).cpu())  # (B, n)
        stats.append(moments.result())
    pop, unpop = stats
    return cohens_d(pop, unpop), pop, unpop


def write_analysis(folder: Path, sae_path: str, d: np.ndarray, pop: GroupStats, unpop: GroupStats) -> list[Path]:
    """The analysis reports, in the formats of ``popsteer analyze``."""
    files = [folder / "cohens_d.csv", folder / "row_stats_popular.csv", folder / "row_stats_unpopular.csv"]
    write_csv(files[0], pd.DataFrame({"cohen_d": d}))
    write_csv(files[1], pop.frame())
    write_csv(files[2], unpop.frame())
    summary = {"sae_checkpoint": str(sae_path), "sae_sha256": checkpoint.file_sha256(sae_path),
               "n_neurons": int(len(d)), "n_positive": int((d > 0).sum()),
               "median_abs_d": float(np.median(np.abs(d))), "profiles_per_group": pop.count}
    write_text(folder / "analysis.json", json.dumps(summary, indent=2))
    return [*files, folder / "analysis.json"]


def analysis_stage(saes: dict[str, str], encoded_dir: str, out_root: Path, cpus: float = 1.0,
                   gpus: float = 0.0) -> dict[str, dict]:
    """Analyse each SAE (key -> checkpoint path) in parallel Ray tasks; reports in ``out_root/<key>/``."""
    import ray

    task = ray.remote(num_cpus=cpus, num_gpus=gpus)(analyze_encoded)
    refs = {key: task.remote(path, encoded_dir) for key, path in saes.items()}
    out = {}
    for key, ref in refs.items():
        d, pop, unpop = ray.get(ref)
        files = write_analysis(out_root / key, saes[key], d, pop, unpop)
        out[key] = {"scores": NeuronScores(d=d, sigma_pop=pop.std, sigma_unpop=unpop.std), "files": files,
                    "n_positive": int((d > 0).sum()), "median_abs_d": float(np.median(np.abs(d)))}
        log.info("analysis %s: %d of %d neurons with d > 0, median |d| %.3f", key, out[key]["n_positive"], len(d),
                 out[key]["median_abs_d"])
    return out


# ------------------------------------------------------------------ stage 5: the steering grid


def steering_stage(entries: list[SAEEntry], n_hidden: dict[str, int], steering: SteeringSpec, item_emb: np.ndarray,
                   x_valid: np.ndarray, x_test: np.ndarray, evaluators: dict, out_dir: Path) -> dict:
    """Score the grid of every SAE on the evaluator pool; write the table, the picks and the plots."""
    from popsteer.platform.tracking import plot_tradeoff

    tasks = [GridTask(e.key, p) for e in entries for p in grid_points(n_hidden[e.key], steering.ns, steering.alphas)]
    pool = EvaluatorPool(min(steering.evaluators, len(tasks)), item_emb, x_valid, x_test, evaluators,
                         {e.key: e for e in entries}, steering.swap_sigma, steering.cpus_per_evaluator,
                         steering.gpus_per_evaluator)
    try:
        rows = pool.run(tasks)
        base = pool.baselines([e.key for e in entries])
    finally:
        pool.shutdown()
    table = pd.DataFrame(rows).sort_values(["sae", "split", "num_neurons", "alpha"], kind="stable")
    if table.duplicated(["sae", "split", "num_neurons", "alpha"]).any():
        raise PopSteerError("the steering grid has duplicate points")
    files = [out_dir / "steering_grid.csv", out_dir / "steering_baselines.csv", out_dir / "steering_picks.json"]
    write_csv(files[0], table, index=False)
    write_csv(files[1], pd.DataFrame([{"sae": k, "split": s, "model": m, **v} for k, b in base.items()
                                      for s, by_model in b.items() for m, v in by_model.items()]), index=False)
    picks = {}
    for entry in entries:
        sub = table[table["sae"] == entry.key]
        valid = sub[sub["split"] == "valid"].to_dict("records")
        pick = pick_point(valid, base[entry.key]["valid"]["sasrec"], steering.max_ndcg_drop)
        result = {"pick": None, "valid_baselines": base[entry.key]["valid"], "test_baselines": base[entry.key]["test"]}
        if pick is not None:
            test = sub[(sub["split"] == "test") & (sub["num_neurons"] == pick["num_neurons"])
                       & (sub["alpha"] == pick["alpha"])].to_dict("records")[0]
            gini_drop, ndcg_drop = tradeoff(pick, base[entry.key]["valid"]["sasrec"])
            result.update(pick={"num_neurons": int(pick["num_neurons"]), "alpha": float(pick["alpha"]),
                                "valid_gini_drop": gini_drop, "valid_ndcg_drop": ndcg_drop},
                          valid=pick, test=test)
        picks[entry.key] = result
        files.append(plot_tradeoff(valid, out_dir / f"tradeoff_{entry.key}.png", base[entry.key]["valid"], pick,
                                   title=f"{entry.key}: NDCG@10 vs Gini@10 (valid)"))
    write_text(files[2], json.dumps(picks, indent=2, default=float))
    log.info("steering grid: %d points x %d splits over %d SAE(s) on %d evaluators (%d resubmitted)",
             len(tasks), 2, len(entries), len(pool.actors), pool.resubmitted)
    return {"rows": len(table), "points": len(tasks), "picks": picks, "files": files}
