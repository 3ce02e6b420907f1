"""All-position training of a sequential recommender: one forward pass per window, every position predicts its next item."""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Callable

import numpy as np
import torch

from popsteer.data import SequenceData
from popsteer.models.config import TrainConfig
from popsteer.models.dropout import use_fast_dropout
from popsteer.models.ema import WeightEMA
from popsteer.models.encode import evaluate_model
from popsteer.models.fused_ce import linear_cross_entropy
from popsteer.models.outputs import sequence_output
from popsteer.util.progress import progress

log = logging.getLogger(__name__)


def allpos_loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean full-softmax CE over every non-padding target position.

    Args:
        inputs, targets: (B, L) int64; target 0 = no loss at that position.
    """
    out = sequence_output(model, inputs)  # (B, L, d)
    sel = targets > 0
    return linear_cross_entropy(out[sel], model.item_embedding.weight, targets[sel])  # over (P, n_items) logits


def lr_factor(progress: float, schedule: str, warmup: float) -> float:
    """Multiplier of the peak learning rate at ``progress`` in [0, 1] of training."""
    if schedule == "constant":
        return 1.0
    if progress < warmup:
        return (progress + 1e-3) / (warmup + 1e-3)
    rest = min(1.0, (progress - warmup) / max(1e-9, 1.0 - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * rest))


def _windows_per_batch(targets: np.ndarray, batch_targets: int) -> int:
    """How many windows hold about ``batch_targets`` targets."""
    per_window = max(1.0, float((targets > 0).sum()) / len(targets))
    return max(1, int(round(batch_targets / per_window)))


def _window_batches(targets: np.ndarray, batch_targets: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Shuffled groups of windows holding about ``batch_targets`` targets each."""
    perm = torch.randperm(len(targets), generator=gen)
    return list(perm.split(_windows_per_batch(targets, batch_targets)))


def _epoch_windows(users: np.ndarray, per_user: int, gen: torch.Generator) -> np.ndarray:
    """Sorted indices of ``per_user`` random windows per user (all of a user's when fewer).

    Args:
        users: (W,) non-decreasing user index of each window.
    """
    keys = torch.rand(len(users), generator=gen, dtype=torch.float64).numpy()
    order = np.lexsort((keys, users))  # by user, random within a user
    first = np.searchsorted(users, users[order], side="left")  # users is sorted: group start
    rank = np.arange(len(users)) - first
    return np.sort(order[rank < per_user])


def _epoch_batches(targets: np.ndarray, users: np.ndarray, per_user: int | None, batch_targets: int,
                   gen: torch.Generator) -> list[torch.Tensor]:
    """One epoch's shuffled batches of window indices: over all windows, or ``per_user`` random ones per user."""
    if per_user is None:
        return _window_batches(targets, batch_targets, gen)
    chosen = torch.as_tensor(_epoch_windows(users, per_user, gen))
    return [chosen[b] for b in _window_batches(targets[chosen.numpy()], batch_targets, gen)]


def train_allpos(model: torch.nn.Module, data: SequenceData, cfg: TrainConfig,
                 on_epoch: Callable[[int, dict], None] | None = None) -> tuple[torch.nn.Module, list[dict]]:
    """Train RecBole's SASRec with one forward pass per window (all positions predict).

    Early-stops on valid NDCG@10 (patience ``cfg.stopping_step``) and returns the best model
    (with ``cfg.ema_decay``: the best of the raw and the averaged weights, ``kept`` in its history row).
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    dev = torch.device(cfg.device)
    use_fast_dropout(model).to(dev)
    inputs_np, targets_np = data.train_windows(cfg.stride)
    inputs, targets = torch.as_tensor(inputs_np).to(dev), torch.as_tensor(targets_np).to(dev)
    window_users = data.train_window_users(cfg.stride)
    log.info("all-position training: %d windows, %d targets", len(inputs), int((targets > 0).sum()))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    ema = WeightEMA(model, cfg.ema_decay) if cfg.ema_decay is not None else None
    best, best_state, history, bad = -math.inf, copy.deepcopy(model.state_dict()), [], 0
    budget_s = cfg.time_budget_min * 60 if cfg.time_budget_min is not None else math.inf
    per_epoch = len(targets_np) if cfg.windows_per_user is None else int(
        np.minimum(np.bincount(window_users), cfg.windows_per_user).sum())
    total_steps = cfg.epochs * math.ceil(per_epoch / _windows_per_batch(targets_np, cfg.batch_size))
    step = 0
    t_start = time.perf_counter()
    bar = progress(range(cfg.epochs), desc="SASRec", unit="epoch")  # ETA: to the epoch limit (early stop may end sooner)
    for epoch in bar:
        model.train()
        t0, total, n = time.perf_counter(), 0.0, 0
        batches = _epoch_batches(targets_np, window_users, cfg.windows_per_user, cfg.batch_size, gen)
        for idx in progress(batches, desc=f"epoch {epoch}", unit="batch", leave=False):
            done = max(step / total_steps, (time.perf_counter() - t_start) / budget_s)
            for group in opt.param_groups:
                group["lr"] = cfg.learning_rate * lr_factor(done, cfg.lr_schedule, cfg.warmup)
            idx = idx.to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                loss = allpos_loss(model, inputs[idx], targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update()
            total, n, step = total + float(loss.detach()), n + 1, step + 1
        row = {"epoch": epoch, "train_loss": total / max(n, 1), "train_seconds": time.perf_counter() - t0,
               "lr": opt.param_groups[0]["lr"]}
        out_of_time = time.perf_counter() - t_start >= budget_s  # then score this epoch even off the eval_every grid
        if (epoch + 1) % cfg.eval_every == 0 or epoch == cfg.epochs - 1 or out_of_time:
            row.update({f"valid_{k}": v for k, v in evaluate_model(model, data, "valid").items()})
            improved = False
            if row["valid_ndcg@10"] > best:
                best, best_state, improved = row["valid_ndcg@10"], copy.deepcopy(model.state_dict()), True
                row["kept"] = "raw"
            if ema is not None:
                with ema.applied():
                    row.update({f"ema_valid_{k}": v for k, v in evaluate_model(model, data, "valid").items()})
                    if row["ema_valid_ndcg@10"] > best:
                        best, best_state, improved = row["ema_valid_ndcg@10"], copy.deepcopy(model.state_dict()), True
                        row["kept"] = "ema"
            bad = 0 if improved else bad + 1
        row["elapsed_minutes"] = (time.perf_counter() - t_start) / 60
        history.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", best_ndcg=f"{best:.4f}")
        log.info("epoch %d loss %.4f valid ndcg@10 %s%s (%.1fs)", epoch, row["train_loss"],
                 f"{row.get('valid_ndcg@10', float('nan')):.4f}",
                 f", ema {row['ema_valid_ndcg@10']:.4f}" if "ema_valid_ndcg@10" in row else "", row["train_seconds"])
        if on_epoch:
            on_epoch(epoch, row)
        if bad >= cfg.stopping_step:
            log.info("early stop at epoch %d (best valid ndcg@10 %.4f)", epoch, best)
            break
        if row["elapsed_minutes"] >= budget_s / 60:  # also true whenever out_of_time was
            log.info("time budget of %.1f min reached at epoch %d", cfg.time_budget_min, epoch)
            break
    bar.close()
    model.load_state_dict(best_state)
    model.to("cpu").eval()
    return model, history
