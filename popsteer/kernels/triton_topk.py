"""Triton kernel for the SAE activation ``TopK(ReLU(h), k)``, with its autograd Function.

Ties: each entry is ranked by one int64 key, ``bits(relu(h)) << 32 | (BLOCK - 1 - col)``.
For non-negative fp32 values the IEEE bit pattern orders like the value, so the key orders
by value, then by LOWER column first among equal values; ``popsteer.sae.topk``'s eager path
ranks by the same key, so both paths keep the same latents in the same order.

The kernel never sorts a whole row (an earlier version ran ``tl.topk`` over all n keys and
was no faster than ``torch.topk``): it bisects for the k-th value's bit pattern with
counting passes over the row held in registers, then sorts only the k kept keys.
ReLU is ``where(h > 0, h, 0)``: -0.0 and NaN count as 0.

Triton is optional: without it (or on a CPU-only machine) this module still imports and
``TRITON_AVAILABLE`` tells whether the kernel exists. On CPU the kernel runs only under
``TRITON_INTERPRET=1``, which must be set before this module is imported.
"""

from __future__ import annotations

import torch
from torch import Tensor

from popsteer.kernels.checks import check_topk_input


try:  # optional: the eager path in popsteer.sae.topk needs none of this
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is a declared dependency
    triton = None
    tl = None

TRITON_AVAILABLE = triton is not None


if TRITON_AVAILABLE:

    @triton.jit
    def _topk_relu_kernel(
        h_ptr,  # (N, n) input pre-activations, row-major
        val_ptr,  # (N, k) out: kept values, h's dtype
        idx_ptr,  # (N, k) out: kept columns, int64; also the row's scratch before the final sort
        n,  # row width
        k,  # how many to keep
        stride_h,  # row stride of h
        stride_out,  # row stride of the outputs
        BLOCK_N: tl.constexpr,  # next power of two >= n
        K_PAD: tl.constexpr,  # next power of two >= k (<= BLOCK_N)
    ):
        # One row per program, in three steps, none of which sorts the whole row:
        # 1. threshold: bisect on the value bits for T with count(bits >= T) >= k > count(bits > T),
        #    stopping early once some T splits off exactly k entries;
        # 2. select everything above T plus the lowest columns equal to T (k entries), and
        #    compact their keys into the row's k output slots;
        # 3. sort those k keys (value, then lower column) and write values and columns.
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK_N)  # (BLOCK_N,)
        in_row = cols < n
        h = tl.load(h_ptr + row * stride_h + cols, mask=in_row, other=0.0).to(tl.float32)
        v = tl.where(h > 0, h, 0.0)  # ReLU; -0.0 and NaN -> +0.0
        bits = tl.where(in_row, v.to(tl.int32, bitcast=True), -1)  # >= 0 and monotone in v; padding -1
        lo = tl.zeros((), dtype=tl.int32)  # count(bits >= lo) >= k
        hi = tl.max(bits, axis=0) + 1  # count(bits >= hi) == 0 < k
        cnt_lo = n
        while (hi - lo > 1) & (cnt_lo != k):
            mid = lo + (hi - lo) // 2
            c = tl.sum((bits >= mid).to(tl.int32), axis=0)
            take = c >= k
            lo = tl.where(take, mid, lo)
            cnt_lo = tl.where(take, c, cnt_lo)
            hi = tl.where(take, hi, mid)
        gt = bits > lo
        eq = bits == lo
        need = k - tl.sum(gt.to(tl.int32), axis=0)  # entries equal to T to keep, lowest columns first
        sel = gt | (eq & (tl.cumsum(eq.to(tl.int32), axis=0) <= need))  # exactly k
        slot = tl.cumsum(sel.to(tl.int32), axis=0) - 1
        key = (bits.to(tl.int64) << 32) | (BLOCK_N - 1 - cols).to(tl.int64)  # lower column wins ties
        out = idx_ptr + row * stride_out
        tl.store(out + slot, key, mask=sel)
        tl.debug_barrier()  # the row's k keys are in place for every thread of the program
        offs = tl.arange(0, K_PAD)
        keep = offs < k
        top = tl.sort(tl.load(out + offs, mask=keep, other=-1), descending=True)  # (K_PAD,)
        hi_bits = top >> 32
        col = BLOCK_N - 1 - (top - (hi_bits << 32))
        val = hi_bits.to(tl.int32).to(tl.float32, bitcast=True)
        tl.debug_barrier()  # every thread has read its keys before any slot is overwritten
        tl.store(val_ptr + row * stride_out + offs, val.to(val_ptr.dtype.element_ty), mask=keep)
        tl.store(out + offs, col, mask=keep)


def _next_pow2(x: int) -> int:
    return 1 << max(x - 1, 0).bit_length()


def triton_topk_relu(h: Tensor, k: int, num_warps: int | None = None) -> tuple[Tensor, Tensor]:
    """The k largest of ReLU(h) per row, largest first, lower column first among ties.

    h: (N, n) contiguous float32/bfloat16/float16. Returns values (N, k) in h's dtype and
    indices (N, k) int64. No autograd: use ``TopKReLU.apply``. ``num_warps`` overrides the
    launch's default (benchmarks).
    """
    check_topk_input(h, k)
    if not TRITON_AVAILABLE:
        raise RuntimeError("triton is not installed")
    N, n = h.shape
    values = torch.empty((N, k), dtype=h.dtype, device=h.device)  # (N, k)
    indices = torch.empty((N, k), dtype=torch.int64, device=h.device)  # (N, k)
    if N == 0:
        return values, indices
    block_n = max(_next_pow2(n), 2)
    k_pad = max(_next_pow2(k), 2)  # tl.sort needs at least 2
    num_warps = num_warps or 4  # fastest at [65536 x 4096] on an H200 (2, 8, 16 measured slower)
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
