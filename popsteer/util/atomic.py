"""Atomic file writes: write to a temporary file in the same folder, then rename."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from popsteer.errors import PopSteerError

DISK_FULL = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def os_errno(exc: BaseException) -> int | None:
    """The errno of an OSError, or of a Rust I/O error (safetensors) that says ``(os error N)``."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    found = re.search(r"\(os error (\d+)\)|\[errno (\d+)\]", str(exc), re.IGNORECASE)
    return int(found.group(1) or found.group(2)) if found else None


def disk_full_error(path: str | os.PathLike, exc: BaseException) -> PopSteerError | None:
    """A one-line error for a write that ran out of space (ENOSPC, EFBIG, EDQUOT), else None."""
    code = os_errno(exc)
    if code not in DISK_FULL:
        return None
    return PopSteerError(f"cannot write {path}: {os.strerror(code)} (errno {code}); "
                         "the previous file, if any, is unchanged")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched,
    so a reader never sees a half-written artifact. Running out of space (a full disk, a
    quota, a file size limit) becomes a PopSteerError naming ``path``. ``replace=False``
    publishes only where no file exists (a hard link, atomic): else FileExistsError, and the
    file there, written meanwhile by another run, stays.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        full = disk_full_error(path, exc)
        if full is not None:
            raise full from exc
        raise
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; artifacts get the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp_path, path)
        else:
            publish_new(tmp_path, path)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        full = disk_full_error(path, exc)
        if full is not None:
            raise full from exc
        raise


def publish_new(tmp: Path, path: Path) -> None:
    """Give the finished file ``tmp`` the name ``path`` unless that name exists (FileExistsError)."""
    try:
        os.link(tmp, path)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # a file system without hard links: reserve the name exclusively, then rename onto the reservation
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        os.replace(tmp, path)
    else:
        tmp.unlink()


@contextlib.contextmanager
def made_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Create ``folder`` (and missing parents); if the block fails, remove the ones made here that are still empty."""
    folder = Path(folder)
    made = [d for d in (folder, *folder.parents) if not d.exists()]  # innermost first
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        for d in made:
            if not d.exists():  # removed by the block itself
                continue
            if any(d.iterdir()):
                break
            d.rmdir()
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path: str | os.PathLike, frame, **kwargs) -> None:
    """Write a pandas DataFrame as CSV atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)
