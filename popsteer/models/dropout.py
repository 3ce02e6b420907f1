"""A cheaper dropout mask for SASRec training (same distribution as ``nn.Dropout``)."""

from __future__ import annotations

import torch


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
