"""One driver per sweep: an exclusive lock on the sweep's storage folder.

Two drivers of the same sweep (the same ``<storage>/<name>``) would share one Tune experiment
folder, one stage-file chain and one MLflow parent run (found again by tag), and corrupt all three.
``sweep_lock`` takes ``<storage>/<name>.lock`` with ``flock`` (exclusive, non-blocking) for the
driver's whole life; a second driver gets one line naming the holder and gives up before it
writes anything. The lock is the kernel's: it goes with the process, so a driver killed with
SIGKILL leaves no stale lock behind (the file stays; its content is only the last holder's note).
On shared storage it needs a file system with working locks (local disks, NFSv4, Lustre, CephFS).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from popsteer.errors import PopSteerError

log = logging.getLogger(__name__)


def lock_path(experiment_dir: Path) -> Path:
    """The lock of a sweep's experiment folder: beside it (``<storage>/<name>.lock``), never inside it,
    so Tune's own files stay as Tune writes them."""
    return experiment_dir.parent / f"{experiment_dir.name}.lock"


@contextlib.contextmanager
def sweep_lock(experiment_dir: Path):
    """Hold the sweep's lock for the block, or raise PopSteerError if another driver holds it."""
    path = lock_path(experiment_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PopSteerError(f"sweep '{experiment_dir.name}' is already running on {experiment_dir} "
                                f"({_holder(fd)}): wait for it to finish, or give this one another name "
                                "(--set name=...)") from None
        note = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(note).encode(), 0)
        log.debug("sweep lock %s taken", path)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _holder(fd: int) -> str:
    """Who holds the lock, as its note says (best effort: the note is written just after the lock is taken)."""
    try:
        note = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"driver pid {note['pid']} on {note['host']} since {note['since']}"
    except (OSError, ValueError, KeyError):
        return "another driver"
