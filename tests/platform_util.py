"""Helpers of the platform tests (the services themselves: tests/services.py, through conftest's fixtures)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from services import DASHBOARD, http_ok, ray_address, tracking_uri  # noqa: F401  (the tests import them from here)

ROOT = Path(__file__).resolve().parents[1]


def connect_ray() -> None:
    """Connect this test process to the running head (conftest's ray_cluster fixture ensures one)."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray.init(address=ray_address(), log_to_driver=False)


def write_sweep(path: Path, **values) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def sweep_env(ray: str, tracking_uri: str) -> dict:
    env = dict(os.environ, RAY_ADDRESS=ray, MLFLOW_TRACKING_URI=tracking_uri, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               PYTHONUNBUFFERED="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def start_sweep(spec: Path, env: dict, log_path: Path, *extra: str) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "popsteer.sweep", str(spec), *extra], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@contextlib.contextmanager
def running_sweep(spec: Path, env: dict, log_path: Path, *extra: str):
    """``start_sweep`` whose driver (its whole process group) is killed on the way out if still running."""
    proc = start_sweep(spec, env, log_path, *extra)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def pid_lines(exp_dir: Path) -> dict[str, list[str]]:
    """Trial key -> its attempts' "pid trial_id" lines (the trainable appends one per start)."""
    folder = exp_dir / "trial_pids"
    if not folder.exists():
        return {}
    return {p.stem: p.read_text().split("\n")[:-1] for p in folder.glob("*.pid")}


def trial_with_epochs(uri: str, experiment: str, exp_dir: Path, epochs: int,
                      pids: set[int] | None = None) -> tuple[str, int] | None:
    """(trial key, pid) of a trial on its first attempt (its process among ``pids`` if given) whose
    MLflow run has >= epochs steps and no final summary yet, if any."""
    from mlflow.tracking import MlflowClient

    running = {key: int(lines[0].split()[0]) for key, lines in pid_lines(exp_dir).items() if len(lines) == 1}
    running = {key: pid for key, pid in running.items() if pids is None or pid in pids}
    if not running:
        return None
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    for run in client.search_runs([exp.experiment_id], "tags.`popsteer.kind` = 'trial'"):
        key = run.data.tags["popsteer.trial_key"]
        steps = len(client.get_metric_history(run.info.run_id, "valid_loss"))
        if key in running and epochs <= steps < 20 and "sae_fvu" not in run.data.metrics:
            return key, running[key]
    return None


def mlflow_runs(tracking_uri: str, experiment: str) -> tuple[object, list, list]:
    """(client, parent runs, child runs) of one MLflow experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("popsteer.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("popsteer.kind") == "trial"]
    return client, parents, children


def assert_each_trial_once(client, parents: list, children: list, expected_keys: set[str]) -> None:
    """One parent; one child per trial key under it; every epoch logged once, epochs 1..n."""
    assert len(parents) == 1, [p.info.run_id for p in parents]
    keys = [c.data.tags["popsteer.trial_key"] for c in children]
    assert sorted(keys) == sorted(expected_keys), keys
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, "valid_loss"))
        assert steps == list(range(1, len(steps) + 1)), (child.data.tags["popsteer.trial_key"], steps)
        assert "sae_fvu" in child.data.metrics and child.data.params["sae.k"] == str(child.data.params["trial.k"])
