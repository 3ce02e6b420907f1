"""Sparse row gathers and scatters of a (n, d) table by a (B, M) index (``sparse_rows.c``), on all torch threads.

These are the two products a TopK SAE's gradient needs once its code is sparse
(``popsteer.sae.sparse_step``): torch has them only as dense matmuls over all n latents or as
``embedding_bag``'s backward, which was 5x slower than this kernel for M = 160 here
(33.6 vs ~6 ms on a (4096, 160) index, n = 4096, d = 64).

    gather_dot(y, W, idx)        out[b, m] = <y[b], W[idx[b, m]]>                     (B, M)
    scatter_outer(y, w, idx, n)  out[j] = sum over idx[b, m] = j of w[b, m] * y[b]   (n, d)

Threads (ctypes releases the GIL) split gather_dot by input rows and scatter_outer by output
rows; each output row is summed in (b, m) order either way, so results do not depend on the
thread count.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from popsteer.kernels.native import _load

_pool: ThreadPoolExecutor | None = None


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _run(calls: list) -> None:
    """Run the zero-argument callables, on the pool when there are several."""
    global _pool
    if len(calls) == 1:
        calls[0]()
        return
    if _pool is None or _pool._max_workers < len(calls):
        _pool = ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="popsteer-rows")
    for f in [_pool.submit(c) for c in calls]:
        f.result()


def _check(y: Tensor, idx: Tensor, *tables: Tensor) -> None:
    for name, t in (("y", y), *((f"table {i}", t) for i, t in enumerate(tables))):
        if t.dtype != torch.float32 or t.device.type != "cpu" or t.dim() != 2 or not t.is_contiguous():
            raise ValueError(f"{name} must be a contiguous 2-D fp32 CPU tensor, got {tuple(t.shape)} {t.dtype}")
    if idx.dtype != torch.int64 or idx.dim() != 2 or not idx.is_contiguous() or idx.shape[0] != y.shape[0]:
        raise ValueError(f"idx must be a contiguous (B, M) int64 tensor with B = {y.shape[0]}, got {tuple(idx.shape)}")


def _splits(total: int, parts: int) -> list[tuple[int, int]]:
    step = -(-total // parts)
    return [(a, min(a + step, total)) for a in range(0, total, step)]


def gather_dot(y: Tensor, table: Tensor, idx: Tensor) -> Tensor:
    """(B, M): <y[b], table[idx[b, m]]> for y (B, d), table (n, d), idx (B, M) int64 in [0, n)."""
    lib = _load()
    _check(y, idx, table)
    b, m = idx.shape
    out = torch.empty((b, m), dtype=torch.float32)
    if b == 0 or m == 0:
        return out
    args = (y.data_ptr(), table.data_ptr(), idx.data_ptr())
    _run([lambda lo=lo, hi=hi: lib.popsteer_gather_dot_f32(*args, lo, hi, m, y.shape[1], out.data_ptr())
          for lo, hi in _splits(b, min(_threads(), b))])
    return out


def scatter_outer(y: Tensor, w: Tensor, idx: Tensor, n: int, out: Tensor | None = None) -> Tensor:
    """(n, d): out[j] += w[b, m] * y[b] for every idx[b, m] = j; y (B, d), w and idx (B, M).

    Accumulates into ``out`` when given (n, d) fp32 contiguous, else into zeros."""
    lib = _load()
    _check(y, idx, w)
    if w.shape != idx.shape:
        raise ValueError(f"w {tuple(w.shape)} and idx {tuple(idx.shape)} must have one shape")
    out = torch.zeros((n, y.shape[1]), dtype=torch.float32) if out is None else out
    b, m = idx.shape
    if b == 0 or m == 0:
        return out
    args = (y.data_ptr(), w.data_ptr(), idx.data_ptr(), b, m, y.shape[1])
    _run([lambda lo=lo, hi=hi: lib.popsteer_scatter_outer_f32(*args, lo, hi, out.data_ptr())
          for lo, hi in _splits(n, min(_threads(), n))])
    return out
