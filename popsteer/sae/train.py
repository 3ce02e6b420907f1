"""Training loop and report for the TopK SAE (docs/METHOD.md §2).

Adam; ReduceLROnPlateau and early stopping both on the validation loss
``valid FVU + valid AuxK / 32`` (early stopping maximises its negative, never before
``min_epochs``); the best epoch's weights are returned. A latent is dead for epoch t when
it did not fire (a value > 0 after TopK) on any training input of epoch t - 1; in the
first epoch none is dead, so AuxK is 0. The validation AuxK uses the latents dead after
the epoch just trained (the ones the next epoch's AuxK will use).

The training rows come from a row source (``popsteer.sae.stream``): a tensor held in memory
(``TensorRows``, what a tensor argument becomes) or an encoded part streamed from Parquet
(``ParquetRows``); the validation rows are always a tensor in memory.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor

from popsteer.errors import PopSteerError
from popsteer.util.progress import EpochLog, progress
from popsteer.sae.model import SAEConfig, TopKSAE
from popsteer.sae import sparse_step
from popsteer.sae.resume import TrainState, load_state, save_state
from popsteer.sae.stream import ParquetRows, TensorRows, batch_indices

TrainRows = TensorRows | ParquetRows
"""A source of the training rows: ``rows``, ``d``, ``device`` and ``batches(batch_size, gen)``."""

logger = logging.getLogger(__name__)


def _check_inputs(x_train: Tensor | TrainRows, x_valid: Tensor) -> TrainRows:
    """The training rows as a row source, after checking both inputs."""
    for name, x in (("x_train", x_train), ("x_valid", x_valid)):
        if isinstance(x, Tensor) and (x.dim() != 2 or not x.is_floating_point()):
            raise PopSteerError(f"{name} must be a 2-D float tensor (N, d), got {tuple(x.shape)} {x.dtype}")
    train = TensorRows(x_train) if isinstance(x_train, Tensor) else x_train
    for name, rows in (("x_train", train.rows), ("x_valid", x_valid.shape[0])):
        if rows < 2:
            raise PopSteerError(f"{name} needs at least 2 rows (FVU divides by their variance), got {rows}")
    if train.d != x_valid.shape[1]:
        raise PopSteerError(f"x_train has d={train.d} but x_valid has d={x_valid.shape[1]}")
    return train


def _train_epoch(
    sae: TopKSAE, opt: torch.optim.Optimizer, x: TrainRows, dead: Tensor, k_aux: int, gen: torch.Generator
) -> tuple[float, float, Tensor]:
    """One pass over the rows of x (N rows). Returns (mean loss, mean FVU, fired (n,) bool)."""
    sae.train()
    fired = torch.zeros(sae.n, dtype=torch.bool, device=x.device)  # (n,)
    loss_sum = fvu_sum = 0.0
    scratch = None  # h's buffer, reused by the sparse step
    for xb in x.batches(sae.cfg.batch_size, gen):  # (B, d)
        opt.zero_grad(set_to_none=True)
        if sparse_step.applies(sae, xb):  # the same loss and gradients without the dense code
            if scratch is None:
                scratch = torch.empty((len(xb), sae.n))  # the first batch is the largest (stream.batch_sizes)
            loss, f, _, fired_b = sparse_step.loss_and_grads(sae, xb, dead, k_aux, scratch)
        else:
            loss_t, f_t, _, z = sae.loss(xb, dead, k_aux)  # z: (B, n)
            loss_t.backward()
            loss, f, fired_b = loss_t.item(), f_t.item(), (z > 0).any(0)
        opt.step()
        fired |= fired_b
        loss_sum += loss * len(xb)
        fvu_sum += f * len(xb)
    return loss_sum / x.rows, fvu_sum / x.rows, fired


@torch.no_grad()
def evaluate_losses(sae: TopKSAE, x: Tensor, dead: Tensor, k_aux: int, batch_size: int = 4096) -> tuple[float, float]:
    """(FVU, AuxK) over the whole of x (N, d), both normalised by x's variance around its mean."""
    sae.eval()
    total_var = (x.double() - x.double().mean(0)).pow(2).sum().item()
    sse = aux_sse = 0.0
    for idx in batch_indices(x.shape[0], batch_size, None, x.device):
        xb = x[idx]  # (B, d)
        x_hat, h, _ = sae(xb)
        sse += (x_hat - xb).double().pow(2).sum().item()
        aux_sse += sae.auxk_sse(xb, x_hat, h, dead, k_aux).item()
    return sse / total_var, aux_sse / total_var


def fit_sae(
    x_train: Tensor | TrainRows,
    x_valid: Tensor,
    cfg: SAEConfig,
    on_epoch: Callable[[int, dict], None] | None = None,
    state_path: Path | None = None,
    save_every_s: float = 30.0,
) -> tuple[TopKSAE, list[dict]]:
    """Train a TopK SAE on x_train (N, d) or a row source, validating on x_valid (M, d); both on one device.

    Returns the SAE with the best epoch's weights (on x_train's device) and one history
    dict per epoch: epoch, train_loss, train_fvu, valid_fvu, valid_auxk, valid_loss,
    dead_fraction (latents that never fired in the epoch), lr (used in the epoch), seconds.
    ``on_epoch(epoch, record)`` is called after each epoch. ``state_path``: the trainer's state
    is written there after an epoch, at most every ``save_every_s`` seconds, and a run that finds
    one written for the same config and input continues from it (``popsteer.sae.resume``).
    """
    x_train = _check_inputs(x_train, x_valid)
    d = x_train.d
    sae = TopKSAE(d, cfg).to(x_train.device)
    k_aux = cfg.resolved_aux_k(d)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience)
    gen = torch.Generator().manual_seed(cfg.seed)
    dead = torch.zeros(sae.n, dtype=torch.bool, device=x_train.device)  # (n,) no previous epoch yet
    best_score, best_epoch, best_state, stale = -math.inf, 0, None, 0
    history: list[dict] = []
    fingerprint = {"cfg": asdict(cfg), "train_rows": x_train.rows, "valid_rows": len(x_valid), "d": d}
    state = None if state_path is None else load_state(state_path, fingerprint, x_train.device)
    if state is not None:
        sae.load_state_dict(state.sae)
        opt.load_state_dict(state.opt)
        sched.load_state_dict(state.sched)
        gen.set_state(state.gen)
        dead, best_state, history = state.dead, state.best, state.history
        best_score, best_epoch, stale = state.best_score, state.best_epoch, state.stale
        logger.info("SAE: continuing after epoch %d from %s", state.epoch, state_path)
    first = 1 if state is None else state.epoch + 1
    logger.info("SAE: d=%d n=%d k=%d k_aux=%d, %d train / %d valid rows", d, sae.n, cfg.k, k_aux, x_train.rows, len(x_valid))
    bar = progress(range(first, cfg.max_epochs + 1), desc="SAE", unit="epoch")  # ETA to max_epochs (early stop may end sooner)
    heartbeat = EpochLog(logger, "SAE", cfg.max_epochs)
    t_begin = time.perf_counter() - (0.0 if state is None else state.elapsed_s)
    t_saved = time.perf_counter()
    for epoch in bar:
        start = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        train_loss, train_fvu, fired = _train_epoch(sae, opt, x_train, dead, k_aux, gen)
        dead = ~fired
        valid_fvu, valid_auxk = evaluate_losses(sae, x_valid, dead, k_aux, cfg.batch_size)
        valid_loss = valid_fvu + valid_auxk / 32
        sched.step(valid_loss)
        record = {
            "epoch": epoch, "train_loss": train_loss, "train_fvu": train_fvu, "valid_fvu": valid_fvu,
            "valid_auxk": valid_auxk, "valid_loss": valid_loss, "dead_fraction": dead.float().mean().item(),
            "lr": lr, "seconds": time.perf_counter() - start,
        }
        history.append(record)
        bar.set_postfix(valid_fvu=f"{valid_fvu:.4f}", dead=f"{record['dead_fraction']:.3f}")
        heartbeat.epoch(epoch, train_loss=train_loss, valid_fvu=valid_fvu, valid_loss=valid_loss,
                        dead=record["dead_fraction"])
        if on_epoch is not None:
            on_epoch(epoch, record)
        if -valid_loss > best_score:
            best_score, best_epoch, stale = -valid_loss, epoch, 0
            best_state = {name: t.detach().clone() for name, t in sae.state_dict().items()}
        else:
            stale += 1
        if stale >= cfg.patience and epoch >= cfg.min_epochs:
            logger.info("SAE: early stop at epoch %d (no improvement for %d epochs)", epoch, stale)
            break
        if cfg.time_budget_min is not None and time.perf_counter() - t_begin >= 60 * cfg.time_budget_min:
            logger.info("SAE: time budget of %.1f min reached at epoch %d", cfg.time_budget_min, epoch)
            break
        if state_path is not None and time.perf_counter() - t_saved >= save_every_s:
            save_state(state_path, TrainState(epoch, sae.state_dict(), best_state, opt.state_dict(), sched.state_dict(),
                                              gen.get_state(), dead, best_score, best_epoch, stale, history,
                                              time.perf_counter() - t_begin), fingerprint)
            t_saved = time.perf_counter()
    bar.close()
    if best_state is not None:
        sae.load_state_dict(best_state)
    logger.info("SAE: best epoch %d, valid FVU %.4f", best_epoch, history[best_epoch - 1]["valid_fvu"] if best_epoch else math.nan)
    return sae.eval(), history


@torch.no_grad()
def sae_report(sae: TopKSAE, x: Tensor, batch_size: int = 4096) -> dict:
    """Quality of sae on x (N, d): fvu (over all of x), dead_fraction (latents that fire on
    no row of x), cosine (mean cosine similarity of x_hat and x rows)."""
    if x.dim() != 2 or x.shape[0] < 2:
        raise PopSteerError(f"sae_report needs a (N >= 2, d) tensor, got {tuple(x.shape)}")
    sae.eval()
    x = x.to(sae.W_enc.device)
    fired = torch.zeros(sae.n, dtype=torch.bool, device=x.device)  # (n,)
    sse = cos_sum = 0.0
    for idx in batch_indices(x.shape[0], batch_size, None, x.device):
        xb = x[idx]  # (B, d)
        x_hat, _, z = sae(xb)
        fired |= (z > 0).any(0)
        sse += (x_hat - xb).double().pow(2).sum().item()
        cos_sum += torch.nn.functional.cosine_similarity(x_hat, xb, dim=1).double().sum().item()
    total_var = (x.double() - x.double().mean(0)).pow(2).sum().item()
    return {
        "fvu": sse / total_var,
        "dead_fraction": 1.0 - fired.float().mean().item(),
        "cosine": cos_sum / x.shape[0],
    }
