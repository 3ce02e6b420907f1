"""Stage 1, recommender: train the base recommender (or import the authors' checkpoint) and save it.

The CLI calls ``train_recommender`` in this process; a sweep calls the same function in a
Ray task (``popsteer.platform.sweep``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from popsteer.data import check_catalog, load_dataset
from popsteer.errors import PopSteerError
from popsteer.models.encode import evaluate_model
from popsteer.models.io import save_recommender
from popsteer.models.registry import get_model
from popsteer.stages.config import ImportConfig, RecommenderConfig
from popsteer.util import checkpoint

log = logging.getLogger(__name__)


@dataclass
class RecommenderResult:
    checkpoint: str
    best_epoch: int
    best_weights: str
    """raw, or ema: the weight average scored best."""
    epochs: int
    train_minutes: float
    best_valid: dict
    test_result: dict
    history: list[dict] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        return {"checkpoint": self.checkpoint, "best_epoch": self.best_epoch, "best_weights": self.best_weights,
                "epochs": self.epochs, "train_minutes": round(self.train_minutes, 2), "best_valid": self.best_valid,
                "test_result": self.test_result}


def _fmt(metrics: dict) -> str:
    return "  ".join(f"{k}: {v:.4f}" for k, v in metrics.items())


def recommender_stem(dataset: str, model: str = "sasrec", tag: str = "", when: str | None = None) -> str:
    """The seed's file name: ``SASRec-<date>-<dataset>`` (``GRU4Rec-...`` for another model); ``tag``
    ('-2', ...) follows the date when that name is taken (``checkpoint.NewName``)."""
    return f"{get_model(model).recbole_class}-{when or checkpoint.seed_timestamp()}{tag}-{dataset}"


def train_recommender(cfg: RecommenderConfig, out: str | Path | None = None) -> RecommenderResult:
    """Train ``cfg.model`` on ``cfg.dataset`` and save it (default ``<out-dir>/SASRec-<date>-<dataset>.safetensors``)."""
    import torch

    from popsteer.models.allpos import train_allpos
    from popsteer.models.recbole_adapter import build_model
    from popsteer.models.recbole_trainer import train_recbole

    hp = cfg.architecture()
    train = cfg.train
    if train.stride > hp.max_len:
        train = dataclasses.replace(train, stride=hp.max_len)
    if train.device != "cpu" and not torch.cuda.is_available():
        raise PopSteerError(f"--device {train.device}: no CUDA GPU is available on this machine")
    data = check_catalog(load_dataset(cfg.dataset, cfg.where.data_dir, max_len=hp.max_len, cfg=cfg.data))
    when = checkpoint.seed_timestamp()  # the start, as RecBole names it
    target = Path(out) if out else checkpoint.NewName(Path(cfg.where.out_dir),
                                                      lambda tag: recommender_stem(data.name, cfg.model, tag, when))
    spec = get_model(cfg.model)
    if train.trainer not in spec.trainers:
        log.info("%s has no causal all-position outputs: trained by RecBole's own trainer", spec.recbole_class)
        train = dataclasses.replace(train, trainer="recbole")
    t0 = time.perf_counter()
    if train.trainer == "allpos":
        torch.manual_seed(train.seed)
        model, history = train_allpos(build_model(spec, data.n_items, hp), data, train)
    else:
        model, history = train_recbole(data, hp, train, cfg.model)
    minutes = (time.perf_counter() - t0) / 60
    valid, test = evaluate_model(model, data, "valid"), evaluate_model(model, data, "test")
    kept = [r for r in history if "kept" in r]  # both trainers mark the epochs whose weights they kept
    if not kept:
        raise PopSteerError(f"no epoch of {len(history)} scored a finite valid NDCG@10 (diverged?); nothing saved")
    best_epoch, weights = kept[-1]["epoch"], kept[-1].get("kept", "raw")
    out = save_recommender(target, model, data, hp, train, {"valid": valid, "test": test},
                           {"history": history, "train_minutes": minutes, "best_epoch": best_epoch,
                            "best_weights": weights})
    log.info("best valid : %s", _fmt(valid))
    log.info("test result: %s", _fmt(test))
    log.info("saved %s", out)
    return RecommenderResult(str(out), best_epoch, weights, len(history), minutes, valid, test, history)


def import_recommender(cfg: ImportConfig) -> Path:
    """Convert a foreign RecBole SASRec ``.pth`` (unpickled only with ``trust_pickle``) into a PopSteer checkpoint."""
    from popsteer.models.importer import import_recbole_checkpoint

    out = Path(cfg.out) if cfg.out else None
    return import_recbole_checkpoint(Path(cfg.path), cfg.dataset, Path(cfg.where.data_dir), out, cfg.trust_pickle,
                                     Path(cfg.reference_dir) if cfg.reference_dir else None, Path(cfg.where.out_dir),
                                     cfg.model)
