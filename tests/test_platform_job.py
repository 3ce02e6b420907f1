"""The smoke sweep submitted with ``ray job submit`` to the real two-node cluster (beside a second user's
sweep, and once more under the same name, which its storage lock refuses), read back from the real
MLflow server, then its best SAE used by the CLI as it is (``popsteer steer``,
``report --tiny``, ``status``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from platform_util import ROOT, assert_each_trial_once, mlflow_runs


@pytest.mark.slow
def test_ray_job_submit_smoke_sweep_logs_to_mlflow(smoke_jobs):
    """Two users at once: the smoke sweep and a one-trial sweep submitted together both finish, each under
    its own MLflow parent; the smoke sweep submitted again while it runs is refused by its storage lock."""
    uri, experiment, other, tmp_path = smoke_jobs.uri, smoke_jobs.experiment, smoke_jobs.other, smoke_jobs.root
    assert smoke_jobs.refused.returncode != 0
    logs = smoke_jobs.refused_logs
    refused = [line for line in logs.splitlines() if line.startswith("error:")]
    assert len(refused) == 1 and "sweep 'smoke' is already running" in refused[0], logs[-2000:]
    assert "Traceback" not in logs
    assert smoke_jobs.statuses == {"smoke": "SUCCEEDED", "other": "SUCCEEDED"}

    _, other_parents, other_children = mlflow_runs(uri, other)
    assert [p.data.params["name"] for p in other_parents] == ["other"]
    assert [c.data.tags["popsteer.trial_key"] for c in other_children] == ["k4-s2-r0"]
    assert all(c.data.tags["mlflow.parentRunId"] == other_parents[0].info.run_id for c in other_children)
    client, parents, children = mlflow_runs(uri, experiment)
    keys = {f"k{k}-s{s}-r0" for k in (4, 8) for s in (2, 4)}
    assert_each_trial_once(client, parents, children, keys)  # nothing of the refused or the other sweep
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.params["name"] == "smoke"
    assert parent.data.params["dataset"] == "ml-100k" and parent.data.params["search.k"] == "[4, 8]"
    for child in children:
        assert child.data.params["sweep.dataset"] == "ml-100k" and child.data.params["sae.max_epochs"] == "6"
        assert len(client.get_metric_history(child.info.run_id, "valid_fvu")) >= 2
        assert child.info.status == "FINISHED"
    best = parent.data.tags["popsteer.best_trial"]
    assert best in keys and parent.data.metrics["trials"] == 4 and parent.data.metrics["trials_errored"] == 0

    steering = {a.path for a in client.list_artifacts(parent.info.run_id, "steering")}
    assert {"steering/steering_grid.csv", "steering/tradeoff.png", "steering/steering_pick.json"} <= steering
    analysis = {a.path for a in client.list_artifacts(parent.info.run_id, f"analysis/{best}")}
    assert f"analysis/{best}/cohens_d.csv" in analysis
    best_child = next(c for c in children if c.data.tags["popsteer.trial_key"] == best)
    assert {a.path for a in client.list_artifacts(best_child.info.run_id, "analysis")} >= {
        "analysis/cohens_d.csv", "analysis/row_stats_popular.csv", "analysis/row_stats_unpopular.csv"}

    local = Path(client.download_artifacts(parent.info.run_id, "steering", str(tmp_path / "dl")))
    grid = pd.read_csv(local / "steering_grid.csv")
    assert set(grid["split"]) == {"valid", "test"} and not grid.duplicated(["split", "num_neurons", "alpha"]).any()
    assert {"ndcg@10", "precision@10", "lt_coverage@10", "gini@10", "arp@10", "ndcg_tail@10"} <= set(grid.columns)
    assert (local / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pick = json.loads((local / "steering_pick.json").read_text())
    assert "sasrec" in pick["valid_baselines"] and "sae" in pick["test_baselines"]
    if pick["pick"] is not None:  # a point within 5% NDCG of SASRec: its test row is the headline
        assert parent.data.metrics["pick_test_ndcg_at_10"] == pytest.approx(pick["test"]["ndcg@10"])
    # the analysis ran on the evaluator actors, and the grid on the same ones
    assert smoke_jobs.summary["steering"]["pool"] == {"evaluators": 2, "shared_with_analysis": True, "resubmitted": 0}
    _cli_on_the_sweeps_output(tmp_path, best, grid)


def _cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "popsteer", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _cli_on_the_sweeps_output(tmp_path: Path, best: str, grid: pd.DataFrame) -> None:
    """The sweep's SAE, analysis and grid are the CLI's files: steer, report and status read them as they are."""
    (sae,) = (tmp_path / "sweeps" / "smoke" / "saes").glob(f"SASRec_SAE-smoke-{best}-ml-100k.safetensors")
    data, out = tmp_path / "datasets", tmp_path / "cli"
    assert (data / "ml-100k" / "analysis" / sae.stem / "analysis.json").exists()
    steered = json.loads(_cli("steer", "-p", str(sae), "--num_neurons", "64", "--alpha", "2.5", "--split", "valid",
                              "--data-dir", str(data), "--out-dir", str(out)).stdout)
    row = grid[(grid["split"] == "valid") & (grid["num_neurons"] == 64) & (grid["alpha"] == 2.5)].iloc[0]
    assert steered["popsteer"]["ndcg@10"] == pytest.approx(row["ndcg@10"], abs=1e-12)  # the sweep's own grid row
    assert steered["popsteer"]["gini@10"] == pytest.approx(row["gini@10"], abs=1e-12)
    report = tmp_path / "docs" / "RESULTS.md"
    proc = _cli("report", "-p", str(sae), "--tiny", "--out", str(report), "--data-dir", str(data), "--out-dir", str(out))
    assert "steering grid reused" not in proc.stderr  # the tiny grid differs from the sweep's: computed anew
    text = report.read_text()
    assert text.startswith("# PopSteer results")
    assert "## ml-100k, SASRec trained by PopSteer, the best SAE of sweep smoke" in text
    assert "RESULTS_ml-100k-sweep-smoke_tradeoff.png" in text
    status = _cli("status", "--data-dir", str(data), "--out-dir", str(tmp_path / "sweeps" / "smoke" / "saes")).stdout
    assert sae.name in status and f"analysis/{sae.stem}/analysis.json" in status
