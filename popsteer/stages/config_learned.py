"""The typed config of learned steering (docs/METHOD.md §4b): the grid stage's ``GridConfig.learned``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from popsteer.errors import PopSteerError
from popsteer.util.configs import CONFIG, DEFAULT_SEED, check_choices, check_seeds

DEFAULT_LAMBDAS = (0.01, 0.03, 0.1, 0.3, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
"""Geometric over four decades: the useful range moves with the dataset (ml-100k's 40-epoch SAE: 0.1-3; Last.fm:
the exposure term starts to move the lists near 1.5)."""


@dataclass
class LearnedConfig:
    """Learned steering (docs/METHOD.md §4b): delta fitted on the training prefixes, one fit per lam."""

    __pydantic_config__ = CONFIG

    lambdas: list[float] = field(default_factory=lambda: list(DEFAULT_LAMBDAS))
    """Weights of the exposure-concentration term against the next-item cross-entropy; one grid point each."""
    surrogate: Literal["topk", "softmax"] = "topk"
    """The exposure-concentration surrogate: "topk", each row's soft top-10 membership (what Gini@10 counts), or
    "softmax", the whole softmax(scores / tau) (the first prototype's)."""
    tau: float = 0.1
    """Temperature of the surrogate, in (0, 10]: "topk", relative to each row's spread between its 1st and 11th
    score (smaller: closer to the hard top-10); "softmax", on the raw scores."""
    steps: int = 300
    """Adam steps per fit, in [1, 100000]."""
    batch_size: int = 1024
    """Training pairs per step, in [1, 65536]."""
    lr: float = 0.02
    """Adam learning rate, in (0, 1]."""
    l1: float = 0.0
    """L1 penalty on delta (fewer moved neurons), >= 0."""
    init: Literal["zero", "eq4"] = "zero"
    """Start from delta = 0, or from Eq. 4's delta at N = 4096, alpha = 1.5."""
    refine: int = 4
    """After the lambdas, this many more fits, each at the geometric middle of the two neighbouring lams whose
    fitted exposure concentration differs most (the grid follows where the trade-off moves), in [0, 44]."""
    seed: int = DEFAULT_SEED
    """Seeds the order of the training pairs, in [0, 2**32 - 2]."""

    def __post_init__(self) -> None:
        check_choices(self, "learned ")
        if not self.lambdas or not all(math.isfinite(v) and 0 <= v <= 1e6 for v in self.lambdas):
            raise PopSteerError(f"learned lambdas must be numbers in [0, 1e6], got {self.lambdas}")
        if len(set(self.lambdas)) != len(self.lambdas):
            raise PopSteerError(f"learned lambdas must differ from each other, got {self.lambdas}")
        for name, lo, hi in (("tau", 0, 10), ("lr", 0, 1)):
            v = getattr(self, name)
            if not (math.isfinite(v) and lo < v <= hi):
                raise PopSteerError(f"learned {name} must be in ({lo}, {hi}], got {v}")
        for name, hi in (("steps", 100_000), ("batch_size", 65_536)):
            if not 1 <= getattr(self, name) <= hi:
                raise PopSteerError(f"learned {name} must be in [1, {hi}], got {getattr(self, name)}")
        if not 0 <= self.refine <= 44 or len(self.lambdas) + self.refine > 56:
            raise PopSteerError(f"learned refine must be in [0, 44] with at most 56 points in all (lambdas + refine), "
                                f"got {self.refine} with {len(self.lambdas)} lambdas")
        if not (math.isfinite(self.l1) and self.l1 >= 0):
            raise PopSteerError(f"learned l1 must be a finite number >= 0, got {self.l1}")
        check_seeds(self, "seed", prefix="learned ")
