"""The pipeline's steps as functions of parsed CLI arguments (shared by ``popsteer`` and ``run.py``)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from popsteer.util import checkpoint
from popsteer.models.config import SASRecConfig, TrainConfig
from popsteer.data import load_dataset
from popsteer.errors import PopSteerError

log = logging.getLogger(__name__)

SMALL_SASREC = dict(n_layers=1, n_heads=1, hidden_size=32, inner_size=64, max_len=20)


def train_recommender(args: argparse.Namespace) -> dict:
    from popsteer.models.recbole_adapter import build_sasrec
    from popsteer.models.allpos import train_allpos
    from popsteer.models.encode import evaluate_model
    from popsteer.models.io import save_recommender
    from popsteer.models.recbole_trainer import train_recbole

    hp = SASRecConfig(**(SMALL_SASREC if getattr(args, "small", False) else {}))
    cfg = TrainConfig(trainer=args.trainer, epochs=args.epochs, learning_rate=args.learning_rate,
                      batch_size=args.batch_size, stopping_step=args.stopping_step, seed=args.seed,
                      stride=min(args.stride, hp.max_len), time_budget_min=args.time_budget_min,
                      **{f: getattr(args, f) for f in ("lr_schedule", "warmup", "precision", "device", "ema_decay",
                                                           "windows_per_user", "eval_every")
                         if hasattr(args, f)})  # callers that do not set them get TrainConfig's defaults
    if cfg.device != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise PopSteerError(f"--device {cfg.device}: no CUDA GPU is available on this machine")
    data = load_dataset(args.dataset, args.data_dir, max_len=hp.max_len)
    out = checkpoint.default_path(args.out_dir, f"SASRec-{checkpoint.seed_timestamp()}-{data.name}")
    t0 = time.perf_counter()
    if cfg.trainer == "allpos":
        import torch

        torch.manual_seed(cfg.seed)
        model, history = train_allpos(build_sasrec(data.n_items, hp), data, cfg)
    else:
        model, history = train_recbole(data, hp, cfg)
    minutes = (time.perf_counter() - t0) / 60
    valid = evaluate_model(model, data, "valid")
    test = evaluate_model(model, data, "test")
    kept = [r for r in history if "kept" in r]  # both trainers mark the epochs whose weights they kept
    if not kept:
        raise PopSteerError(f"no epoch of {len(history)} scored a finite valid NDCG@10 (diverged?); nothing saved")
    best = kept[-1]
    best_epoch, weights = best["epoch"], best.get("kept", "raw")
    save_recommender(out, model, data, hp, cfg, {"valid": valid, "test": test},
                     {"history": history, "train_minutes": minutes, "best_epoch": best_epoch, "best_weights": weights})
    log.info("best valid : %s", _fmt(valid))
    log.info("test result: %s", _fmt(test))
    log.info("saved %s", out)
    return {"checkpoint": str(out), "best_epoch": best_epoch, "best_weights": weights, "epochs": len(history), "train_minutes": round(minutes, 2),
            "best_valid": valid, "test_result": test}


def _fmt(metrics: dict) -> str:
    return "  ".join(f"{k}: {v:.4f}" for k, v in metrics.items())


def import_checkpoint(args: argparse.Namespace) -> dict:
    from popsteer.models.importer import import_recbole_checkpoint

    out = import_recbole_checkpoint(Path(args.path), args.dataset, Path(args.data_dir),
                                    Path(args.out) if args.out else None, args.trust_pickle,
                                    Path(args.reference_dir) if args.reference_dir else None)
    return {"checkpoint": str(out)}


def data(args: argparse.Namespace) -> dict:
    from popsteer.data.fetch import fetch_dataset

    if args.data_cmd == "fetch":
        return {"path": str(fetch_dataset(args.name, Path(args.data_dir), args.url))}
    raise PopSteerError(f"unknown data command {args.data_cmd}")


def train_sae(args: argparse.Namespace) -> dict:
    from popsteer.stages.sae_steps import train_sae_step

    return train_sae_step(args)


def analyze(args: argparse.Namespace) -> dict:
    from popsteer.stages.sae_steps import analyze_step

    return analyze_step(args)


def steer(args: argparse.Namespace) -> dict:
    from popsteer.stages.sae_steps import steer_step

    return steer_step(args)


def tune_steering(args: argparse.Namespace) -> dict:
    from popsteer.stages.sae_steps import tune_step

    return tune_step(args)


def _check_pipeline_flags(args: argparse.Namespace) -> None:
    """Refuse bad SAE / steering flags before hours of SASRec training, not after."""
    from popsteer.sae.model import SAEConfig
    from popsteer.steering.steer import check_strength

    hp = SASRecConfig(**(SMALL_SASREC if args.small else {}))
    cfg = SAEConfig(k=args.top_k, scale=args.scale, max_epochs=args.sae_epochs, min_epochs=min(50, args.sae_epochs))
    cfg.hidden(hp.hidden_size)
    check_strength(args.num_neurons, args.alpha)


def pipeline(args: argparse.Namespace) -> dict:
    """The whole seed pipeline on one dataset: SASRec -> SAE -> analysis -> steering -> tuned steering."""
    _check_pipeline_flags(args)
    common = {"data_dir": args.data_dir, "out_dir": args.out_dir, "verbose": args.verbose}
    rec = train_recommender(argparse.Namespace(
        dataset=args.dataset, trainer="allpos", epochs=args.epochs, learning_rate=1e-3, batch_size=4096,
        stopping_step=10, seed=args.seed, stride=25, time_budget_min=args.time_budget_min, small=args.small, **common))
    sae = train_sae(argparse.Namespace(pretrained_path=rec["checkpoint"], top_k=args.top_k, scale=args.scale,
                                       epochs=args.sae_epochs, min_epochs=min(50, args.sae_epochs),
                                       sasrec_train_mode=False, **common))
    sae_args = dict(pretrained_path=sae["checkpoint"], dataset=args.dataset, swap_sigma=False, **common)
    analysis = analyze(argparse.Namespace(seed=args.seed, **sae_args))
    n = analysis["n_neurons"]
    steered = steer(argparse.Namespace(num_neurons=min(args.num_neurons, n), alpha=args.alpha, split="test", **sae_args))
    tuned = tune_steering(argparse.Namespace(**sae_args))
    return {"recommender": rec["checkpoint"], "sae": sae["checkpoint"], "analysis": analysis["reports"],
            "steer_test": {k: steered[k] for k in ("sasrec", "sae", "popsteer")}, "tuned": tuned.get("pick")}
