"""RecBole's own per-prefix trainer (the baseline ``--trainer recbole``), scored by PopSteer's evaluator."""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from popsteer.data import SequenceData
from popsteer.errors import PopSteerError
from popsteer.models.config import TrainConfig
from popsteer.models.encode import evaluate_model
from popsteer.util.progress import progress

log = logging.getLogger(__name__)


def train_recbole(data: SequenceData, hp, cfg: TrainConfig, model: str = "sasrec",
                  on_epoch: Callable[[int, dict], None] | None = None) -> tuple[torch.nn.Module, list[dict]]:
    """RecBole's own trainer (one sample per prefix; BERT4Rec: its masked-item task), scored by our
    evaluator after every epoch; early stopping on valid NDCG@10, and the time budget, as the
    all-position trainer."""
    from popsteer.models.recbole_adapter import RecBolePipeline

    pipe = RecBolePipeline(data.name, Path(data.source), hp, {
        "learning_rate": cfg.learning_rate, "train_batch_size": cfg.batch_size, "seed": cfg.seed}, data.config, model)
    try:
        if not np.array_equal(pipe.item_tokens(), data.item_tokens):
            raise PopSteerError("RecBole's item ids differ from PopSteer's on this dataset")
        model = pipe.new_model()
        trainer = pipe.trainer(model)

        def scored() -> torch.nn.Module:  # what PopSteer scores: a general model's propagated tables
            return pipe.user_table(model, data.user_tokens) if pipe.spec.general else model

        best, best_state, history, bad = -math.inf, copy.deepcopy(model.state_dict()), [], 0
        start = time.perf_counter()
        for epoch in progress(range(cfg.epochs), desc=f"{pipe.spec.recbole_class} (RecBole)", unit="epoch"):
            t0 = time.perf_counter()
            loss = pipe.train_epoch(trainer, epoch)
            row = {"epoch": epoch, "train_loss": loss / max(len(pipe.train_data), 1),
                   "train_seconds": time.perf_counter() - t0}
            row.update({f"valid_{k}": v for k, v in evaluate_model(scored(), data, "valid").items()})
            if row["valid_ndcg@10"] > best:
                best, best_state, bad = row["valid_ndcg@10"], copy.deepcopy(model.state_dict()), 0
                row["kept"] = "raw"
            else:
                bad += 1
            history.append(row)
            log.info("%s (RecBole's trainer) epoch %d loss %.4f valid ndcg@10 %.4f (%.1fs)", pipe.spec.recbole_class,
                     epoch, row["train_loss"], row["valid_ndcg@10"], row["train_seconds"])
            if on_epoch:
                on_epoch(epoch, row)
            if bad >= cfg.stopping_step:
                break
            if cfg.time_budget_min is not None and time.perf_counter() - start > 60 * cfg.time_budget_min:
                break
        model.load_state_dict(best_state)
        model.eval()
        return scored().eval(), history
    finally:
        pipe.close()
