"""Reading a sweep file: YAML, ``--set`` overrides, validation against ``popsteer.platform.spec``,
paths checked against the allowed roots and made absolute (see that module's docstring).

MLflow credentials never come from the file: it is shared, copied and logged as the parent run's
params, so a password there would travel with it. They come from ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD`` (or ``MLFLOW_TRACKING_TOKEN``), which the MLflow client reads itself."""

from __future__ import annotations

import os
import re
from pathlib import Path

from popsteer.errors import PopSteerError
from popsteer.platform.spec import SweepSpec
from popsteer.util.configs import validate
from popsteer.util.redact import CREDENTIALS_ENV, redact_text, secret_key
from popsteer.util.safepaths import base_roots, check_inside, project_root, uri_path
from popsteer.util.safeyaml import MAX_BYTES, load_yaml


def apply_override(raw: dict, assignment: str) -> None:
    """Apply ``a.b.c=VALUE`` (VALUE parsed as YAML) to the raw mapping, in place."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise PopSteerError(f"--set expects KEY=VALUE, got {assignment!r}")
    value = load_yaml(text, f"--set {key}")
    node = raw
    for part in key.split(".")[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[key.split(".")[-1]] = value


_USER_KEY = re.compile(r"user(name)?|login", re.IGNORECASE)
CREDENTIALS_FROM_ENV = f"export {CREDENTIALS_ENV} instead"


def refuse_credentials(raw: dict, source: str) -> None:
    """Refuse MLflow credentials in the sweep file (see the module docstring): a key of the ``mlflow``
    section that names a password, token or user, or a ``tracking_uri`` with ``user:password@`` or a
    secret query parameter. The message shows the URI masked, never the secret."""
    section = raw.get("mlflow")
    if not isinstance(section, dict):
        return
    for key, value in section.items():
        if secret_key(str(key)) or _USER_KEY.search(str(key)):
            raise PopSteerError(f"{source}: 'mlflow.{key}': a sweep file never holds MLflow credentials; "
                                f"{CREDENTIALS_FROM_ENV}")
        if key == "tracking_uri" and isinstance(value, str) and redact_text(value) != value:
            raise PopSteerError(f"{source}: 'mlflow.tracking_uri' {redact_text(value)!r} carries credentials; "
                                f"give the URI without them and {CREDENTIALS_FROM_ENV}")


def resolve_path(path: str | None, root: Path) -> str | None:
    if path is None or "://" in path:
        return path
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else (root / p).resolve())


def load_spec(path: str | os.PathLike, overrides: list[str] | None = None) -> SweepSpec:
    """Read and validate a sweep file; relative paths become absolute (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        what = "not found" if not path.exists() else "is a folder" if path.is_dir() else "is not a regular file"
        raise PopSteerError(f"sweep file {path} {what}")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise PopSteerError(f"cannot read sweep file {path}: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise PopSteerError(f"{path}: larger than {MAX_BYTES // 1024} KB; not read")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PopSteerError(f"{path}: not a UTF-8 text file") from None
    raw = load_yaml(text, str(path)) or {}
    if not isinstance(raw, dict):
        raise PopSteerError(f"{path}: the top level must be a mapping")
    for assignment in overrides or []:
        apply_override(raw, assignment)
    refuse_credentials(raw, str(path))
    spec = validate(SweepSpec, raw, str(path))
    check_paths(spec, {a.partition("=")[0] for a in overrides or []}, str(path))
    root = project_root()
    spec.data_dir = resolve_path(spec.data_dir, root)
    spec.storage = resolve_path(spec.storage, root)
    spec.base_checkpoint = resolve_path(spec.base_checkpoint, root)
    spec.encode.dir = resolve_path(spec.encode.dir, root)
    return spec


def check_paths(spec: SweepSpec, trusted: set[str], source: str) -> None:
    """Refuse a path of the sweep file outside the allowed roots (``popsteer.util.safepaths``).

    ``data_dir`` and ``storage`` must lie in the project, the repository or
    ``$POPSTEER_ALLOWED_ROOTS``; the other paths may also lie in those two folders. Keys set
    with ``--set`` (listed in ``trusted``, or a parent of them) are the operator's and not checked.
    """
    def given(key: str) -> bool:
        parts = key.split(".")
        return any(".".join(parts[:i]) in trusted for i in range(1, len(parts) + 1))

    def check(key: str, value: str | None, roots: list) -> None:
        local = None if value is None else (uri_path(value) if "://" in value or value.startswith("file:") else value)
        if local and not given(key):
            check_inside(key, local, roots, source)

    roots = base_roots()
    check("data_dir", spec.data_dir, roots)
    check("storage", spec.storage, roots)
    roots += [p for p in (spec.data_dir, spec.storage) if p and "://" not in p]
    check("base_checkpoint", spec.base_checkpoint, roots)
    check("encode.dir", spec.encode.dir, roots)
    check("mlflow.tracking_uri", spec.mlflow.tracking_uri, roots)
    if "://" not in spec.data_dir:
        check_inside("dataset", Path(spec.data_dir) / spec.dataset, [spec.data_dir], source)
