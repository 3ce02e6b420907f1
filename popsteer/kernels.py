"""Triton kernel for the SAE activation ``TopK(ReLU(h), k)``, with its autograd Function.

Ties: each entry is ranked by one int64 key, ``bits(relu(h)) << 32 | (BLOCK - 1 - col)``.
For non-negative fp32 values the IEEE bit pattern orders like the value, so the key orders
by value, then by LOWER column first among equal values; ``popsteer.topk``'s eager path
ranks by the same key, so both paths keep the same latents in the same order.
ReLU is ``where(h > 0, h, 0)``: -0.0 and NaN count as 0.

Triton is optional: without it (or on a CPU-only machine) this module still imports and
``TRITON_AVAILABLE`` tells whether the kernel exists. On CPU the kernel runs only under
``TRITON_INTERPRET=1``, which must be set before this module is imported.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

try:  # optional: the eager path in popsteer.topk needs none of this
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is a declared dependency
    triton = None
    tl = None

TRITON_AVAILABLE = triton is not None
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


if TRITON_AVAILABLE:

    @triton.jit
    def _topk_relu_kernel(
        h_ptr,  # (N, n) input pre-activations, row-major
        val_ptr,  # (N, k) out: kept values, h's dtype
        idx_ptr,  # (N, k) out: kept columns, int64
        n,  # row width
        k,  # how many to keep
        stride_h,  # row stride of h
        stride_out,  # row stride of the outputs
        BLOCK_N: tl.constexpr,  # next power of two >= n
        K_PAD: tl.constexpr,  # next power of two >= k (<= BLOCK_N)
    ):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK_N)  # (BLOCK_N,)
        in_row = cols < n
        h = tl.load(h_ptr + row * stride_h + cols, mask=in_row, other=0.0).to(tl.float32)
        v = tl.where(h > 0, h, 0.0)  # ReLU; -0.0 and NaN -> +0.0
        bits = v.to(tl.int32, bitcast=True).to(tl.int64)  # >= 0, monotone in v
        key = (bits << 32) | (BLOCK_N - 1 - cols).to(tl.int64)  # lower column wins ties
        key = tl.where(in_row, key, -1)  # padding ranks below every real entry
        top = tl.topk(key, K_PAD)  # (K_PAD,) keys, largest first
        hi = top >> 32
        col = BLOCK_N - 1 - (top - (hi << 32))
        val = hi.to(tl.int32).to(tl.float32, bitcast=True)
        offs = tl.arange(0, K_PAD)
        keep = offs < k
        tl.store(val_ptr + row * stride_out + offs, val.to(val_ptr.dtype.element_ty), mask=keep)
        tl.store(idx_ptr + row * stride_out + offs, col, mask=keep)


def _next_pow2(x: int) -> int:
    return 1 << max(x - 1, 0).bit_length()


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


def triton_topk_relu(h: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k largest of ReLU(h) per row, largest first, lower column first among ties.

    h: (N, n) contiguous float32/bfloat16/float16. Returns values (N, k) in h's dtype and
    indices (N, k) int64. No autograd: use ``TopKReLU.apply``.
    """
    check_topk_input(h, k)
    if not TRITON_AVAILABLE:
        raise RuntimeError("triton is not installed")
    N, n = h.shape
    values = torch.empty((N, k), dtype=h.dtype, device=h.device)  # (N, k)
    indices = torch.empty((N, k), dtype=torch.int64, device=h.device)  # (N, k)
    if N == 0:
        return values, indices
    # Both at least 2: tl.topk with k = 1 fails in Triton < 3.9 (padding keys are never kept).
    block_n = max(_next_pow2(n), 2)
    k_pad = max(_next_pow2(k), 2)
    num_warps = 8 if block_n >= 2048 else 4
    _topk_relu_kernel[(N,)](
        h, values, indices, n, k, h.stride(0), values.stride(0),
        BLOCK_N=block_n, K_PAD=k_pad, num_warps=num_warps,
    )
    return values, indices


class TopKReLU(torch.autograd.Function):
    """Autograd wrapper of ``triton_topk_relu``: h (N, n) -> (values (N, k), indices (N, k)).

    Backward scatters the values' gradient to the kept columns of h; a kept value that is
    0 after ReLU gets gradient 0 (torch's ReLU gradient at 0), every other column gets 0.
    """

    @staticmethod
    def forward(ctx, h: Tensor, k: int) -> tuple[Tensor, Tensor]:
        values, indices = triton_topk_relu(h, k)
        ctx.save_for_backward(values, indices)
        ctx.h_shape = h.shape
        ctx.mark_non_differentiable(indices)
        return values, indices

    @staticmethod
    def backward(ctx, grad_values: Tensor, grad_indices: Tensor | None) -> tuple[Tensor, None]:
        values, indices = ctx.saved_tensors
        grad = torch.where(values > 0, grad_values, torch.zeros_like(grad_values))  # (N, k)
        grad_h = grad.new_zeros(ctx.h_shape).scatter_(1, indices, grad)  # (N, n)
        return grad_h, None
