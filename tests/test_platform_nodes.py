"""A Ray node lost mid-sweep: a third node joins the test cluster, a trial runs on it, its raylet is
SIGKILLed (the node, not one worker process), and the sweep still finishes with every trial and every
grid point logged once and the grid the single-process grid stage computes on the same SAE. The
sweep's work is spread over the nodes: trials on all three, evaluator actors on the two left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from platform_util import (assert_each_trial_once, mlflow_runs, pid_lines, ray_address, running_sweep, sweep_env,
                           trial_with_epochs, tracking_uri, wait_for, write_sweep)

pytestmark = pytest.mark.usefixtures("platform_services")

DOOMED = "doomed_node"
KEYS = {f"k{k}-s{s}-r0" for k in (4, 8) for s in (2, 4)}
EPOCHS = 12
STEERING = {"ns": [16, 64], "alphas": [1.0, 2.5], "evaluators": 2, "cpus_per_evaluator": 0.5}


@pytest.fixture
def doomed_node():
    """A third node (1 CPU, the ``doomed_node`` resource, its own Ray temp folder): (pgid, node id)."""
    from services import alive_nodes, start_worker_node, stop_group

    folder = Path(tempfile.mkdtemp(prefix="ps-dn-"))  # short: Ray's socket paths must fit 107 bytes
    pgid = start_worker_node(ray_address(), folder, resource=DOOMED, name="doomed")
    node_id = next(n["node_id"] for n in alive_nodes() if DOOMED in n.get("resources_total", {}))
    try:
        yield pgid, node_id
    finally:
        stop_group(pgid, timeout=5)  # what the kill left (log monitor, agents)
        shutil.rmtree(folder, ignore_errors=True)


def _pids_on(node_id: str) -> set[int]:
    """Worker pids of the alive actors on a node (Ray state API)."""
    from ray.util.state import list_actors

    return {a.pid for a in list_actors(address=ray_address(), filters=[("state", "=", "ALIVE")], detail=True,
                                       limit=1000, raise_on_missing_output=False) if a.node_id == node_id and a.pid}


def _raylets(pgid: int) -> list[int]:
    """The raylet processes of the node started as process group pgid (/proc: no psutil here)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid and b"raylet" in (entry / "cmdline").read_bytes().split(b"\0")[0]:
                out.append(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
    return out


def _spec(tmp_path: Path, base: Path, encoded_root: Path, experiment: str) -> Path:
    return write_sweep(
        tmp_path / "sweep.yaml", name="nodeloss", dataset="ml-100k", base_checkpoint=str(base),
        storage=str(tmp_path / "sweeps"), data_dir=str(tmp_path / "datasets"),
        search={"k": [4, 8], "scale": [2, 4], "sae": {"max_epochs": EPOCHS, "min_epochs": EPOCHS, "patience": 50}},
        resources={"cpu": 1}, max_failures=3, mlflow={"experiment": experiment}, encode={"dir": str(encoded_root)},
        stages={"trials": "best", "analysis": True, "steering": STEERING})


@pytest.mark.slow
def test_worker_node_killed_mid_sweep(tmp_path, small_sasrec, tmp_path_factory, doomed_node):
    pgid, node_id = doomed_node
    env = sweep_env(ray_address(), tracking_uri())
    experiment = f"popsteer-nodeloss-test-{uuid.uuid4().hex[:8]}"
    spec = _spec(tmp_path, small_sasrec[1], tmp_path_factory.getbasetemp() / "encoded", experiment)
    exp_dir = tmp_path / "sweeps" / "nodeloss"
    with running_sweep(spec, env, tmp_path / "driver.log") as proc:
        # 4 one-CPU trials on 4 CPUs (head 2, worker 1, this node 1): one of them runs here
        key, _ = wait_for(lambda: trial_with_epochs(env["MLFLOW_TRACKING_URI"], experiment, exp_dir, 2,
                                                    _pids_on(node_id)), 300, "a trial with 2 epochs on the third node")
        raylets = _raylets(pgid)
        assert raylets, "no raylet found in the third node's process group"
        for pid in raylets:
            os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=480) == 0, (tmp_path / "driver.log").read_text()[-4000:]
    assert len(pid_lines(exp_dir)[key]) >= 2, "the trial on the lost node was not restarted"
    sweep = json.loads((exp_dir / "stages" / "sweep.json").read_text())
    assert sweep["errors"] == 0 and len(sweep["trials"]) == 4 and all(t["finished"] for t in sweep["trials"])

    client, parents, children = mlflow_runs(env["MLFLOW_TRACKING_URI"], experiment)
    assert_each_trial_once(client, parents, children, KEYS)
    assert all(len(client.get_metric_history(c.info.run_id, "valid_loss")) == EPOCHS for c in children)
    (best,) = sweep["selected"]
    best_run = next(c for c in children if c.data.tags["popsteer.trial_key"] == best)
    points = client.search_runs([best_run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{best_run.info.run_id}'"
                                " and tags.`popsteer.kind` = 'point'", max_results=1000)
    point_keys = [r.data.tags["popsteer.point_key"] for r in points]
    assert len(point_keys) == len(set(point_keys)) == 2 * 2 + 2  # 4 grid points and the two references
    _assert_grid_equals_single_process(spec, exp_dir, best)
    _assert_spread(exp_dir, node_id)


def _assert_spread(exp_dir: Path, doomed_id: str) -> None:
    """The sweep's Tune trials ran on all three nodes, and its evaluator actors (started after the third
    node died) on the head and the second node: actors of the sweep's Ray job, from the state API."""
    from ray.util.state import list_actors

    from services import WORKER_RESOURCE, alive_nodes

    job_id = json.loads((exp_dir / "sweep_summary.json").read_text())["ray_job_id"]
    for _ in range(60):  # the GCS marks a node whose raylet died dead only after its health checks fail
        alive = {n["node_id"]: WORKER_RESOURCE in n.get("resources_total", {}) for n in alive_nodes()}
        if doomed_id not in alive:
            break
        time.sleep(1.0)
    assert sorted(alive.values()) == [False, True], alive  # the head and the second node are left
    for _ in range(10):  # the state API answers from the GCS's actor table, which can lag a moment behind
        actors = list_actors(address=ray_address(), filters=[("job_id", "=", job_id)], detail=True, limit=1000,
                             raise_on_missing_output=False)
        trials = {a.node_id for a in actors if a.class_name == "ImplicitFunc"}  # Tune's function trainables
        if trials:
            break
        time.sleep(1.0)
    evaluators = {a.node_id for a in actors if a.class_name == "GridEvaluator"}
    assert trials == set(alive) | {doomed_id}, (trials, alive, doomed_id)
    assert evaluators == set(alive), (evaluators, alive)


def _assert_grid_equals_single_process(spec_path: Path, exp_dir: Path, best: str) -> None:
    """The sweep's grid (on evaluator actors, one of whose nodes died) equals the grid stage run in this
    process on the same SAE and encodings."""
    import pandas as pd

    from popsteer.platform.steps import grid_config, sae_ref
    from popsteer.platform.sweep_file import load_spec
    from popsteer.stages.config import GridStageConfig
    from popsteer.stages.encoded import Encodings
    from popsteer.stages.grid import steering_grid

    spec = load_spec(spec_path)
    summary = json.loads((exp_dir / "sweep_summary.json").read_text())
    trial = next(t for t in summary["sweep"]["trials"] if t["trial_key"] == best)
    (table,) = [f for f in summary["steering"]["files"][best] if f.endswith("steering_grid.csv")]
    swept = pd.read_csv(table)
    local = steering_grid(GridStageConfig(sae_ref(spec, trial["sae_checkpoint"]), grid_config(spec)), write=False,
                          encodings=Encodings(summary["encoded_dir"]))
    mine = pd.DataFrame([{"split": sp, **r} for sp in local.rows for r in local.rows[sp]])
    mine.to_csv(exp_dir / "local_grid.csv", index=False)  # as the grid stage writes its table
    pd.testing.assert_frame_equal(swept, pd.read_csv(exp_dir / "local_grid.csv")[swept.columns], check_exact=True)
