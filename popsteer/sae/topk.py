"""The SAE activation ``TopK(ReLU(h), k)``: eager torch or the Triton kernel, same result.

Path choice, per call:
- ``POPSTEER_TRITON=0``: eager (fp32 on the CPU: the native C kernel of ``popsteer.kernels.native``;
  otherwise torch ops).
- ``POPSTEER_TRITON=1``: the Triton kernel (on CPU only under ``TRITON_INTERPRET=1``).
- unset: Triton when h is on CUDA and triton is installed; if its first launch fails, a
  warning is logged and eager is used from then on.

Both paths rank entries by (value after ReLU, then lower column first), so ties resolve
the same way and the outputs are equal, not just close.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from popsteer.kernels import native
from popsteer.kernels.checks import check_topk_input
from popsteer.errors import PopSteerError
from popsteer.util.env import env_text


def _kernels():
    """``popsteer.kernels.triton_topk``, imported only when Triton is asked about (a CUDA tensor or
    POPSTEER_TRITON=1): CPU processes, evaluator actors among them, never pay triton's ~0.15 s import."""
    from popsteer.kernels import triton_topk

    return triton_topk


logger = logging.getLogger(__name__)
TRITON_ENV = "POPSTEER_TRITON"

_triton_broken = False  # set when an automatic Triton launch failed once


class TritonFlagError(PopSteerError, ValueError):
    """A bad ``POPSTEER_TRITON``: one ``error:`` line from the CLI, a ValueError to library callers."""


def relu(x: Tensor) -> Tensor:
    """ReLU as every TopK path ranks it: -0.0 and NaN -> +0.0 (differentiable, zero grad there)."""
    return torch.where(x > 0, x, 0.0)


def _eager_topk_relu_sparse(h: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Eager twin of ``kernels.triton_topk_relu`` with autograd. h (N, n) -> (N, k), (N, k).

    fp32 on the CPU with the native kernel built (``popsteer.kernels.native``): the kernel ranks
    ReLU(h) in exactly the documented order without materialising ReLU(h) (which alone cost
    more than ``torch.topk`` here). Otherwise ``_torch_topk_relu_sparse``.
    """
    check_topk_input(h, k)
    if not native.takes(h) or not native.available():
        return _torch_topk_relu_sparse(h, k)
    with torch.no_grad():
        indices = native.kernel_topk(h.detach(), k, relu=True)[1]  # (N, k)
    return relu(h.gather(1, indices)), indices  # (N, k), differentiable; zero grad where h <= 0


def _torch_topk_relu_sparse(h: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``_eager_topk_relu_sparse`` from torch ops only (any dtype and device).

    A plain float ``torch.topk`` of k + 1 entries settles every row whose k + 1 largest
    values are all distinct (the set and its order are then unique); only rows with a tie
    among them are re-ranked with the packed (value bits, lower column) key, which is ~8x
    slower. Both give exactly the documented order.
    """
    n = h.shape[1]
    v = relu(h)  # (N, n)
    with torch.no_grad():
        vd = v.detach()
        top_v, indices = torch.topk(vd, min(k + 1, n), dim=1)  # (N, k+1), largest first
        tied = (top_v[:, 1:] == top_v[:, :-1]).any(1)  # (N,) any tie decides set or order
        indices = indices[:, :k]
        rows = tied.nonzero().squeeze(1)
        if rows.numel():
            indices = indices.clone()
            indices[rows] = _keyed_topk(vd[rows], k)
    values = v.gather(1, indices)  # (N, k), differentiable; zero grad where h <= 0
    return values, indices


def _keyed_topk(v: Tensor, k: int) -> Tensor:
    """Top-k columns of v (R, n) >= 0 by (value, then lower column first), (R, k) int64."""
    n = v.shape[1]
    bits = v.float().view(torch.int32).to(torch.int64)  # (R, n), monotone in v for v >= 0
    cols = torch.arange(n, device=v.device, dtype=torch.int64)  # (n,)
    key = (bits << 32) | (n - 1 - cols)  # (R, n), lower column wins ties
    return torch.topk(key, k, dim=1).indices  # (R, k), largest first


def triton_flag() -> str:
    """``$POPSTEER_TRITON``: "0", "1" or "" (checked; entry points call it before any work)."""
    flag = env_text(TRITON_ENV) or ""
    if flag == "1" and not _kernels().TRITON_AVAILABLE:
        raise TritonFlagError("environment variable POPSTEER_TRITON=1 but triton is not installed")
    if flag == "1" and env_text("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        raise TritonFlagError("environment variable POPSTEER_TRITON=1 needs a CUDA GPU (none here); unset it, "
                              "or set TRITON_INTERPRET=1 to run the kernel on the CPU")
    if flag not in ("", "0", "1"):
        raise TritonFlagError(f"environment variable POPSTEER_TRITON must be 0, 1 or unset, got {flag!r}")
    return flag


def _use_triton(h: Tensor) -> bool:
    flag = triton_flag()
    if flag:
        return flag == "1"
    return h.is_cuda and _kernels().TRITON_AVAILABLE and not _triton_broken


def topk_relu_sparse(h: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k largest of ReLU(h) per row: values (N, k) in h's dtype, indices (N, k) int64.

    h: (N, n). Values are sorted largest first; among equal values the lower column comes
    first. Differentiable in h through the values.
    """
    global _triton_broken
    h = h.contiguous()
    if not _use_triton(h):
        return _eager_topk_relu_sparse(h, k)
    if env_text(TRITON_ENV) == "1":
        return _kernels().TopKReLU.apply(h, k)
    check_topk_input(h, k)  # bad input is an error, not a reason to fall back
    try:
        return _kernels().TopKReLU.apply(h, k)
    except Exception as exc:  # compile/driver failure: fall back for the rest of the run
        _triton_broken = True
        logger.warning("Triton top-k failed (%s: %s); using eager torch from now on", type(exc).__name__, exc)
        return _eager_topk_relu_sparse(h, k)


def topk_relu(h: Tensor, k: int) -> Tensor:
    """Dense sparse code z (N, n): ReLU(h) at each row's k largest entries, 0 elsewhere."""
    values, indices = topk_relu_sparse(h, k)  # (N, k), (N, k)
    return torch.zeros_like(h).scatter(1, indices, values)  # (N, n)
