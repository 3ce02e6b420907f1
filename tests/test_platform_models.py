"""A sweep file with ``model: gru4rec`` runs through the platform: GRU4Rec trained in a Ray task, encoded
by Ray Data, SAEs in Tune trials, analysed and steered by evaluator actors, logged to MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from platform_util import ROOT, mlflow_runs, ray_address, sweep_env, tracking_uri, write_sweep

pytestmark = pytest.mark.usefixtures("platform_services")


def _run_sweep(spec) -> None:
    proc = subprocess.run([sys.executable, "-m", "popsteer.sweep", str(spec)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=sweep_env(ray_address(), tracking_uri()))
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_gru4rec_sweep_runs_through_the_platform(tmp_path):
    from popsteer.util import checkpoint

    experiment = f"popsteer-gru4rec-{uuid.uuid4().hex[:8]}"
    spec = write_sweep(tmp_path / "gru.yaml", name="gru", dataset="ml-100k", model="gru4rec",
                       data_dir=str(tmp_path / "datasets"), storage=str(tmp_path / "sweeps"),
                       train_recommender={"small": True, "epochs": 1, "stride": 10},
                       search={"k": [8], "scale": [2, 4], "sae": {"max_epochs": 4, "min_epochs": 2}},
                       mlflow={"experiment": experiment},
                       stages={"trials": "best", "steering": {"ns": [16, 64], "alphas": [1.0, 3.0], "evaluators": 1}})
    _run_sweep(spec)
    exp = tmp_path / "sweeps" / "gru"
    rec = json.loads((exp / "stages" / "recommender.json").read_text())
    assert rec["model"] == "gru4rec" and checkpoint.read_meta(rec["checkpoint"])["model"] == "gru4rec"
    saes = sorted(p.name for p in (exp / "saes").glob("*.safetensors"))
    assert saes == ["GRU4Rec_SAE-gru-k8-s2-r0-ml-100k.safetensors", "GRU4Rec_SAE-gru-k8-s4-r0-ml-100k.safetensors"]
    steering = json.loads((exp / "stages" / "steering.json").read_text())
    (pick,) = steering["picks"].values()
    assert {"sasrec", "sae"} <= set(pick["test_baselines"]) and steering["points"] == 4
    _, parents, children = mlflow_runs(tracking_uri(), experiment)
    assert len(parents) == 1 and parents[0].data.params["model"] == "gru4rec" and len(children) == 2


@pytest.mark.slow
def test_lightgcn_sweep_masks_history_on_the_evaluator_actors(tmp_path):
    """``model: lightgcn``: trained by RecBole's BPR trainer in a Ray task, its users encoded by Ray Data,
    probed with real user groups, and the evaluator actors rank with each user's history masked: the
    recommender's test metrics from the actors equal ``popsteer evaluate`` in this process."""
    from popsteer.stages.config import Workspace
    from popsteer.stages.config_report import EvaluateConfig
    from popsteer.stages.evaluate import evaluate

    experiment = f"popsteer-lightgcn-{uuid.uuid4().hex[:8]}"
    spec = write_sweep(tmp_path / "lgcn.yaml", name="lgcn", dataset="ml-100k", model="lightgcn",
                       data_dir=str(tmp_path / "datasets"), storage=str(tmp_path / "sweeps"),
                       train_recommender={"small": True, "epochs": 5, "learning_rate": 0.01},
                       search={"k": [8], "scale": [4], "sae": {"max_epochs": 6, "min_epochs": 6}},
                       mlflow={"experiment": experiment},
                       stages={"trials": "best", "steering": {"ns": [16, 128], "alphas": [1.0, 3.0], "evaluators": 2}})
    _run_sweep(spec)
    exp = tmp_path / "sweeps" / "lgcn"
    rec = json.loads((exp / "stages" / "recommender.json").read_text())
    assert rec["model"] == "lightgcn"
    (analysis,) = json.loads((exp / "stages" / "analysis.json").read_text()).values()
    (summary,) = [f for f in analysis["files"] if f.endswith("analysis.json")]
    assert json.loads(open(summary).read())["probe"] == "users"
    steering = json.loads((exp / "stages" / "steering.json").read_text())
    (pick,) = steering["picks"].values()
    here = evaluate(EvaluateConfig(path=rec["checkpoint"], split="test",
                                   where=Workspace(data_dir=str(tmp_path / "datasets"), out_dir=str(tmp_path / "x"),
                                                   allowed_roots=[str(tmp_path)])))["sasrec"]
    actors = pick["test_baselines"]["sasrec"]
    for metric in ("ndcg@10", "precision@10", "gini@10", "arp@10", "lt_coverage@10"):
        assert actors[metric] == pytest.approx(here[metric], abs=1e-9), metric
