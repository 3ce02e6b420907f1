"""SASRec: all-position training, RecBole's trainer as the baseline, our checkpoints."""

from __future__ import annotations

import copy
import datetime as _dt
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from popsteer.util import checkpoint
from popsteer.models.config import SASRecConfig, TrainConfig
from popsteer.data import SequenceData
from popsteer.models.ema import WeightEMA
from popsteer.errors import PopSteerError
from popsteer.eval.evaluator import Evaluator
from popsteer.models.fused_ce import linear_cross_entropy
from popsteer.util.progress import progress
from popsteer.models.recbole_adapter import build_sasrec, sequence_output

log = logging.getLogger(__name__)


def encode_users(model: torch.nn.Module, item_seq: np.ndarray, seq_len: np.ndarray, batch_size: int = 256,
                 train_mode: bool = False) -> torch.Tensor:
    """SASRec's user representation: last-layer output at ``seq_len - 1``, shape (U, d).

    ``train_mode`` keeps dropout active (the reference's quirk while training the SAE).
    """
    was_training = model.training
    model.train(train_mode)
    dev = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for s in range(0, len(item_seq), batch_size):
            seq = torch.as_tensor(item_seq[s : s + batch_size]).to(dev)
            ln = torch.as_tensor(seq_len[s : s + batch_size]).to(dev)
            out.append(model.forward(seq, ln).cpu())  # (B, d)
    model.train(was_training)
    return torch.cat(out)


def encode_prefixes(model: torch.nn.Module, data: SequenceData, stride: int = 10, batch_size: int = 512,
                    train_mode: bool = False) -> torch.Tensor:
    """The representation of every training prefix, from all-position passes over windows, (P, d).

    One row per training (prefix, target) pair, in (user, position) order. A prefix of at
    most ``max_len`` items is encoded exactly as RecBole would; a longer one sees the last
    ``max_len - stride + 1`` to ``max_len`` items (``stride=1``: exactly RecBole's last
    ``max_len`` items, at per-prefix cost). Costs about ``max_len / stride`` times less than
    encoding every prefix separately.
    """
    inputs, targets = data.train_windows(stride)
    return encode_windows(model, inputs, targets > 0, batch_size, train_mode)


def encode_windows(model: torch.nn.Module, windows: np.ndarray, take: np.ndarray, batch_size: int = 512,
                   train_mode: bool = False) -> torch.Tensor:
    """All-position passes over windows (W, L): the outputs at the ``take`` (W, L) positions, (P, d).

    Rows in (window, position) order; run on the model's device, returned on the CPU.
    """
    was_training = model.training
    model.train(train_mode)
    dev = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for s in progress(range(0, len(windows), batch_size), desc="encode prefixes", unit="batch", leave=False):
            seq_out = sequence_output(model, torch.as_tensor(windows[s : s + batch_size]).to(dev))  # (B, L, d)
            out.append(seq_out[torch.as_tensor(take[s : s + batch_size]).to(dev)].cpu())  # (P_b, d)
    model.train(was_training)
    return torch.cat(out)


def evaluate_model(model: torch.nn.Module, data: SequenceData, split: str, k: int = 10, **kw) -> dict[str, float]:
    seq, ln, _ = data.split(split)
    reps = encode_users(model, seq, ln)
    return Evaluator.for_split(data, split, k=k, **kw)(reps, model.item_embedding.weight.detach().cpu())


class FastDropout(torch.nn.Dropout):
    """``nn.Dropout`` with a cheaper mask than ``bernoulli_``, the same distribution.

    The same Bernoulli(1 - p) mask and 1 / (1 - p) scaling. When 1 - p is a multiple of 1/256
    (SASRec's p = 0.5) the mask is ``byte < 256 (1 - p)`` over uniform random bytes, drawn eight
    to a 64-bit integer (~3.5x cheaper than ``uniform < keep``, which is itself ~3.5x cheaper than
    ``bernoulli_`` on 2 CPU cores); otherwise ``uniform < keep``. No parameters, so the model's
    state_dict is unchanged; eval mode is the identity, as before.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return torch.zeros_like(x)  # as nn.Dropout (no 0 * inf)
        return x * (self.mask(x).to(x.dtype) * (1.0 / (1.0 - self.p)))

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """(x.shape) bool keep-mask, each element True with probability 1 - p, independently."""
        keep = 1.0 - self.p
        threshold = keep * 256
        if threshold != round(threshold):
            return torch.rand_like(x) < keep
        n = x.numel()
        words = torch.randint(-(2**63), 2**63 - 1, ((n + 7) // 8,), dtype=torch.int64, device=x.device)
        return words.view(torch.uint8)[:n].view(x.shape) < int(threshold)  # 8 uniform bytes per word


def use_fast_dropout(model: torch.nn.Module, cls: type[FastDropout] = FastDropout) -> torch.nn.Module:
    """Swap every ``nn.Dropout`` (or ``FastDropout``) inside ``model`` (RecBole's SASRec) for ``cls``; returns it."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is torch.nn.Dropout or isinstance(child, FastDropout):
                setattr(module, name, cls(child.p))
    return model


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


def train_recbole(data: SequenceData, hp: SASRecConfig, cfg: TrainConfig,
                  on_epoch: Callable[[int, dict], None] | None = None) -> tuple[torch.nn.Module, list[dict]]:
    """RecBole's own per-prefix trainer (one sample per prefix), scored by our evaluator."""
    from popsteer.models.recbole_adapter import RecBolePipeline

    pipe = RecBolePipeline(data.name, Path(data.source), hp, {
        "learning_rate": cfg.learning_rate, "train_batch_size": cfg.batch_size, "seed": cfg.seed})
    try:
        if not np.array_equal(pipe.item_tokens(), data.item_tokens):
            raise PopSteerError("RecBole's item ids differ from PopSteer's on this dataset")
        model = pipe.new_model()
        trainer = pipe.trainer(model)
        best, best_state, history, bad = -math.inf, copy.deepcopy(model.state_dict()), [], 0
        for epoch in progress(range(cfg.epochs), desc="SASRec (RecBole)", unit="epoch"):
            t0 = time.perf_counter()
            loss = pipe.train_epoch(trainer, epoch)
            row = {"epoch": epoch, "train_loss": loss / max(len(pipe.train_data), 1),
                   "train_seconds": time.perf_counter() - t0}
            row.update({f"valid_{k}": v for k, v in evaluate_model(model, data, "valid").items()})
            if row["valid_ndcg@10"] > best:
                best, best_state, bad = row["valid_ndcg@10"], copy.deepcopy(model.state_dict()), 0
                row["kept"] = "raw"
            else:
                bad += 1
            history.append(row)
            if on_epoch:
                on_epoch(epoch, row)
            if bad >= cfg.stopping_step:
                break
        model.load_state_dict(best_state)
        model.eval()
        return model, history
    finally:
        pipe.close()


def save_recommender(path: Path, model: torch.nn.Module, data: SequenceData, hp: SASRecConfig,
                     train: TrainConfig | None, metrics: dict | None = None, extra: dict | None = None) -> Path:
    meta = {
        "kind": "sasrec", "dataset": data.name, "n_items": data.n_items,
        "item_tokens": data.item_tokens.tolist(), "sasrec": asdict(hp),
        "train": asdict(train) if train else None, "metrics": metrics or {},
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    meta.update(extra or {})
    return checkpoint.save(path, model.state_dict(), meta)


def load_recommender(path: str | Path, data: SequenceData | None = None) -> tuple[torch.nn.Module, dict]:
    """Load a PopSteer SASRec checkpoint; with ``data``, check it belongs to that dataset."""
    tensors, meta = checkpoint.load(path, kind="sasrec")
    if data is not None:
        if meta["dataset"] != data.name:
            raise PopSteerError(f"{path} was trained on '{meta['dataset']}', not '{data.name}'")
        if meta["item_tokens"] != data.item_tokens.tolist():
            raise PopSteerError(f"{path}: its item ids do not match dataset '{data.name}' as loaded now")
    hp = SASRecConfig(**meta["sasrec"])
    model = build_sasrec(meta["n_items"], hp)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise PopSteerError(f"{path}: weights do not fit SASRec ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, meta
