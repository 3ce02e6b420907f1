"""Fault tolerance of a sweep on the real head: a trial's worker killed mid-sweep is retried, a sweep
whose driver and head died is resumed on the restarted head with Tuner.restore, and MLflow holds every
trial exactly once."""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

import pytest

from platform_util import (assert_each_trial_once, mlflow_runs, pid_lines, ray_address, running_sweep, start_sweep,
                           sweep_env, trial_with_epochs, tracking_uri, wait_for, write_sweep)

pytestmark = pytest.mark.usefixtures("platform_services")

KEYS = {f"k{k}-s{s}-r0" for k in (4, 8) for s in (2, 4)}
EPOCHS = 12


def _spec(tmp_path: Path, base: Path, encoded_root: Path, experiment: str, epochs: int) -> Path:
    return write_sweep(
        tmp_path / "sweep.yaml", name="recovery", dataset="ml-100k", base_checkpoint=str(base),
        storage=str(tmp_path / "sweeps"), data_dir=str(tmp_path / "datasets"),
        search={"k": [4, 8], "scale": [2, 4], "sae": {"max_epochs": epochs, "min_epochs": epochs, "patience": 50}},
        resources={"cpu": 1}, max_failures=2, mlflow={"experiment": experiment},
        encode={"dir": str(encoded_root)}, stages={"trials": "none"})


def _finished_trials(exp_dir: Path) -> dict:
    return json.loads((exp_dir / "stages" / "sweep.json").read_text())


@pytest.mark.slow
def test_killed_trial_worker_is_retried_and_logged_once(tmp_path, small_sasrec, tmp_path_factory):
    env = sweep_env(ray_address(), tracking_uri())
    experiment = f"popsteer-kill-test-{uuid.uuid4().hex[:8]}"
    spec = _spec(tmp_path, small_sasrec[1], tmp_path_factory.getbasetemp() / "encoded", experiment, epochs=EPOCHS)
    exp_dir = tmp_path / "sweeps" / "recovery"
    with running_sweep(spec, env, tmp_path / "driver.log") as proc:
        key, pid = wait_for(lambda: trial_with_epochs(env["MLFLOW_TRACKING_URI"], experiment, exp_dir, 3), 240,
                            "a running trial with 3 epochs logged")
        os.kill(pid, signal.SIGKILL)  # mid-training: its epochs 1..3+ are already in MLflow
        assert proc.wait(timeout=300) == 0, (tmp_path / "driver.log").read_text()[-4000:]
    assert len(pid_lines(exp_dir)[key]) >= 2, "the killed trial was not restarted"
    sweep = _finished_trials(exp_dir)
    assert sweep["errors"] == 0 and all(t["finished"] for t in sweep["trials"]) and len(sweep["trials"]) == 4
    client, parents, children = mlflow_runs(env["MLFLOW_TRACKING_URI"], experiment)
    assert_each_trial_once(client, parents, children, KEYS)
    for child in children:
        history = client.get_metric_history(child.info.run_id, "valid_loss")
        assert len(history) == EPOCHS


@pytest.mark.slow
def test_head_restart_resumes_with_tuner_restore(tmp_path, small_sasrec, tmp_path_factory):
    """The driver and the whole cluster (head and second node) die mid-sweep; the head is started again
    and the same command with --resume continues the sweep through Tuner.restore."""
    from services import restart_ray

    env = sweep_env(ray_address(), tracking_uri())
    experiment = f"popsteer-resume-test-{uuid.uuid4().hex[:8]}"
    spec = _spec(tmp_path, small_sasrec[1], tmp_path_factory.getbasetemp() / "encoded", experiment, epochs=EPOCHS)
    exp_dir = tmp_path / "sweeps" / "recovery"
    with running_sweep(spec, env, tmp_path / "driver.log") as proc:
        def some_trial_done_and_state_saved():
            done = [p for p in exp_dir.glob("*/checkpoint_*/summary.json")]
            return done and list(exp_dir.glob("experiment_state*.json")) and len(pid_lines(exp_dir)) >= 3
        wait_for(some_trial_done_and_state_saved, 240, "a finished trial and a saved experiment state")
        os.killpg(proc.pid, signal.SIGKILL)  # the driver dies mid-sweep, without cleaning up
        proc.wait(timeout=30)
    restart_ray()  # then the head: every Ray process stopped, the head and the second node started anew
    assert not (exp_dir / "stages" / "sweep.json").exists()
    resumed = start_sweep(spec, env, tmp_path / "driver2.log", "--resume")
    assert resumed.wait(timeout=300) == 0, (tmp_path / "driver2.log").read_text()[-4000:]
    sweep = _finished_trials(exp_dir)
    assert sweep["restored"] is True
    assert sweep["errors"] == 0 and sorted(t["trial_key"] for t in sweep["trials"]) == sorted(KEYS)
    assert all(t["finished"] for t in sweep["trials"])
    client, parents, children = mlflow_runs(env["MLFLOW_TRACKING_URI"], experiment)
    assert_each_trial_once(client, parents, children, KEYS)
    for child in children:
        assert len(client.get_metric_history(child.info.run_id, "valid_loss")) == EPOCHS
