"""Output folders, checked before any work: a folder (or creatable as one), writable, with room.

``check_output`` refuses, in one ``PopSteerError`` line naming the flag or key and the path, a
folder that runs through a file, cannot be written, or whose disk has less free space than what
will be written there. Nothing is created: writability is probed in the nearest existing folder
with an unnamed temporary file. The CLI checks every command's folders with it
(``popsteer.app.outputs``), a sweep its storage (``popsteer.platform.preflight``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from popsteer.errors import PopSteerError, path_error
from popsteer.util import memory

MIN_FREE_BYTES = 16 << 20
"""Free space every output folder needs at least (reports, headers, logs)."""


@dataclass(frozen=True)
class Output:
    """A folder a command writes into: the flag that names it, the folder, the bytes it will hold at least."""

    flag: str
    folder: Path
    need: int = MIN_FREE_BYTES
    given: str | None = None
    """What the flag named, when it is a file in ``folder`` (``--out``); default the folder."""


def _through_file(folder: Path) -> Path | None:
    """The first existing component of ``folder`` that is not a folder, if any."""
    for part in [*reversed(folder.parents), folder]:
        if part.exists() and not part.is_dir():
            return part
    return None


def check_output(out: Output) -> None:
    """One ``PopSteerError`` line unless ``out.folder`` can hold ``out.need`` new bytes."""
    folder = Path(os.path.abspath(os.path.expanduser(str(out.folder))))
    shown = out.given or str(out.folder)
    try:
        blocker = _through_file(folder)
    except OSError as exc:  # a name too long
        if (err := path_error(exc)) is None:
            raise
        raise PopSteerError(f"{out.flag} {err}") from None
    if blocker is not None:
        what = "is a file" if blocker == folder and out.given is None else f"runs through the file {blocker}"
        raise PopSteerError(f"{out.flag} {shown}: {what}, not a folder")
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        where = "" if existing == folder else f" (cannot create it in {existing})"
        raise PopSteerError(f"{out.flag} {shown}: not writable{where}: {exc.strerror or exc}") from None
    free = shutil.disk_usage(existing).free
    if free < out.need:
        raise PopSteerError(f"{out.flag} {shown}: {memory.gb(free)} free on its disk, this command writes "
                            f"about {memory.gb(out.need)}; free some space or choose another folder")


def check_folder(flag: str, folder: str | os.PathLike) -> None:
    """``check_output`` of one folder with the minimum free space."""
    check_output(Output(flag, Path(folder)))
