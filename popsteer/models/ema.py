"""An exponential moving average of a model's weights, scored beside the raw weights."""

from __future__ import annotations

from contextlib import contextmanager

import torch


class WeightEMA:
    """``ema = d * ema + (1 - d) * w`` after every optimizer step, for every floating parameter.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` over the first updates (n of
    them so far), so early averages are not dominated by the initial weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.params = [p for p in model.parameters() if p.dtype.is_floating_point]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - d)
        self.updates += 1

    @contextmanager
    def applied(self):
        """The model holds the averaged weights inside the block, its own weights again after it."""
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)
