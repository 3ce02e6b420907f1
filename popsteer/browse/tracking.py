"""The neuron browser in MLflow: the whole site folder as one artifact directory of a run.

MLflow serves a run's artifacts file by file, so the site opens from a downloaded copy (its pages
link each other and ``assets/`` relatively). mlflow is imported only when logging.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from popsteer.errors import PopSteerError

log = logging.getLogger(__name__)

ARTIFACT_DIR = "neuron_browser"


def check_tracking() -> None:
    """Refuse before any work when no tracking server is configured."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        raise PopSteerError("--mlflow needs MLFLOW_TRACKING_URI (the tracking server, e.g. http://127.0.0.1:5000)")


def log_site(site: str | Path, run_id: str | None = None, run_name: str | None = None,
             tags: dict[str, str] | None = None, client=None) -> str:
    """``mlflow.log_artifacts(site, "neuron_browser")`` into a run; returns the run's id.

    The run: with ``client`` (an ``MlflowClient``, e.g. the platform tracker's ``client``), ``run_id``
    through that client, no fluent run state touched; else ``run_id`` when given (reopened), else the
    active run (e.g. the analysis stage's), else a new run named ``run_name`` with ``tags``. Tracking
    errors become one PopSteerError line.
    """
    site = Path(site)
    if not (site / "index.html").is_file():
        raise PopSteerError(f"{site} is not a neuron browser site (no index.html)")
    import mlflow

    try:
        if client is not None:
            if run_id is None:
                raise PopSteerError("log_site: a client needs the run_id to log into")
            client.log_artifacts(run_id, str(site), ARTIFACT_DIR)
        elif run_id is None and mlflow.active_run() is not None:
            mlflow.log_artifacts(str(site), ARTIFACT_DIR)
            run_id = mlflow.active_run().info.run_id
        else:
            with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name,
                                  tags=None if run_id else {"popsteer.kind": "neuron_browser", **(tags or {})}) as run:
                mlflow.log_artifacts(str(site), ARTIFACT_DIR)
                run_id = run.info.run_id
    except (mlflow.exceptions.MlflowException, OSError) as exc:
        raise PopSteerError(f"MLflow logging failed (the site is written): {str(exc).splitlines()[0]}") from None
    log.info("neuron browser logged to MLflow run %s under %s/", run_id, ARTIFACT_DIR)
    return run_id
