"""The smoke sweep submitted with ``ray job submit`` to the session's cluster, beside a second user's
sweep and once more under the same name: run once per session (conftest's ``smoke_jobs`` fixture) and
read by the job test (what the cluster and MLflow hold) and the MLflow UI test (what a user sees)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from platform_util import DASHBOARD, ROOT, tracking_uri, wait_for


@dataclass(frozen=True)
class SmokeJobs:
    uri: str
    """The MLflow server both sweeps logged to."""
    experiment: str
    """The smoke sweep's experiment."""
    other: str
    """The second user's experiment."""
    root: Path
    """storage = root/sweeps, data_dir = root/datasets."""
    refused: subprocess.CompletedProcess
    """The same-name submission (``--wait``) while the smoke sweep ran."""
    refused_logs: str
    """Its job logs, from the job server."""
    statuses: dict[str, str]
    """"smoke" and "other" -> their final job status."""
    summary: dict
    """The smoke sweep's sweep_summary.json as the job left it (later tests rerun its stages)."""

    @property
    def storage(self) -> Path:
        return self.root / "sweeps"

    @property
    def data_dir(self) -> Path:
        return self.root / "datasets"


def _submit(ray_cli: str, submission_id: str, *sets: str, wait: bool = False) -> subprocess.CompletedProcess:
    """``ray job submit`` of the smoke sweep with ``--set`` overrides (``--no-wait`` unless ``wait``)."""
    cmd = [ray_cli, "job", "submit", "--address", DASHBOARD, "--submission-id", submission_id, "--working-dir", ".",
           "--runtime-env", "cluster/runtime_env.yaml", *([] if wait else ["--no-wait"]), "--",
           "python", "-m", "popsteer.sweep", "sweeps/smoke.yaml", *(a for v in sets for a in ("--set", v))]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=420)


def _wait_jobs(client, ids: list[str], timeout: float = 480) -> dict[str, str]:
    """Submission id -> final status, polled from the job server."""
    final = {"SUCCEEDED", "FAILED", "STOPPED"}
    return wait_for(lambda: (st := {i: str(client.get_job_status(i).value) for i in ids}) and
                    all(v in final for v in st.values()) and st, timeout, f"jobs {ids}", interval=2)


def submit_smoke_jobs(root: Path, base_checkpoint: Path) -> SmokeJobs:
    """Two users at once: the smoke sweep and a one-trial sweep (on ``base_checkpoint``, no recommender
    training) submitted together; while the smoke sweep runs, the same name submitted again."""
    from ray.job_submission import JobSubmissionClient

    uri = tracking_uri()
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    tag = uuid.uuid4().hex[:8]
    experiment, other = f"popsteer-smoke-test-{tag}", f"popsteer-other-test-{tag}"
    common = (f"storage={root / 'sweeps'}", f"data_dir={root / 'datasets'}", f"mlflow.tracking_uri={uri}")
    ids = {"smoke": f"smoke-{tag}", "other": f"other-{tag}", "again": f"again-{tag}"}
    second = ("name=other", "train_recommender=null", f"base_checkpoint={base_checkpoint}",
              "search.k=[4]", "search.scale=[2]")
    for name, exp, extra in (("smoke", experiment, ()), ("other", other, second)):
        proc = _submit(ray_cli, ids[name], *common, f"mlflow.experiment={exp}", *extra)
        assert proc.returncode == 0, proc.stderr[-2000:]
    lock = root / "sweeps" / "smoke.lock"
    wait_for(lambda: lock.exists() and lock.read_text(), 240, "the smoke sweep's driver holding its lock")
    again = _submit(ray_cli, ids["again"], *common, f"mlflow.experiment={experiment}", wait=True)
    client = JobSubmissionClient(DASHBOARD)
    logs = client.get_job_logs(ids["again"])
    final = _wait_jobs(client, [ids["smoke"], ids["other"]])
    summary = root / "sweeps" / "smoke" / "sweep_summary.json"
    return SmokeJobs(uri, experiment, other, root, again, logs, {k: final[ids[k]] for k in ("smoke", "other")},
                     json.loads(summary.read_text()) if summary.exists() else {})
