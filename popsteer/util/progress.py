"""Progress bars with ETA (tqdm on stderr) for the long steps.

Shown when stderr is a terminal; ``POPSTEER_PROGRESS=1`` forces them on (e.g. into a log
file), ``POPSTEER_PROGRESS=0`` off. Inside Ray workers stderr is not a terminal, so trials
stay quiet unless forced.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, TypeVar

from tqdm import tqdm

from popsteer.util.env import env_flag
from popsteer.util.logs import begin_work

ENV = "POPSTEER_PROGRESS"
_clock = time.perf_counter  # EpochLog's clock (a test replaces it)
T = TypeVar("T")


def enabled() -> bool:
    """Whether bars are drawn: ``$POPSTEER_PROGRESS`` (1/0) else whether stderr is a TTY."""
    forced = env_flag(ENV)
    if forced is not None:
        return forced
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def progress(iterable: Iterable[T] | None = None, desc: str = "", total: int | None = None, unit: str = "it",
             leave: bool = True, **kwargs) -> tqdm:
    """A tqdm bar on stderr (a no-op bar when disabled). Give ``total`` for an ETA on generators."""
    begin_work()  # the long work begins: an entry point's held log lines are shown (popsteer.util.logs)
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, file=sys.stderr,
                disable=not enabled(), dynamic_ncols=True, **kwargs)


def batches(n: int, batch_size: int, desc: str, unit: str = "batch", **kwargs) -> Iterable[int]:
    """``range(0, n, batch_size)`` with a bar (one step per batch)."""
    return progress(range(0, n, batch_size), desc=desc, unit=unit, leave=False, **kwargs)


class EpochLog:
    """One INFO line per epoch at most every ``every_s`` seconds (and the first and last epochs), with the
    epoch, the given values and the ETA to ``total`` epochs: progress a log file shows without a terminal."""

    def __init__(self, logger, what: str, total: int, every_s: float = 30.0) -> None:
        self.logger, self.what, self.total, self.every_s = logger, what, total, every_s
        self.start = self._last = _clock()
        self._logged = False

    def epoch(self, epoch: int, **values: float) -> None:
        now = _clock()
        if self._logged and now - self._last < self.every_s and epoch < self.total:
            return
        self._last, self._logged = now, True
        eta = (now - self.start) / max(epoch, 1) * (self.total - epoch)
        shown = " ".join(f"{k} {v:.4f}" for k, v in values.items())
        self.logger.info("%s epoch %d/%d: %s (%.0f s so far, at most %.0f s to go)", self.what, epoch, self.total,
                         shown, now - self.start, eta)
