"""Fail fast on an unreachable tracking server or Ray head, before any stage runs.

MLflow retries a refused connection for minutes and ``ray.init`` waits for a GCS that will
never answer; a plain TCP connect with a short timeout turns either into one ``error:`` line.
"""

from __future__ import annotations

import os
import socket
import sys
from importlib import metadata
from urllib.parse import urlsplit

from popsteer.errors import PopSteerError
from popsteer.util.redact import redact_text
from popsteer.util.writable import check_folder

CONNECT_TIMEOUT_S = 3.0
MLFLOW_SCHEMES = {"", "file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks",
                  "databricks-uc", "uc"}
"""Schemes MLflow ships a tracking store for (SQLAlchemy drivers as ``postgresql+psycopg2``)."""


def check_tcp(host: str, port: int, what: str) -> None:
    """PopSteerError naming ``what`` unless ``host:port`` accepts a TCP connection within the timeout."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise PopSteerError(f"{what} is unreachable: {host}:{port}: {reason}") from None


def _plugin_schemes() -> set[str]:
    """Tracking-store schemes added by installed MLflow plugins."""
    try:
        return {ep.name for ep in metadata.entry_points(group="mlflow.tracking_store")}
    except Exception:  # a broken distribution's metadata must not hide the real error
        return set()


def check_tracking_uri(uri: str, source: str, connect: bool = True) -> None:
    """A scheme MLflow can store runs with, and for a server, one that answers on its port (when ``connect``)."""
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+", 1)[0].lower()
    shown = redact_text(uri)
    if len(scheme) == 1:  # a Windows drive letter: a local path
        return
    if scheme not in MLFLOW_SCHEMES | _plugin_schemes():
        raise PopSteerError(f"{source} {shown!r}: unsupported scheme '{parts.scheme}' "
                            f"(use http(s)://, sqlite:///, file: or a database URI)")
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise PopSteerError(f"{source} {shown!r} names no host")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise PopSteerError(f"{source} {shown!r} has a bad port") from None
        if connect:
            try:
                check_tcp(parts.hostname, port, f"the MLflow tracking server of {source} {shown!r}")
            except PopSteerError as exc:
                raise PopSteerError(f"{exc} (to run anyway and log later with `popsteer mlflow sync`, "
                                    "set mlflow: {if_unreachable: journal} in the sweep file)") from None


def ray_host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``RAY_ADDRESS`` (``host:port``, ``ray://host:port``); None for auto/local."""
    if address in ("auto", "local"):
        return None
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    try:
        port = parts.port or (10001 if parts.scheme == "ray" else None)
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise PopSteerError(f"RAY_ADDRESS {address!r} is not HOST:PORT, ray://HOST:PORT, auto or local")
    return parts.hostname, port


def _ray_connected() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def check_ray_address() -> None:
    """The head named by ``$RAY_ADDRESS`` (when set) accepts connections."""
    address = os.environ.get("RAY_ADDRESS", "").strip()
    if not address or _ray_connected():
        return
    target = ray_host_port(address)
    if target is not None:
        check_tcp(*target, f"the Ray cluster at RAY_ADDRESS={address!r}")


def preflight(tracking_uri: str | None, tracking_source: str, connect: bool = True) -> None:
    """Check the tracking URI (None: tracking off) and the Ray address before anything runs."""
    if tracking_uri is not None:
        check_tracking_uri(tracking_uri, tracking_source, connect)
    check_ray_address()


def preflight_spec(spec) -> None:
    """``preflight`` for a SweepSpec: its local output folders (``popsteer.util.writable``), its tracking URI
    (key, else ``$MLFLOW_TRACKING_URI``) and Ray.

    With ``mlflow.if_unreachable: journal`` a server that does not answer is not an error: the
    sweep journals what it would log (``popsteer.platform.journal``)."""
    connect = spec.mlflow.if_unreachable == "fail"
    for key, folder in (("storage", spec.storage), ("encode.dir", spec.encode.dir), ("data_dir", spec.data_dir)):
        if folder and "://" not in folder:  # local folders the sweep writes: checked before anything runs
            check_folder(f"key '{key}'", folder)
    if not spec.mlflow.enabled:
        preflight(None, "")
    elif spec.mlflow.tracking_uri:
        preflight(spec.mlflow.tracking_uri, "mlflow.tracking_uri", connect)
    else:
        preflight(os.environ.get("MLFLOW_TRACKING_URI") or None, "MLFLOW_TRACKING_URI", connect)
