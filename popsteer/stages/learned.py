"""Learned steering's deltas for an SAE: one fitted pre-activation shift per trade-off weight lam.

``learned_deltas`` fits (``popsteer.steering.learned.fit_delta``) the delta of every lam of a
``LearnedConfig`` on the base recommender's training prefixes and keeps them in the SAE's results
folder (``learned_deltas.safetensors``, its identity in ``learned_deltas.json``, written last), so
the grid, the report and the serving side read the same deltas. A fitter runs the fits: in this
process (``LocalFitter``), or one Ray Tune trial per lam on the platform
(``popsteer.platform.learned``); both call ``fit_one``, and a fit runs single-threaded, so the
deltas, and the grid rows after them, are the same bits on either executor.

Training pairs: a sequential model's encoded ``train`` part has one row per training (prefix, target)
pair (``popsteer.stages.encode.part_inputs``); its targets come from the same windows. A general model
(LightGCN) has one x per user; every training interaction of the user is a pair with that x.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from popsteer.errors import PopSteerError
from popsteer.stages.config import LearnedConfig
from popsteer.stages.context import SAEContext
from popsteer.stages.encode import training_parts
from popsteer.stages.encoded import Encodings, Part
from popsteer.steering.learned import FitSettings, fit_delta
from popsteer.util import checkpoint
from popsteer.util.atomic import atomic_path, write_text

log = logging.getLogger(__name__)

DELTAS_FILE, IDENTITY_FILE = "learned_deltas.safetensors", "learned_deltas.json"
FORMAT = 1


def training_pairs(ctx: SAEContext, encodings: Encodings | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The fit's inputs: x (N, d) float32 and the next item (N,) int64 of every training pair."""
    base, data = ctx.base, ctx.data
    # imported vectors give no next item per training row: each user's valid x, as a general model's
    part = Part("valid") if base.model.imported else training_parts(base.encode, data.max_len)[0]
    if encodings is None or encodings.manifest(part) is None:
        encodings = base.encodings([part])
    x = encodings.read(part)  # (rows, d)
    if base.model.transductive:  # one x per user: pair it with each of the user's training items
        starts, ends = data.offsets[:-1], data.offsets[1:] - 2
        users = np.repeat(np.arange(data.n_users), np.maximum(ends - starts, 0))
        items = np.concatenate([data.items[s:e] for s, e in zip(starts, ends)])
        return torch.from_numpy(x[users]), torch.from_numpy(items.astype(np.int64))
    if base.model.all_positions:
        targets = data.train_windows(part.stride)[1]
        targets = targets[targets > 0]
    else:
        targets = data.train_prefix_pairs()[2]
    if len(targets) != len(x):
        raise PopSteerError(f"{encodings.folder}: the training part has {len(x)} rows, its pairs {len(targets)}")
    return torch.from_numpy(x), torch.from_numpy(targets.astype(np.int64))


def settings_of(cfg: LearnedConfig) -> FitSettings:
    return FitSettings(tau=cfg.tau, surrogate=cfg.surrogate, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, l1=cfg.l1, seed=cfg.seed)


def init_delta(ctx: SAEContext, cfg: LearnedConfig) -> torch.Tensor | None:
    """Where a fit starts: zeros, or Eq. 4's delta at the paper's defaults (``init="eq4"``)."""
    if cfg.init == "zero":
        return None
    from popsteer.steering.steer import DEFAULT_ALPHA, DEFAULT_NUM_NEURONS, steering_delta

    return steering_delta(ctx.scores(), min(DEFAULT_NUM_NEURONS, ctx.sae.n), DEFAULT_ALPHA)


def fit_one(ctx: SAEContext, cfg: LearnedConfig, lam: float, pairs: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """One lam's fit: {"lam", "delta" (n,) float32 numpy, "history", "seconds"}."""
    table = ctx.base.table
    res = fit_delta(ctx.sae, pairs[0], pairs[1], table.emb, lam, settings_of(cfg), bias=table.bias,
                    init=init_delta(ctx, cfg))
    return {"lam": float(lam), "delta": res.delta.numpy(), "history": res.history, "seconds": res.seconds}


class Fitter(Protocol):
    def fit(self, ctx: SAEContext, cfg: LearnedConfig, lams: list[float], encodings: Encodings | None) -> list[dict]:
        """``fit_one``'s result for every lam, in the order given."""


class LocalFitter:
    """Every lam in this process, one after the other (``chunk = 1``: each fit is kept as soon as it is done,
    so a killed run loses at most one)."""

    chunk = 1

    def __init__(self) -> None:
        self._pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # SAE path -> its training pairs, read once

    def fit(self, ctx: SAEContext, cfg: LearnedConfig, lams: list[float], encodings: Encodings | None) -> list[dict]:
        key = str(ctx.path)
        if key not in self._pairs:
            self._pairs = {key: training_pairs(ctx, encodings)}
        return [fit_one(ctx, cfg, lam, self._pairs[key]) for lam in lams]


def identity(ctx: SAEContext, cfg: LearnedConfig) -> dict:
    """What the deltas depend on: the SAE (its hash pins the base), the settings and the training part."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("lambdas", "refine")}  # one fit per lam
    return {"format": FORMAT, "sae_sha256": checkpoint.file_sha256(ctx.path), "settings": settings,
            "prefix_stride": ctx.base.encode.prefix_stride, "train_mode": ctx.base.encode.sasrec_train_mode}


def _cached(folder: Path, ident: dict, n: int) -> dict[float, dict] | None:
    """lam -> {"delta", "history", "seconds"} of the folder's deltas when they are this identity's and sound
    (n finite values each); None otherwise (the deltas are then fitted again and the files rewritten)."""
    try:
        saved = json.loads((folder / IDENTITY_FILE).read_text())
        if not isinstance(saved, dict) or saved.get("identity") != ident or not isinstance(saved.get("fits"), list):
            return None
        tensors = load_file(folder / DELTAS_FILE)
        out = {}
        for i, f in enumerate(saved["fits"]):
            delta = tensors[f"lam_{i}"]
            if tuple(delta.shape) != (n,) or not bool(torch.isfinite(delta).all()):
                return None
            out[float(f["lam"])] = {"delta": delta.numpy(), "history": list(f["history"]), "seconds": float(f["seconds"])}
        return out
    except (OSError, ValueError, KeyError, TypeError, SafetensorError):
        log.warning("%s: unreadable or another SAE's learned deltas; fitting them again", folder / IDENTITY_FILE)
        return None


def learned_deltas(ctx: SAEContext, cfg: LearnedConfig, encodings: Encodings | None = None,
                   fitter: Fitter | None = None, write: bool = True) -> tuple[torch.Tensor, list[dict]]:
    """The delta of every lam of the learned grid ((P, n) float32, lams increasing) and the fits' records
    ({"lam", "history", "seconds"}): ``cfg.lambdas``, then ``cfg.refine`` lams added where the fitted
    exposure concentration moves most between two neighbours (``refined_lams``). Fits found in the SAE's
    folder under the same identity are reused; the rest are fitted by ``fitter`` (default: ``LocalFitter``)
    and the folder's file rewritten with every fit it now knows (deltas first, identity last)."""
    folder, ident = ctx.results_dir, identity(ctx, cfg)
    known = _cached(folder, ident, ctx.sae.n) or {}  # a file of other settings is replaced
    fitter = fitter or LocalFitter()

    def ensure(lams: list[float]) -> None:
        todo = [float(v) for v in lams if float(v) not in known]
        if not todo:
            return
        log.info("learned steering: fitting %d delta(s) (lam %s) on the training pairs", len(todo),
                 ", ".join(f"{v:g}" for v in todo))
        step = getattr(fitter, "chunk", None) or len(todo)  # the platform's Tune trials run all at once
        for i in range(0, len(todo), step):
            for fit in fitter.fit(ctx, cfg, todo[i : i + step], encodings):
                known[fit["lam"]] = fit
            if write:
                _save(folder, ident, known)

    lams = sorted({float(v) for v in cfg.lambdas})
    ensure(lams)
    for _ in range(cfg.refine):
        new = refined_lam(lams, [known[v]["history"][-1]["concentration"] for v in lams])
        if new is None:
            break
        ensure([new])
        lams = sorted({*lams, new})
    fits = [{"lam": lam, **{k: known[lam][k] for k in ("history", "seconds")}} for lam in lams]
    deltas = torch.stack([torch.as_tensor(known[lam]["delta"], dtype=torch.float32) for lam in lams])
    return deltas, fits


def refined_lam(lams: list[float], concentration: list[float]) -> float | None:
    """The geometric middle of the two neighbouring lams (increasing) whose fitted exposure concentrations
    differ most; None when none differ or the pair is already within 5% of each other."""
    gaps = [abs(concentration[i + 1] - concentration[i]) for i in range(len(lams) - 1)]
    if not gaps or max(gaps) == 0:
        return None
    i = max(range(len(gaps)), key=gaps.__getitem__)
    lo, hi = lams[i], lams[i + 1]
    if lo <= 0 or hi / lo < 1.05:
        return None if lo > 0 else (hi / 2 if hi > 0 else None)
    return float(round((lo * hi) ** 0.5, 6))


def _save(folder: Path, ident: dict, known: dict[float, dict]) -> None:
    lams = sorted(known)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / DELTAS_FILE) as tmp:
        save_file({f"lam_{i}": torch.as_tensor(known[lam]["delta"], dtype=torch.float32).contiguous()
                   for i, lam in enumerate(lams)}, str(tmp))
    fits = [{"lam": lam, "history": known[lam]["history"], "seconds": known[lam]["seconds"]} for lam in lams]
    write_text(folder / IDENTITY_FILE, json.dumps({"identity": ident, "fits": fits}, indent=2))
