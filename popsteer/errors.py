"""User-facing errors: the CLI prints one line and exits with code 2."""

from __future__ import annotations

import errno


class PopSteerError(Exception):
    """Bad input from the user (flag, file, checkpoint, environment).

    The CLI catches it, prints ``error: <message>`` on one line and exits with code 2.
    """


PATH_ERRNOS = {errno.ENAMETOOLONG: "file name too long (a part over 255 bytes or the whole over 4096)"}
"""OS errors that any path the user names can raise at its first look-up, wherever that is."""


def path_error(exc: OSError) -> PopSteerError | None:
    """The one-line user error of an ``OSError`` that only a bad path name causes (else None: a real fault)."""
    why = PATH_ERRNOS.get(exc.errno)
    if why is None:
        return None
    name = str(exc.filename) if exc.filename is not None else "a path"
    shown = name if len(name) <= 120 else f"{name[:60]}...{name[-40:]}"
    return PopSteerError(f"{shown}: {why}")
