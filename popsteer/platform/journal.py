"""The MLflow journal: what a sweep logs while its tracking server cannot be reached (replayed by
``popsteer.platform.replay``).

While MLflow answers, ``JournaledTracker`` passes every call to its ``Tracker``. The first call
that cannot reach the server (connection refused or reset, a timeout, a gateway's 502-504)
logs one warning; from then on every call becomes one line of
``<experiment>/mlflow_journal/journal.jsonl`` (a JSON object, appended with one write and
fsync'ed) and the sweep goes on. Files it would upload are copied first to
``mlflow_journal/artifacts/`` (the originals may be rewritten before the replay). The one
exception: the nested runs of grid points (``popsteer.platform.point_runs``) are skipped
while offline, with a log line; rerunning their stage once the server answers logs them.

A record names its run by role, never by a server id it may not have: ``{"parent": true}``
(the sweep's run, found again by ``popsteer.sweep_key``), ``{"trial": KEY}`` (by
``popsteer.trial_key`` under the parent) or ``{"run_id": ID}``. ``popsteer mlflow sync``
replays the records in order through a ``Tracker``, idempotently: runs are found by tag
before any is created, params and tags missing on a run are added, an epoch already in the
run's ``valid_loss`` history, a final summary already there and a metric already logged with
the same step and timestamp are skipped; statuses and artifacts are simply set again. A file
to replay is first renamed ``replaying-<time>.jsonl`` (a sweep still appending starts a new
``journal.jsonl``) and, once replayed, moved to ``synced/``: a second sync finds nothing.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable

from popsteer.util.atomic import atomic_path
from popsteer.errors import PopSteerError
from popsteer.platform.tracking import Tracker, clean_metrics, flatten
from popsteer.util.redact import redact, redact_all, redact_text

log = logging.getLogger(__name__)

JOURNAL_DIR = "mlflow_journal"
JOURNAL_FILE = "journal.jsonl"
OFFLINE_ID = "offline:"  # prefix of the stand-in ids of runs created while the server was unreachable
_UNREACHABLE = ("failed with exception", "failed with timeout exception", "error code 502", "error code 503",
                "error code 504")


def server_unreachable(exc: BaseException) -> bool:
    """Whether an MLflow client error means the server could not be reached (not that it refused the call)."""
    import requests

    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError,
                        TimeoutError)):
        return True
    text = str(exc)
    return text.startswith("API request to") and any(marker in text for marker in _UNREACHABLE)


def _reason(exc: BaseException) -> str:
    """A short why of an unreachable server, e.g. "connection refused"."""
    text = str(exc)
    for marker, reason in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                           ("timeout", "timed out"), ("Connection reset", "connection reset"),
                           ("RemoteDisconnected", "connection closed"), ("error code 50", "gateway error")):
        if marker in text:
            return reason
    return redact_text(text.splitlines()[0][:200])


def _now_ms() -> int:
    return int(time.time() * 1000)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# ------------------------------------------------------------------ the journal files


class Journal:
    """Append-only JSON lines in ``folder/journal.jsonl``; copies of artifact files in ``folder/artifacts/``."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    @property
    def path(self) -> Path:
        return self.folder / JOURNAL_FILE

    def append(self, record: dict) -> None:
        """One record as one line, written with a single O_APPEND write and fsync'ed."""
        line = (json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                _write_all(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise PopSteerError(f"cannot append to the MLflow journal {self.path}: {exc.strerror or exc}") from exc

    def keep(self, path: str | os.PathLike) -> str:
        """A copy of an artifact file inside the journal; returns its path."""
        src = Path(path)
        dest = self.folder / "artifacts" / uuid.uuid4().hex[:12] / src.name
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
        return str(dest)

    def pending(self) -> list[Path]:
        """Files not replayed yet, oldest first."""
        return sorted(self.folder.glob("replaying-*.jsonl")) + ([self.path] if self.path.exists() else [])

    def claim(self) -> list[Path]:
        """Rename ``journal.jsonl`` out of the writers' way; returns every file to replay."""
        if self.path.exists():
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            os.replace(self.path, self.folder / f"replaying-{stamp}.jsonl")
        return self.pending()

    def mark_synced(self, path: Path) -> Path:
        done = self.folder / "synced" / path.name.replace("replaying-", "", 1)
        done.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, done)
        return done


def read_records(path: Path) -> list[dict]:
    """The records of one journal file; an unterminated last line (a writer killed mid-write) is skipped."""
    lines = path.read_bytes().split(b"\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                log.warning("%s: the last line is incomplete (its writer was killed mid-write): skipped", path)
                continue
            raise PopSteerError(f"{path}:{number}: not a journal record") from None
    return records


# ------------------------------------------------------------------ logging through the journal


class JournaledTracker:
    """A ``Tracker`` that, once its server cannot be reached, logs to a ``Journal`` for the rest of its life.

    Staying offline keeps the journal in order: an epoch is never logged online after a later
    one went to the journal. Same methods as ``Tracker``; while offline, runs get stand-in ids.
    """

    def __init__(self, tracker: Tracker, journal_dir: str | os.PathLike) -> None:
        self.tracker = tracker
        self.journal = Journal(journal_dir)
        self.offline = False
        self.parent_run_id: str | None = None
        self._roles: dict[str, dict] = {}  # run id (real or stand-in) -> its role in a record
        self._steps: dict[str, int] = {}  # run id -> last epoch logged or journaled

    @property
    def tracking_uri(self) -> str:
        return self.tracker.tracking_uri

    def _online(self, call: Callable, *args) -> tuple[bool, object]:
        """(True, result) of an MLflow call, or (False, None) when the server is (or just became) unreachable."""
        if self.offline:
            return False, None
        try:
            return True, call(*args)
        except Exception as exc:
            if not server_unreachable(exc):
                raise
            self.offline = True
            log.warning("MLflow at %s cannot be reached (%s): the sweep goes on and logs to %s; replay it once "
                        "the server is back: popsteer mlflow sync --journal %s", redact_text(self.tracking_uri),
                        _reason(exc), self.journal.path, self.journal.folder)
            return False, None

    def _record(self, op: str, run_id: str | None, **args) -> None:
        self.journal.append({"op": op, "run": None if run_id is None else self._roles.get(run_id, {"run_id": run_id}),
                             "args": args, "experiment": self.tracker.experiment, "sweep_key": self.tracker.sweep_key,
                             "tracking_uri": redact_text(self.tracking_uri), "time": _now_ms()})

    # ------------------------------------------------------------ runs

    def start_parent(self, run_name: str, params: dict) -> str:
        flat = flatten(params)
        ok, run_id = self._online(self.tracker.start_parent, run_name, flat)
        if not ok:
            run_id = f"{OFFLINE_ID}parent"
            self._record("start_parent", None, run_name=run_name, params=flat)
        elif self.journal.pending():
            log.warning("%s holds MLflow records of an earlier run that could not reach the server: "
                        "popsteer mlflow sync --journal %s", self.journal.folder, self.journal.folder)
        self._roles[run_id] = {"parent": True}
        self.parent_run_id = run_id
        return run_id

    def child_run(self, key: str, params: dict, tags: dict | None = None) -> str:
        flat, tags = flatten(params), redact_all(tags or {})
        ok, run_id = self._online(self.tracker.child_run, key, flat, tags)
        if not ok:
            run_id = f"{OFFLINE_ID}trial:{key}"
            self._record("child_run", None, key=key, params=flat, tags=tags)
        self._roles[run_id] = {"trial": key}
        return run_id

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        if not self._online(self.tracker.finish, run_id, status)[0]:
            self._record("finish", run_id, status=status, end_time=_now_ms())

    def set_status(self, run_id: str, status: str) -> None:
        if not self._online(self.tracker.set_status, run_id, status)[0]:
            self._record("set_status", run_id, status=status)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        if not self._online(self.tracker.set_tag, run_id, key, value)[0]:
            self._record("set_tag", run_id, key=key, value=redact(key, str(value)))  # no secret on disk

    # ------------------------------------------------------------ metrics and artifacts

    def log_metrics(self, run_id: str, metrics: dict, step: int = 0) -> None:
        clean, now = clean_metrics(metrics), _now_ms()
        if not self._online(self.tracker.log_metrics, run_id, clean, step, now)[0]:
            self._record("log_metrics", run_id, metrics=clean, step=step, timestamp=now)

    def log_epoch(self, run_id: str, step: int, metrics: dict) -> bool:
        clean, now = clean_metrics(metrics), _now_ms()
        ok, logged = self._online(self.tracker.log_epoch, run_id, step, clean, now)
        if not ok:
            if step <= self._steps.get(run_id, -1):
                return False
            self._record("log_epoch", run_id, step=step, metrics=clean, timestamp=now)
            logged = True
        self._steps[run_id] = max(step, self._steps.get(run_id, -1))
        return bool(logged)

    def log_final(self, run_id: str, metrics: dict) -> bool:
        clean, now = clean_metrics(metrics), _now_ms()
        ok, logged = self._online(self.tracker.log_final, run_id, clean, now)
        if not ok:
            self._record("log_final", run_id, metrics=clean, timestamp=now)
            logged = True
        return bool(logged)

    def log_artifacts(self, run_id: str, paths: list[str | Path], artifact_path: str | None = None) -> None:
        if not self._online(self.tracker.log_artifacts, run_id, paths, artifact_path)[0]:
            self._record("log_artifacts", run_id, paths=[self.journal.keep(p) for p in paths],
                         artifact_path=artifact_path)

    def log_point_runs(self, parent_run_id: str, runs: list) -> dict[str, str]:
        """Point runs (``popsteer.platform.point_runs``) are not journaled: offline they are skipped (a log line)."""
        ok, ids = (False, None) if parent_run_id.startswith(OFFLINE_ID) else \
            self._online(self.tracker.log_point_runs, parent_run_id, runs)
        if not ok:
            log.info("MLflow is offline: %d point run(s) under %s not logged (point runs are not journaled; "
                     "rerun the stage once the server answers)", len(runs), parent_run_id)
            return {}
        return ids
