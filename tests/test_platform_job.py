"""The smoke sweep submitted with ``ray job submit`` to the real head, read back from the real MLflow server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

from platform_util import DASHBOARD, ROOT, assert_each_trial_once, mlflow_runs, tracking_uri

pytestmark = pytest.mark.usefixtures("platform_services")


@pytest.mark.slow
def test_ray_job_submit_smoke_sweep_logs_to_mlflow(tmp_path):
    dashboard, uri = DASHBOARD, tracking_uri()
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    experiment = f"popsteer-smoke-test-{uuid.uuid4().hex[:8]}"
    cmd = [ray_cli, "job", "submit", "--address", dashboard, "--working-dir", ".",
           "--runtime-env", "cluster/runtime_env.yaml", "--",
           "python", "-m", "popsteer.sweep", "sweeps/smoke.yaml",
           "--set", f"storage={tmp_path / 'sweeps'}", "--set", f"mlflow.experiment={experiment}",
           "--set", f"mlflow.tracking_uri={uri}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-2000:])
    assert "succeeded" in (proc.stdout + proc.stderr)

    client, parents, children = mlflow_runs(uri, experiment)
    keys = {f"k{k}-s{s}-r0" for k in (4, 8) for s in (2, 4)}
    assert_each_trial_once(client, parents, children, keys)
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["dataset"] == "ml-100k" and parent.data.params["search.k"] == "[4, 8]"
    for child in children:
        assert child.data.params["sweep.dataset"] == "ml-100k" and child.data.params["sae.max_epochs"] == "6"
        assert len(client.get_metric_history(child.info.run_id, "valid_fvu")) >= 2
        assert child.info.status == "FINISHED"
    best = parent.data.tags["popsteer.best_trial"]
    assert best in keys and parent.data.metrics["trials"] == 4 and parent.data.metrics["trials_errored"] == 0

    steering = {a.path for a in client.list_artifacts(parent.info.run_id, "steering")}
    assert {"steering/steering_grid.csv", f"steering/tradeoff_{best}.png", "steering/steering_picks.json"} <= steering
    analysis = {a.path for a in client.list_artifacts(parent.info.run_id, f"analysis/{best}")}
    assert f"analysis/{best}/cohens_d.csv" in analysis
    best_child = next(c for c in children if c.data.tags["popsteer.trial_key"] == best)
    assert {a.path for a in client.list_artifacts(best_child.info.run_id, "analysis")} >= {
        "analysis/cohens_d.csv", "analysis/row_stats_popular.csv", "analysis/row_stats_unpopular.csv"}

    local = Path(client.download_artifacts(parent.info.run_id, "steering", str(tmp_path / "dl")))
    grid = pd.read_csv(local / "steering_grid.csv")
    assert set(grid["split"]) == {"valid", "test"} and not grid.duplicated(["split", "num_neurons", "alpha"]).any()
    assert {"ndcg@10", "precision@10", "lt_coverage@10", "gini@10", "arp@10", "ndcg_tail@10"} <= set(grid.columns)
    assert (local / f"tradeoff_{best}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    picks = json.loads((local / "steering_picks.json").read_text())
    assert set(picks) == {best} and "sasrec" in picks[best]["valid_baselines"]
    if picks[best]["pick"] is not None:  # a point within 5% NDCG of SASRec: its test row is the headline
        assert parent.data.metrics["pick_test_ndcg_at_10"] == pytest.approx(picks[best]["test"]["ndcg@10"])
