"""Log output of the entry points (library modules only create loggers).

An entry point may hold its log lines back while it reads and checks its input
(``setup_logging(defer=True)``); they are shown, in order, when the first long step begins (its
progress bar, ``popsteer.util.progress``, calls ``begin_work()``) or when the run ends. A run refused
for bad input before that calls ``drop_held()``: it prints its one ``error:`` line and nothing else.
"""

from __future__ import annotations

import logging

QUIET = ("numba", "urllib3", "matplotlib", "filelock")
MAX_HELD = 10_000
"""Records held at most before the work begins (the oldest are dropped beyond it)."""


class _Held(logging.Handler):
    """Stands in for the console handlers until the work begins, keeping their records."""

    def __init__(self, targets: list[logging.Handler]) -> None:
        super().__init__(logging.NOTSET)
        self.targets, self.records = targets, []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        del self.records[:-MAX_HELD]

    def restore(self, replay: bool) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        for target in self.targets:
            root.addHandler(target)
        for record in self.records if replay else []:
            for target in self.targets:
                if record.levelno >= target.level:
                    target.handle(record)
        self.records = []


_held: _Held | None = None


def setup_logging(verbose: bool, defer: bool = False) -> None:
    """INFO (DEBUG when verbose) to stderr with a timestamp; chatty libraries at WARNING. ``defer``: hold
    the console's lines until ``begin_work()`` (dropped by ``drop_held()``)."""
    global _held
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if defer and _held is None:
        root = logging.getLogger()
        consoles = [h for h in root.handlers if type(h) is logging.StreamHandler]
        if consoles:
            _held = _Held(consoles)
            for h in consoles:
                root.removeHandler(h)
            root.addHandler(_held)


def begin_work() -> None:
    """The long work begins (or the run ends): show the held lines and log to the console from now on."""
    global _held
    if _held is not None:
        held, _held = _held, None
        held.restore(replay=True)


def drop_held() -> None:
    """The run was refused: forget the held lines (its error line is all it prints) and restore the console."""
    global _held
    if _held is not None:
        held, _held = _held, None
        held.restore(replay=False)
