"""MLflow tracking of a sweep: one parent run per sweep, one child run per trial, no duplicates.

Tracking URI: the sweep file's ``mlflow.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else
``sqlite:///<repo>/mlflow/mlflow.db`` with artifacts under ``<repo>/mlflow/artifacts`` (any other
SQLite store keeps them in ``artifacts/`` beside its database; a server, where it is told to).

Runs are found again by tags rather than remembered: the parent by ``popsteer.sweep_key``
(the experiment folder), a child by ``popsteer.trial_key`` (k, scale and repeat of the
trial) under that parent. A restored sweep or a retried trial therefore resumes its run,
and an epoch already logged (its step is in the run's ``valid_loss`` history) is not logged
again. All logging happens in the driver (``MlflowTrialCallback``); trials never talk to MLflow.

An http(s) server is asked with short timeouts (``HTTP_CLIENT_DEFAULTS``, overridable by the
same environment variables); when it cannot be reached the sweep's ``JournaledTracker``
(``popsteer.platform.journal``) keeps everything in a local journal for ``popsteer mlflow sync``.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from ray.tune import Callback

from popsteer.errors import PopSteerError
from popsteer.util.redact import CREDENTIALS_ENV, redact, redact_all, redact_text
from popsteer.util.safepaths import REPO_ROOT

log = logging.getLogger(__name__)

SWEEP_KEY_TAG = "popsteer.sweep_key"
TRIAL_KEY_TAG = "popsteer.trial_key"
TRIAL_ID_TAG = "popsteer.trial_id"
STEP_METRIC = "valid_loss"
FINAL_MARKER = "sae_fvu"
# a down server costs seconds, not MLflow's default 7 retries with 120 s timeouts
HTTP_CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def default_tracking_uri() -> str:
    return f"sqlite:///{REPO_ROOT / 'mlflow' / 'mlflow.db'}"


def resolve_tracking_uri(configured: str | None = None) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def flatten(values: dict, prefix: str = "") -> dict[str, str]:
    """Nested dict -> {"a.b.c": str(value)} (MLflow params), credentials redacted (``popsteer.util.redact``)."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = redact(name, str(value))
    return out


def clean_metrics(metrics: dict) -> dict[str, float]:
    """The finite numbers of ``metrics`` under names MLflow accepts ('@' -> '_at_')."""
    return {k.replace("@", "_at_"): float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def configure_http_client(tracking_uri: str) -> None:
    """Short MLflow HTTP timeouts and few retries for an http(s) URI (environment values win)."""
    if tracking_uri.startswith(("http://", "https://")):
        for name, value in HTTP_CLIENT_DEFAULTS.items():
            os.environ.setdefault(name, value)


def refusal(exc: Exception, tracking_uri: str, experiment: str) -> PopSteerError | None:
    """One line for a server refusing the credentials (HTTP 401) or the user (403), else None (retrying cannot help)."""
    status = exc.get_http_status_code() if hasattr(exc, "get_http_status_code") else None
    where = f"MLflow at {redact_text(tracking_uri)} refused"
    if status == 401:
        return PopSteerError(f"{where} the request: not authenticated (HTTP 401); export {CREDENTIALS_ENV}")
    if status == 403:
        return PopSteerError(f"{where} user '{os.environ.get('MLFLOW_TRACKING_USERNAME', '?')}' on experiment "
                             f"'{experiment}' (HTTP 403, permission denied): ask the server's admin for a permission")
    return None


class Tracker:
    """Get-or-create MLflow runs by tag and log to them. Picklable (the client is rebuilt lazily)."""

    def __init__(self, tracking_uri: str, experiment: str, sweep_key: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.sweep_key = sweep_key
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._client = None
        self._last_step: dict[str, int] = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_client"] = None
        state["_last_step"] = {}
        return state

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            if self.tracking_uri.startswith("sqlite:///"):
                Path(self.tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
            configure_http_client(self.tracking_uri)
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    # ------------------------------------------------------------ runs

    def _experiment_id(self) -> str:
        if self.experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                location = None  # a server stores artifacts where its --artifacts-destination says
                if self.tracking_uri == default_tracking_uri():
                    location = (REPO_ROOT / "mlflow" / "artifacts" / self.experiment).as_uri()
                elif self.tracking_uri.startswith("sqlite:///"):  # beside the database, not in the cwd
                    db = Path(self.tracking_uri[len("sqlite:///"):])
                    location = (db.parent / "artifacts" / self.experiment).as_uri()
                try:
                    self.experiment_id = self.client.create_experiment(self.experiment, artifact_location=location)
                except Exception:  # created concurrently by another process
                    found = self.client.get_experiment_by_name(self.experiment)
                    if found is None:
                        raise
                    self.experiment_id = found.experiment_id
            else:
                self.experiment_id = found.experiment_id
        return self.experiment_id

    def _find(self, filter_string: str):
        runs = self.client.search_runs([self._experiment_id()], filter_string=filter_string, max_results=10,
                                       order_by=["attributes.start_time ASC"])
        if len(runs) > 1:
            log.warning("%d MLflow runs match %s: using the oldest", len(runs), filter_string)
        return runs[0] if runs else None

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in sorted(params.items())]
        for s in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[s : s + 100])

    def start_parent(self, run_name: str, params: dict) -> str:
        """The sweep's parent run (created once; resumed afterwards). The sweep's first call to the server,
        so a refused login or permission stops the sweep here, with one line (``refusal``)."""
        try:
            return self._start_parent(run_name, params)
        except Exception as exc:
            error = refusal(exc, self.tracking_uri, self.experiment)
            if error is None:
                raise
            raise error from None

    def _start_parent(self, run_name: str, params: dict) -> str:
        run = self._find(f"tags.`{SWEEP_KEY_TAG}` = '{self.sweep_key}'")
        if run is None:
            run = self.client.create_run(self._experiment_id(), run_name=run_name,
                                         tags={SWEEP_KEY_TAG: self.sweep_key, "popsteer.kind": "sweep"})
            self._log_params(run.info.run_id, flatten(params))
            log.info("MLflow parent run %s (%s) in experiment '%s'", run.info.run_id, redact_text(self.tracking_uri),
                     self.experiment)
        else:
            self._log_missing_params(run, params)
            self.client.update_run(run.info.run_id, status="RUNNING")
            log.info("MLflow parent run %s resumed", run.info.run_id)
        self.parent_run_id = run.info.run_id
        return self.parent_run_id

    def child_run(self, key: str, params: dict, tags: dict | None = None) -> str:
        """The child run of one trial (get or create by its key)."""
        run = self._find(f"tags.`{TRIAL_KEY_TAG}` = '{key}' and tags.`mlflow.parentRunId` = '{self.parent_run_id}'")
        if run is None:
            run = self.client.create_run(self._experiment_id(), run_name=key, tags={
                "mlflow.parentRunId": self.parent_run_id, TRIAL_KEY_TAG: key, "popsteer.kind": "trial",
                **redact_all(tags or {})})
            self._log_params(run.info.run_id, flatten(params))
        else:
            self._log_missing_params(run, params)
        return run.info.run_id

    def _log_missing_params(self, run, params: dict) -> None:
        """A run found again may lack its params: a driver killed between create_run and log_batch."""
        missing = {k: v for k, v in flatten(params).items() if k not in run.data.params}
        if missing:
            log.info("MLflow run %s: logging %d params it was created without", run.info.run_id, len(missing))
            self._log_params(run.info.run_id, missing)

    def finish(self, run_id: str, status: str = "FINISHED", end_time: int | None = None) -> None:
        self.client.set_terminated(run_id, status=status, end_time=end_time)

    def set_status(self, run_id: str, status: str) -> None:
        self.client.update_run(run_id, status=status)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, redact(key, str(value)))

    # ------------------------------------------------------------ metrics and artifacts

    def last_step(self, run_id: str) -> int:
        if run_id not in self._last_step:
            history = self.client.get_metric_history(run_id, STEP_METRIC)
            self._last_step[run_id] = max((m.step for m in history), default=-1)
        return self._last_step[run_id]

    def log_metrics(self, run_id: str, metrics: dict, step: int = 0, timestamp: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000) if timestamp is None else timestamp
        items = [Metric(k, v, now, step) for k, v in clean_metrics(metrics).items()]
        for s in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[s : s + 1000])

    def log_epoch(self, run_id: str, step: int, metrics: dict, timestamp: int | None = None) -> bool:
        """Log one epoch's metrics unless that step is already there. Returns whether it logged."""
        if step <= self.last_step(run_id):
            return False
        self.log_metrics(run_id, metrics, step, timestamp)
        self._last_step[run_id] = step
        return True

    def log_final(self, run_id: str, metrics: dict, timestamp: int | None = None) -> bool:
        """Log a trial's final summary once (its marker metric ``sae_fvu`` says it is there)."""
        if FINAL_MARKER in self.client.get_run(run_id).data.metrics:
            return False
        self.log_metrics(run_id, metrics, timestamp=timestamp)
        return True

    def log_artifacts(self, run_id: str, paths: list[str | Path], artifact_path: str | None = None) -> None:
        for path in paths:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_point_runs(self, parent_run_id: str, runs: list) -> dict[str, str]:
        """Nested runs of evaluated points under a run, each once (``popsteer.platform.point_runs``)."""
        from popsteer.platform.point_runs import write_point_runs

        return write_point_runs(self.client, self._experiment_id(), parent_run_id, runs)


class MlflowTrialCallback(Callback):
    """Tune callback (driver side): a child run per trial, per-epoch metrics, status updates."""

    def __init__(self, tracker: Tracker, sweep_params: dict, trial_params) -> None:
        self.tracker = tracker
        self.sweep_params = sweep_params
        self.trial_params = trial_params  # callable: trial config -> dict of resolved params
        self._runs: dict[str, str] = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_runs"] = {}
        return state

    def _run(self, trial) -> str:
        from popsteer.platform.trainable import trial_key

        key = trial_key(trial.config)
        if key not in self._runs:
            params = {"sweep": self.sweep_params, **self.trial_params(trial.config)}
            self._runs[key] = self.tracker.child_run(key, params, {TRIAL_ID_TAG: trial.trial_id})
        return self._runs[key]

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.tracker.set_status(self._run(trial), "RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        run_id = self._run(trial)
        if result.get("final"):
            summary = {k: v for k, v in result.items() if k in FINAL_KEYS or k.startswith(("sae_", "valid_ndcg"))}
            summary.update({f"best_{k}": result[k] for k in ("valid_loss", "valid_fvu") if k in result})
            self.tracker.log_final(run_id, summary)
        elif "epoch" in result:
            self.tracker.log_epoch(run_id, int(result["epoch"]), {k: result[k] for k in EPOCH_KEYS if k in result})

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.tracker.finish(self._run(trial), "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.tracker.finish(self._run(trial), "FAILED")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self.tracker.set_tag(self._run(trial), "popsteer.retried", "true")


EPOCH_KEYS = ("train_loss", "train_fvu", "valid_fvu", "valid_auxk", "valid_loss", "dead_fraction", "lr", "seconds")
FINAL_KEYS = ("best_epoch", "epochs_trained", "train_minutes")
