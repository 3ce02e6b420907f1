"""Typed configurations. Each field's docstring-comment doubles as its meaning in ``--help``."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Literal

from popsteer.errors import PopSteerError


@dataclass
class SASRecConfig:
    """SASRec architecture (METHOD.md section 1; RecBole's defaults for SASRec)."""

    n_layers: int = 2
    n_heads: int = 2
    hidden_size: int = 64
    inner_size: int = 256
    hidden_dropout_prob: float = 0.5
    attn_dropout_prob: float = 0.5
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    max_len: int = 50

    def __post_init__(self) -> None:
        if self.hidden_size % self.n_heads:
            raise PopSteerError(f"hidden_size {self.hidden_size} is not a multiple of n_heads {self.n_heads}")


@dataclass
class TrainConfig:
    """How the recommender is trained."""

    trainer: Literal["allpos", "recbole"] = "allpos"
    """allpos: one forward per window, every position predicts its next item; recbole: RecBole's per-prefix trainer."""
    epochs: int = 200
    """Maximum number of epochs."""
    learning_rate: float = 1e-3
    batch_size: int = 4096
    """Training targets per batch (RecBole's train_batch_size); allpos packs windows up to this many targets."""
    stopping_step: int = 10
    """Early stopping patience on valid NDCG@10."""
    seed: int = 2020
    stride: int = 25
    """allpos: windows of max_len inputs start every `stride` positions on long sequences."""
    time_budget_min: float | None = None
    """Stop after this many minutes of training (the best epoch so far is kept)."""
    eval_every: int = 1
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """allpos: cosine = linear warm-up over `warmup` of training, then cosine decay to 0 at its end
    (the end is `epochs` or, when set, `time_budget_min`, whichever comes first)."""
    warmup: float = 0.02
    """Fraction of training spent warming the learning rate up (cosine schedule only)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """allpos: bf16 = autocast matmuls to bfloat16 (weights and optimizer stay fp32)."""
    device: str = "cpu"
    windows_per_user: int | None = None
    """allpos: each epoch trains on at most this many of a user's windows, drawn afresh at random
    every epoch (so every window is still drawn over epochs). Heavy users weigh less, as in the
    per-user metrics, and epochs get shorter. None: every window every epoch."""
    ema_decay: float | None = None
    """allpos: also keep an exponential moving average of the weights (decay per optimizer step,
    e.g. 0.999), score it on valid after every epoch beside the raw weights, and keep whichever
    of all those scored best."""

    def __post_init__(self) -> None:
        if self.trainer not in ("allpos", "recbole"):
            raise PopSteerError(f"unknown trainer '{self.trainer}': choose allpos or recbole")
        if self.lr_schedule not in ("constant", "cosine"):
            raise PopSteerError(f"unknown lr_schedule '{self.lr_schedule}': choose constant or cosine")
        if self.precision not in ("fp32", "bf16"):
            raise PopSteerError(f"unknown precision '{self.precision}': choose fp32 or bf16")
        if not 0 <= self.warmup < 1:
            raise PopSteerError(f"warmup must be in [0, 1), got {self.warmup}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise PopSteerError(f"device must be cpu, cuda or cuda:N, got '{self.device}'")
        if self.windows_per_user is not None and self.windows_per_user < 1:
            raise PopSteerError(f"windows_per_user must be >= 1, got {self.windows_per_user}")
        if self.windows_per_user is not None and self.trainer != "allpos":
            raise PopSteerError("windows_per_user needs the allpos trainer")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise PopSteerError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.ema_decay is not None and self.trainer != "allpos":
            raise PopSteerError("ema_decay needs the allpos trainer")
        if self.device != "cpu" and self.trainer != "allpos":
            raise PopSteerError(f"device {self.device} needs the allpos trainer (RecBole's trainer runs on CPU here)")
        for name in ("epochs", "batch_size", "stopping_step", "stride", "eval_every"):
            if getattr(self, name) < 1:
                raise PopSteerError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise PopSteerError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.time_budget_min is not None and not self.time_budget_min > 0:
            raise PopSteerError(f"time_budget_min must be > 0 minutes, got {self.time_budget_min}")


def to_dict(cfg) -> dict:
    return asdict(cfg)


def from_dict(cls, values: dict):
    """Build a dataclass from a dict, refusing unknown keys with a clear message."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PopSteerError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}")
    return cls(**values)
