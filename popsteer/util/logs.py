"""Log output of the entry points (library modules only create loggers)."""

from __future__ import annotations

import logging

QUIET = ("numba", "urllib3", "matplotlib", "filelock")


def setup_logging(verbose: bool) -> None:
    """INFO (DEBUG when verbose) to stderr with a timestamp; chatty libraries at WARNING."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)
