"""Paths named by config files must stay inside the allowed roots.

A sweep file or a checkpoint header is data, not an operator: a path it names is
resolved (``~`` expanded, symlinks followed) and refused when it leaves every allowed
root. The roots are the project folder (``$POPSTEER_ROOT`` or the current directory),
the repository holding this package, the data and output folders in use, and any
folder the operator lists in ``$POPSTEER_ALLOWED_ROOTS`` (``os.pathsep``-separated,
e.g. ``/mnt/shared``). Paths the operator gives on the command line are not checked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from popsteer.errors import PopSteerError
from popsteer.util.env import env_text

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_ROOTS = "POPSTEER_ALLOWED_ROOTS"


def project_root() -> Path:
    """Where relative config paths resolve: ``$POPSTEER_ROOT``, else the current directory."""
    return Path(env_text("POPSTEER_ROOT") or os.getcwd())


def base_roots() -> list[Path]:
    """The project folder, the repository and the operator's ``$POPSTEER_ALLOWED_ROOTS``."""
    extra = [Path(p) for p in (env_text(ENV_ROOTS) or "").split(os.pathsep) if p.strip()]
    return [project_root(), REPO_ROOT, *extra]


def real(path: str | os.PathLike, root: Path | None = None) -> Path:
    """Absolute, ``~`` expanded, symlinks resolved (relative paths against ``root``)."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_absolute():
        p = (root or project_root()) / p
    return p.resolve()


def is_inside(path: Path, roots: Iterable[str | os.PathLike]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in (real(root) for root in roots))


def check_inside(key: str, path: str | os.PathLike, roots: Iterable[str | os.PathLike], source: str = "") -> Path:
    """The resolved ``path``; PopSteerError naming ``key`` when it leaves every root."""
    roots = list(roots)
    resolved = real(path)
    if not is_inside(resolved, roots):
        where = f"{source}: " if source else ""
        raise PopSteerError(
            f"{where}key '{key}' names {path!s} (resolved {resolved}), outside the allowed folders "
            f"({', '.join(str(real(r)) for r in roots)}); add its folder to ${ENV_ROOTS} or pass it with --set")
    return resolved


def uri_path(uri: str) -> str | None:
    """The local file path of a ``sqlite:///`` or ``file:`` URI; None for other URIs."""
    for prefix in ("sqlite:///", "file://", "file:"):
        if uri.startswith(prefix):
            return uri[len(prefix):].split("?", 1)[0]
    return None
