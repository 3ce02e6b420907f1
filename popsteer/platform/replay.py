"""Replaying an MLflow journal (``popsteer mlflow sync``): the records of a sweep that could not
reach its tracking server, applied in order to a server, idempotently (see ``popsteer.platform.journal``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from popsteer.errors import PopSteerError
from popsteer.platform.journal import JOURNAL_DIR, JOURNAL_FILE, Journal, _reason, read_records, server_unreachable
from popsteer.platform.tracking import SWEEP_KEY_TAG, Tracker, resolve_tracking_uri
from popsteer.util.redact import MASK, redact_text

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ replay


class Replayer:
    """Applies the records of one sweep (experiment + sweep key) to a server, idempotently."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self._children: dict[str, str] = {}

    def parent(self) -> str:
        t = self.tracker
        if t.parent_run_id is None:
            run = t._find(f"tags.`{SWEEP_KEY_TAG}` = '{t.sweep_key}'")
            t.parent_run_id = run.info.run_id if run else t.start_parent(Path(t.sweep_key).name, {})
        return t.parent_run_id

    def child(self, key: str, tags: dict | None = None) -> str:
        self.parent()
        if key not in self._children or tags:
            self._children[key] = self.tracker.child_run(key, {}, tags)
        return self._children[key]

    def run_id(self, role: dict) -> str:
        if "run_id" in role:
            return role["run_id"]
        return self.parent() if role.get("parent") else self.child(role["trial"])

    def _add_missing(self, run_id: str, params: dict[str, str], tags: dict[str, str]) -> None:
        data = self.tracker.client.get_run(run_id).data
        missing = {k: v for k, v in params.items() if k not in data.params}
        if missing:
            self.tracker._log_params(run_id, missing)
        for key, value in tags.items():
            if data.tags.get(key) != value:
                self.tracker.set_tag(run_id, key, value)

    def _new_metrics(self, run_id: str, metrics: dict, step: int, timestamp: int) -> dict:
        """The metrics not yet logged at this step and timestamp."""
        history = self.tracker.client.get_metric_history
        return {k: v for k, v in metrics.items()
                if not any(m.step == step and m.timestamp == timestamp for m in history(run_id, k))}

    def apply(self, record: dict) -> None:
        op, a, t = record["op"], record["args"], self.tracker
        if op == "start_parent":
            t.parent_run_id = None
            run_id = t.start_parent(a["run_name"], {})
            self._add_missing(run_id, a["params"], {})
        elif op == "child_run":
            self._add_missing(self.child(a["key"], a["tags"]), a["params"], a["tags"])
        else:
            run_id = self.run_id(record["run"])
            if op == "log_metrics":
                new = self._new_metrics(run_id, a["metrics"], a["step"], a["timestamp"])
                if new:
                    t.log_metrics(run_id, new, a["step"], a["timestamp"])
            elif op == "log_epoch":
                t.log_epoch(run_id, a["step"], a["metrics"], a["timestamp"])
            elif op == "log_final":
                t.log_final(run_id, a["metrics"], a["timestamp"])
            elif op == "log_artifacts":
                missing = [p for p in a["paths"] if not Path(p).is_file()]
                if missing:
                    raise PopSteerError(f"the journal's copy {missing[0]} is gone: cannot upload it")
                t.log_artifacts(run_id, a["paths"], a["artifact_path"])
            elif op == "set_tag":
                t.set_tag(run_id, a["key"], a["value"])
            elif op == "set_status":
                t.set_status(run_id, a["status"])
            elif op == "finish":
                t.finish(run_id, a["status"], a["end_time"])
            else:
                raise PopSteerError(f"unknown journal record '{op}'")


def _target_uri(record: dict, override: str | None) -> str:
    if override:
        return override
    uri = record.get("tracking_uri") or ""
    if MASK in uri:
        raise PopSteerError(f"the sweep's tracking URI had credentials, which the journal never holds ({uri}): "
                            "pass --tracking-uri")
    return uri or resolve_tracking_uri(None)


def find_journals(journal: str | None = None, directory: str | None = None) -> list[Path]:
    """The journal folder named (or the folder of the file named), else every ``mlflow_journal/`` under a folder."""
    if journal:
        path = Path(journal)
        folder = path if path.is_dir() else path.parent
        if not (folder / JOURNAL_FILE).exists() and not list(folder.glob("replaying-*.jsonl")) \
                and not (folder / "synced").is_dir():
            raise PopSteerError(f"no MLflow journal at {path} (expected a {JOURNAL_DIR}/ folder or its {JOURNAL_FILE})")
        return [folder]
    root = Path(directory or ".")
    if not root.is_dir():
        raise PopSteerError(f"{root} is not a folder")
    return sorted({p for p in [root, *root.rglob(JOURNAL_DIR)] if p.is_dir() and p.name == JOURNAL_DIR})


def replay(folders: list[Path], tracking_uri: str | None = None) -> dict:
    """Replay every pending journal file of ``folders``; a replayed file is moved to ``synced/``."""
    from mlflow.exceptions import MlflowException
    from requests.exceptions import RequestException

    replayers: dict[tuple, Replayer] = {}
    synced, records = [], 0
    for folder in folders:
        journal = Journal(folder)
        for path in journal.claim():
            for number, record in enumerate(read_records(path), 1):
                key = (_target_uri(record, tracking_uri), record["experiment"], record["sweep_key"])
                if key not in replayers:
                    replayers[key] = Replayer(Tracker(*key))
                try:
                    replayers[key].apply(record)
                except (MlflowException, RequestException) as exc:
                    why = "cannot be reached" if server_unreachable(exc) else "refused a record"
                    raise PopSteerError(f"MLflow at {redact_text(key[0])} {why} ({path.name} record {number}, "
                                        f"{record['op']}): {_reason(exc)}; nothing is lost, sync again") from exc
                records += 1
            synced.append(str(journal.mark_synced(path)))
            log.info("replayed %s into MLflow", path)
    return {"journals": len(synced), "records": records, "synced": synced,
            "tracking_uris": sorted({redact_text(k[0]) for k in replayers})}


def sync(journal: str | None, directory: str | None, tracking_uri: str | None = None) -> dict:
    """``popsteer mlflow sync``: replay every journal named by ``journal`` or found under ``directory``."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # stdout is the JSON result
    folders = find_journals(journal, directory)
    if not folders:
        log.info("no %s folder under %s: nothing to replay", JOURNAL_DIR, directory)
    return replay(folders, tracking_uri)
