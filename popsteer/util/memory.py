"""Memory estimates from shapes, checked before anything large is allocated.

Each estimate counts the buffers a stage holds at its peak, in bytes of their dtype (fp32
unless stated), so that a size that cannot fit is refused with one line (what it needs,
what is available) instead of failing deep inside an allocation. Estimates are upper-bound
leaning, not exact: they leave out the interpreter and library overhead (~1 GB).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from popsteer.errors import PopSteerError
from popsteer.util.env import env_float

log = logging.getLogger(__name__)

F32 = 4
I64 = 8
ENV = "POPSTEER_MEMORY_GB"
"""Overrides the available memory (GB), e.g. to plan for a smaller machine."""


def _cgroup_limit() -> int | None:
    """The cgroup v2 (or v1) memory limit minus what the group already uses, when one is set."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            raw = Path(limit_file).read_text().strip()
            if raw == "max" or int(raw) >= 1 << 60:
                return None
            return int(raw) - int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
    return None


def available_bytes() -> int:
    """Memory this process can still allocate: ``$POPSTEER_MEMORY_GB``, else MemAvailable (capped by a cgroup limit)."""
    override = env_float(ENV, 0.0, above=0.0, what="a number of GB")
    if override:
        return int(override * 1e9)
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    if avail is None:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limit = _cgroup_limit()
    return min(avail, limit) if limit is not None else avail


def gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def check_fits(what: str, need: int, hint: str = "") -> None:
    """Refuse ``what`` when ``need`` bytes exceed the available memory (one line, exit code 2 in the CLI)."""
    have = available_bytes()
    log.debug("%s: needs about %s, %s available", what, gb(need), gb(have))
    if need > have:
        raise PopSteerError(f"{what} needs about {gb(need)} of memory but {gb(have)} is available"
                            + (f": {hint}" if hint else ""))


def sae_training_bytes(d: int, n: int, batch: int, rows: int, valid_rows: int) -> int:
    """Peak of ``fit_sae``: weights, gradients, Adam's two moments and the kept best copy
    (5 x (2 n d + n + d)); per batch about six (batch, n) buffers (pre-activations, ReLU,
    dense code, AuxK's masked copy and their gradients); the inputs (rows + valid_rows, d)."""
    params = 2 * n * d + n + d
    return F32 * (5 * params + 6 * min(batch, max(rows, 1)) * n + (rows + valid_rows) * d)


def grid_bytes(users: int, n: int, points: int, k: int, n_items: int, chunk: int = 256, workers: int = 2) -> int:
    """Peak of the steering grid on one split: the cached pre-activations (users, n), the
    deltas (points, n), the kept top-k lists (points, users, k) as int32 and, per worker
    thread, a chunk's steered values (points, chunk, n) bound and its scores (points * chunk, n_items)."""
    per_worker = F32 * (2 * chunk * n + points * chunk * min(n, 4 * k) + points * chunk * n_items // max(points, 1))
    return F32 * (users * n + points * n) + 4 * points * users * k + workers * per_worker


def encoding_bytes(rows: int, d: int, inputs: int, max_len: int) -> int:
    """The encoded representations (rows, d) and the int64 input sequences (inputs, max_len), twice (a copy on write)."""
    return 2 * (F32 * rows * d + I64 * inputs * max_len)
