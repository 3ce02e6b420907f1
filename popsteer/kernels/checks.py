"""Input checks shared by every TopK path (no triton import: the CPU paths and evaluator actors
use them, and importing triton costs ~0.15 s per process)."""

from __future__ import annotations

import torch
from torch import Tensor

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_topk_input(h: Tensor, k: int) -> None:
    """Raise ValueError/TypeError unless h is a contiguous (N, n) float tensor and 1 <= k <= n."""
    if h.dim() != 2:
        raise ValueError(f"h must be 2-D (N, n), got shape {tuple(h.shape)}")
    if h.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"h must be float32, bfloat16 or float16, got {h.dtype}")
    if not h.is_contiguous():
        raise ValueError("h must be contiguous")
    if not 1 <= k <= h.shape[1]:
        raise ValueError(f"k must be in [1, {h.shape[1]}], got {k}")
