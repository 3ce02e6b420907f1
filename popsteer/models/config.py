"""The recommender's typed configs: architecture (``SASRecConfig``) and training (``TrainConfig``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from popsteer.errors import PopSteerError
from popsteer.util.configs import CONFIG, DEFAULT_SEED, check_at_most, check_choices, check_seeds


@dataclass
class SASRecConfig:
    """SASRec architecture (docs/METHOD.md §1; RecBole's defaults for SASRec)."""

    __pydantic_config__ = CONFIG

    n_layers: int = 2
    """Transformer layers, in [1, 64]."""
    n_heads: int = 2
    """Attention heads per layer, in [1, 64]."""
    hidden_size: int = 64
    """Width d of the item embeddings and of the user representation x, in [1, 8192]."""
    inner_size: int = 256
    """Width of the feed-forward layer, in [1, 65536]."""
    hidden_dropout_prob: float = 0.5
    """In [0, 1)."""
    attn_dropout_prob: float = 0.5
    """In [0, 1)."""
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    """In (0, 1]."""
    initializer_range: float = 0.02
    """In (0, 10]."""
    max_len: int = 50
    """Maximum history length: a user's last max_len items are its input, in [1, 10000]."""

    def __post_init__(self) -> None:
        for name in ("n_layers", "n_heads", "hidden_size", "inner_size", "max_len"):
            if getattr(self, name) < 1:
                raise PopSteerError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("hidden_dropout_prob", "attn_dropout_prob"):
            if not 0 <= getattr(self, name) < 1:
                raise PopSteerError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("layer_norm_eps", "initializer_range"):
            if not getattr(self, name) > 0:
                raise PopSteerError(f"{name} must be > 0, got {getattr(self, name)}")
        check_at_most(self, {"n_layers": 64, "n_heads": 64, "hidden_size": 8192, "inner_size": 65536,
                             "layer_norm_eps": 1.0, "initializer_range": 10.0, "max_len": 10_000})
        if self.hidden_size % self.n_heads:
            raise PopSteerError(f"hidden_size {self.hidden_size} is not a multiple of n_heads {self.n_heads}")

    @classmethod
    def small(cls) -> "SASRecConfig":
        """The CI-sized SASRec: 1 layer, 1 head, hidden 32, inner 64, max length 20."""
        return cls(n_layers=1, n_heads=1, hidden_size=32, inner_size=64, max_len=20)


@dataclass
class TrainConfig:
    """How the recommender is trained."""

    __pydantic_config__ = CONFIG

    trainer: Literal["allpos", "recbole"] = "allpos"
    """allpos (fast, default): one forward per window, every position predicts its next item; recbole: RecBole's
    per-prefix trainer."""
    epochs: int = 200
    """Maximum number of epochs (early stopping on valid NDCG@10), in [1, 100000]."""
    learning_rate: float = 1e-3
    """Adam's (peak) learning rate, in (0, 1]."""
    batch_size: int = 4096
    """Training targets per batch (RecBole's train_batch_size), in [1, 1048576]; allpos packs windows up to this
    many targets."""
    stopping_step: int = 10
    """Early stopping patience (epochs) on valid NDCG@10, in [1, 100000]."""
    seed: int = DEFAULT_SEED
    """Seeds the weight init and the batch order, in [0, 2**32 - 2]."""
    stride: int = 25
    """allpos: windows of max_len inputs start every stride positions on long sequences (capped at max_len),
    in [1, 10000]."""
    time_budget_min: float | None = None
    """Stop training after this many minutes (the best epoch so far is kept), in (0, 1000000]."""
    eval_every: int = 1
    """Score valid every N epochs (and at the last one), in [1, 100000]."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """constant, or cosine: linear warm-up over `warmup` of training, then decay to 0 at the last epoch or at the
    time budget, whichever comes first."""
    warmup: float = 0.02
    """Fraction of training warming the learning rate up (cosine schedule only), in [0, 1)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """fp32, or bf16 autocast of the matmuls (faster on CPUs with AVX512-BF16/AMX; weights and optimizer stay fp32)."""
    device: str = "cpu"
    """cpu, cuda or cuda:N (allpos trainer)."""
    windows_per_user: int | None = None
    """allpos: each epoch trains on at most N random windows per user, drawn afresh each epoch (heavy users weigh
    less; every window is drawn over epochs); in [1, 100000]."""
    ema_decay: float | None = None
    """allpos: also keep an exponential moving average of the weights (decay per step, e.g. 0.999), score it on
    valid each epoch beside the raw weights and keep the best of all; in (0, 1)."""

    def __post_init__(self) -> None:
        check_choices(self)
        if not 0 <= self.warmup < 1:
            raise PopSteerError(f"warmup must be in [0, 1), got {self.warmup}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise PopSteerError(f"device must be cpu, cuda or cuda:N, got '{self.device}'")
        if self.windows_per_user is not None and self.windows_per_user < 1:
            raise PopSteerError(f"windows_per_user must be >= 1, got {self.windows_per_user}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise PopSteerError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        for name in ("windows_per_user", "ema_decay"):
            if getattr(self, name) is not None and self.trainer != "allpos":
                raise PopSteerError(f"{name} needs the allpos trainer")
        if self.device != "cpu" and self.trainer != "allpos":
            raise PopSteerError(f"device {self.device} needs the allpos trainer (RecBole's trainer runs on CPU here)")
        for name in ("epochs", "batch_size", "stopping_step", "stride", "eval_every"):
            if getattr(self, name) < 1:
                raise PopSteerError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise PopSteerError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.time_budget_min is not None and not self.time_budget_min > 0:
            raise PopSteerError(f"time_budget_min must be > 0 minutes, got {self.time_budget_min}")
        check_at_most(self, {"epochs": 100_000, "learning_rate": 1.0, "batch_size": 1 << 20, "stopping_step": 100_000,
                             "stride": 10_000, "time_budget_min": 1e6, "eval_every": 100_000,
                             "windows_per_user": 100_000})
        check_seeds(self, "seed")
