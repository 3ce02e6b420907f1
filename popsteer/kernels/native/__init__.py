"""Native CPU kernels: C sources built on first use with the machine's C compiler, called through ctypes.

``row_topk`` returns exactly what ``torch.topk`` returns (``rank_topk``'s fallback and the
re-rankers' top-m). ``popsteer_tile_topk_f32`` (same source) is the selection half of the fused
exact scoring (``fused.py``, ``rank_topk``'s path): tiles of scores folded into running top-k lists. The kernel behind it (``kernel_topk``) bounds each row's k-th value
with a vertical max over 32 or 64 lanes, then one pass that mostly only compares against the
running k-th value: ~10x faster than ``torch.topk`` on a (256, 3,417) fp32 block here (0.15 vs
1.5 ms, single thread). With ``relu=True`` it is also the SAE's TopK on CPU (``popsteer.sae.topk``).
Rows with an exact tie near the top are handed back to
``torch.topk`` (its order among equal scores is its own, and RecBole's evaluator sees it).

The shared library is built once per source, compiler and CPU, with ``-O3 -march=native``,
into ``$POPSTEER_NATIVE_CACHE`` (default ``~/.cache/popsteer/native``), written to a temp
file and renamed into place, so concurrent builders (Ray workers) never load a half-written
file; a library that others could have written is refused. Without a compiler, or with
``POPSTEER_NATIVE=0``, ``row_topk`` is ``torch.topk`` (the same results, slower) after one
warning that says why.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor

from popsteer.util.env import env_flag, env_text

log = logging.getLogger(__name__)

SOURCES = tuple(Path(__file__).with_name(name) for name in ("row_topk.c", "sparse_rows.c"))
_SOURCE_TEXTS = tuple(p.read_bytes() for p in SOURCES)  # read with this module, so a build matches the wrappers
FLAG_SETS = (["-O3", "-march=native"], ["-O3"])  # the second where the compiler lacks -march=native
_lock = threading.Lock()
_state: dict[str, object] = {}
_forced_off = False


def cache_dir() -> Path:
    return Path(env_text("POPSTEER_NATIVE_CACHE") or Path.home() / ".cache" / "popsteer" / "native")


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the machine type and, on Linux, the CPU's feature flags."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return f"{platform.machine()}|{platform.processor()}|{flags}"


def _check_private(lib: Path) -> None:
    """Loading a shared library runs its code: refuse one that someone else could have written."""
    for path in (lib, lib.parent):
        st = path.stat()
        if (hasattr(os, "getuid") and st.st_uid != os.getuid()) or st.st_mode & 0o022:
            raise RuntimeError(f"{path} is writable by others or not owned by this user; not loading it")


def _build(cc: str) -> Path:
    errors = []
    for flags in FLAG_SETS:
        parts = [*_SOURCE_TEXTS, cc.encode(), " ".join(flags).encode(), _cpu_id().encode()]
        key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
        out = cache_dir() / f"kernels-{key}.so"
        if out.exists():
            _check_private(out)
            return out
        out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        c_files = [f"{tmp[:-3]}-{p.name}" for p in SOURCES]
        try:
            for c_file, text in zip(c_files, _SOURCE_TEXTS):
                Path(c_file).write_bytes(text)
            proc = subprocess.run([cc, *flags, "-shared", "-fPIC", *c_files, "-o", tmp, "-lm"],
                                  capture_output=True, text=True, timeout=120)
            if proc.returncode == 0:
                os.chmod(tmp, 0o755)  # whatever the umask: only this user may write it
                os.replace(tmp, out)
                log.info("built %s", out)
                return out
            errors.append((proc.stderr.strip().splitlines() or ["no output"])[-1])
        finally:
            for leftover in (tmp, *c_files):
                if os.path.exists(leftover):
                    os.unlink(leftover)
    raise RuntimeError(f"{cc} failed: {errors[-1]}")


@contextmanager
def disabled():
    """Inside the block every caller takes its torch path, as without a compiler (benchmarks
    time both paths in one run)."""
    global _forced_off
    previous, _forced_off = _forced_off, True
    try:
        yield
    finally:
        _forced_off = previous


def _load() -> ctypes.CDLL | None:
    """The kernels' library, built if needed; None (after one warning) where it cannot be had."""
    if _forced_off:
        return None
    with _lock:
        if "lib" in _state:
            return _state["lib"]  # type: ignore[return-value]
        lib = None
        if not env_flag("POPSTEER_NATIVE", True):
            log.info("POPSTEER_NATIVE=0: native kernels off, torch.topk scores")
        else:
            cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
            try:
                if cc is None:
                    raise RuntimeError("no C compiler found (set CC)")
                lib = ctypes.CDLL(str(_build(cc)))
                fn = lib.popsteer_row_topk_f32
                fn.restype = None
                fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                               ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
                ptr, i64 = ctypes.c_void_p, ctypes.c_int64
                lib.popsteer_gather_dot_f32.restype = lib.popsteer_scatter_outer_f32.restype = None
                lib.popsteer_gather_dot_f32.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, ptr]
                lib.popsteer_scatter_outer_f32.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, i64, ptr]
                lib.popsteer_tile_topk_f32.restype = None
                lib.popsteer_tile_topk_f32.argtypes = [ptr, i64, i64, i64, i64, ptr, ptr, ptr, ptr, i64, ptr, ptr,
                                                       ptr, ptr]
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                log.warning("native top-k unavailable (%s); scoring falls back to torch.topk", exc)
                lib = None
        _state["lib"] = lib
        return lib


def available() -> bool:
    """Whether the native kernels are built and loaded (builds them on first call)."""
    return _load() is not None


def takes(x: Tensor) -> bool:
    """Whether the kernel can read ``x`` in place: 2-D fp32 on the CPU with unit column stride."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and x.dim() == 2 and x.stride(1) == 1


def kernel_topk(scores: Tensor, k: int, relu: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """The kernel itself: values (B, k), int64 columns (B, k), best first, equal values by LOWER
    column first, and a (B,) bool flag for rows holding a NaN (never selected here).

    Args:
        scores: (B, C) fp32 on the CPU with unit column stride (any row stride: a view into a
            reused buffer is fine), 1 <= k <= C. Needs ``available()``.
        relu: rank ``ReLU(scores)`` without materialising it (NaN, -0 and negatives all count
            as 0, so they tie and go by column; no NaN flags): the SAE's TopK order.
    """
    lib = _load()
    if lib is None:
        raise RuntimeError("native kernels unavailable")
    if not takes(scores):
        raise ValueError("kernel_topk takes a 2-D fp32 CPU tensor with unit column stride")
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k={k} outside [1, {scores.shape[1]}]")
    rows = scores.shape[0]
    values = torch.empty((rows, k), dtype=torch.float32)
    indices = torch.empty((rows, k), dtype=torch.int64)
    nan = torch.zeros(rows, dtype=torch.uint8)
    if rows:
        lib.popsteer_row_topk_f32(scores.data_ptr(), rows, scores.shape[1], scores.stride(0), k, int(relu),
                                  values.data_ptr(), indices.data_ptr(), nan.data_ptr())
    return values, indices, nan.bool()


def row_topk(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Exactly ``torch.topk(scores, k, dim=-1)`` for (B, C) scores, ties and NaN included.

    The kernel ranks the best k + 1 of every row. Where those k + 1 values are all distinct
    and the row has no NaN, the top k is unique and is the kernel's. The other rows (an exact
    tie in a row's best k + 1, a NaN) are ranked again by ``torch.topk``, so its order among
    equal scores, which RecBole's evaluator also gets, is kept. Inputs the kernel does not
    take (not fp32 CPU, not unit column stride, k + 1 > C, no kernel) go to ``torch.topk``.
    """
    if not takes(scores) or scores.requires_grad or not 1 <= k < scores.shape[1] or _load() is None:
        return torch.topk(scores, k, dim=-1)
    v, i, redo = kernel_topk(scores, k + 1)
    redo |= (v[:, :-1] == v[:, 1:]).any(1)  # (B,) an exact tie among the best k + 1
    values, indices = v[:, :k].contiguous(), i[:, :k].contiguous()
    if redo.any():
        rows = redo.nonzero().flatten()
        values[rows], indices[rows] = torch.topk(scores[rows], k, dim=-1)
    return values, indices
