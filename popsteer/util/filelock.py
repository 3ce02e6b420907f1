"""Advisory file locks (``fcntl.flock`` on a sidecar lock file) for files several runs share.

Writers of a shared file or folder (the encoded store, an analysis folder, a resumable training
state) hold an exclusive lock on ``<name>.lock`` beside it while they write; readers that must not
see a half-replaced set of files hold a shared one. The lock is the kernel's: it goes with the
process, so a killed run leaves no stale lock (the empty file may stay).

``remove=True`` unlinks the lock file before releasing it. A waiter that had opened the old file
then finds its lock on an unlinked inode; every acquisition checks that the path still names the
inode it locked, and retries otherwise, so two runs never both believe they hold one lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator


def lock_file(path: str | os.PathLike) -> Path:
    """The sidecar lock of ``path``: ``<folder>/.<name>.lock``."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, shared: bool = False, blocking: bool = True,
              remove: bool = False, create: bool = True) -> Iterator[bool]:
    """Hold a lock on the file ``path`` for the block; yields whether it is held.

    Not held only when ``blocking`` is False and another process holds a conflicting lock, or when
    ``create`` is False and the lock file does not exist (nobody ever wrote under it).
    """
    path = Path(path)
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
    while True:
        try:
            fd = os.open(path, (os.O_RDWR | os.O_CREAT) if create else os.O_RDONLY, 0o644)
        except FileNotFoundError:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
                continue
            yield False
            return
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file was removed (and maybe re-made) while we waited: lock the current one
    try:
        yield True
        if remove:
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)
