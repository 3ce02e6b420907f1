"""Nested MLflow runs of grid points (``popsteer.platform.point_runs``) on a SQLite store: the hierarchy,
params and metrics, each run once (a rerun and a half-logged run), the requests a 56-point grid costs,
and the skip while the journaled tracker is offline."""

from __future__ import annotations

import logging
import math
import socket
from collections import Counter

import pytest

from popsteer.platform import point_runs
from popsteer.platform.tracking import Tracker
from popsteer.platform.trainable import metric_name
from popsteer.stages.grid import GridResult
from popsteer.steering.grid import GridPoint

NS, ALPHAS = (16, 32, 64, 128, 256, 512, 1024, 2048), (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)  # 56 points
REQUESTS = ("search_runs", "create_run", "log_batch", "set_terminated", "update_run", "set_tag", "get_run")


class CountingClient:
    """An MlflowClient whose calls that are one request each to a server are counted."""

    def __init__(self, client) -> None:
        self.client, self.calls = client, Counter()

    def __getattr__(self, name):
        attr = getattr(self.client, name)
        if name not in REQUESTS:
            return attr

        def counted(*args, **kwargs):
            self.calls[name] += 1
            return attr(*args, **kwargs)
        return counted


def _metrics(n: int, alpha: float, split: str) -> dict:
    shift = 0.01 if split == "test" else 0.0
    return {"ndcg@10": 0.3 - 0.01 * alpha - n / 1e5 + shift, "gini@10": 0.9 - 0.02 * alpha + shift,
            "lt_coverage@10": 0.1 * alpha, "arp@10": float("nan")}  # a NaN metric is left out


def _logged(metrics: dict) -> dict:
    """The names and values of ``metrics`` as logged: '@' -> '_at_', NaN left out."""
    return {metric_name(k): v for k, v in metrics.items() if math.isfinite(v)}


def _grid() -> GridResult:
    points = [GridPoint(n, a) for n in NS for a in ALPHAS]
    rows = {s: [{"num_neurons": p.num_neurons, "alpha": p.alpha, **_metrics(p.num_neurons, p.alpha, s)}
                for p in points] for s in ("valid", "test")}
    baselines = {s: {"sasrec": _metrics(0, 0.0, s), "sae": _metrics(0, 0.5, s)} for s in ("valid", "test")}
    return GridResult("ml-100k", points, rows, baselines, {"num_neurons": 64, "alpha": 2.5, "valid_gini_drop": 0.1,
                                                           "valid_ndcg_drop": 0.02}, [])


@pytest.fixture
def tracker(tmp_path):
    t = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "points", str(tmp_path / "sweep"))
    t.start_parent("unit", {"dataset": "ml-100k"})
    t._client = CountingClient(t.client)
    return t


def _under(tracker, parent_id: str) -> list:
    return tracker.client.search_runs([tracker._experiment_id()], f"tags.`mlflow.parentRunId` = '{parent_id}'",
                                      max_results=1000)


def test_steering_points_nested_under_the_trial_once_in_few_requests(tracker):
    trial = tracker.child_run("k8-s4-r0", {"trial": {"k": 8}})
    calls = tracker.client.calls
    calls.clear()
    ids = point_runs.log_steering(tracker, "k8-s4-r0", _grid())
    assert len(ids) == 56 + 2
    # one search, then create + one batch + end per run; the trial's lookup is one more search
    assert calls == {"search_runs": 2, "create_run": 58, "log_batch": 58, "set_terminated": 58}, calls

    runs = _under(tracker, trial)
    assert len(runs) == 58 and all(r.info.status == "FINISHED" for r in runs)
    points = [r for r in runs if r.data.params["method"] == "popsteer"]
    assert {(r.data.params["N"], r.data.params["alpha"]) for r in points} == {(str(n), str(a)) for n in NS
                                                                               for a in ALPHAS}
    run = next(r for r in points if r.data.params["N"] == "64" and r.data.params["alpha"] == "2.5")
    assert run.data.params == {"method": "popsteer", "N": "64", "alpha": "2.5", "trial": "k8-s4-r0"}
    assert run.data.metrics == pytest.approx({f"{s}_{m}": v for s in ("valid", "test")
                                              for m, v in _logged(_metrics(64, 2.5, s)).items()})
    assert run.info.run_name == "popsteer N=64 alpha=2.5"
    assert [r.data.tags["popsteer.picked"] for r in points].count("true") == 1
    assert run.data.tags["popsteer.picked"] == "true" and run.data.tags["popsteer.kind"] == "point"
    refs = {r.data.params["method"]: r for r in runs if r.data.params["method"] != "popsteer"}
    assert set(refs) == {"sasrec", "sae"} and "popsteer.picked" not in refs["sasrec"].data.tags
    assert refs["sasrec"].data.metrics["test_gini_at_10"] == pytest.approx(0.91)

    # a rerun (a resumed sweep) finds every run by its key: one search, nothing logged again
    calls.clear()
    assert point_runs.log_steering(tracker, "k8-s4-r0", _grid()) == ids
    assert calls == {"search_runs": 2}, calls
    assert len(_under(tracker, trial)) == 58
    assert len(tracker.client.get_metric_history(run.info.run_id, "test_ndcg_at_10")) == 1


def test_half_logged_point_run_is_completed_not_duplicated(tracker):
    trial = tracker.child_run("k4-s2-r0", {})
    grid = _grid()
    first = point_runs.steering_runs(grid, "k4-s2-r0")[0]
    # a driver killed between create_run and log_batch: the run has its key, nothing else
    half = tracker.client.create_run(tracker._experiment_id(), run_name=first.name, tags={
        "mlflow.parentRunId": trial, point_runs.POINT_KEY_TAG: first.key})
    ids = point_runs.log_steering(tracker, "k4-s2-r0", grid)
    assert ids[first.key] == half.info.run_id and len(_under(tracker, trial)) == 58
    run = tracker.client.get_run(half.info.run_id)
    assert run.data.params == first.params and run.data.metrics == pytest.approx(first.metrics)
    assert run.info.status == "FINISHED" and run.data.tags["popsteer.picked"] == "false"


def _methods() -> dict:
    def rows(split: str, grid: list[dict]) -> list[dict]:
        return [{**p, **_metrics(0, i / 2, split)} for i, p in enumerate(grid)]
    ipr = [{"lam": v} for v in (0.1, 0.5, 0.9)]
    fair = [{"p": p, "alpha": a} for p in (0.5, 0.9) for a in (0.1, 0.2)]
    return {"ipr": {"name": "ipr", "label": "IPR", "grid": ipr, "valid_rows": rows("valid", ipr),
                    "test_rows": rows("test", ipr), "pick": 1, "params": ipr[1], "within_limit": True,
                    "describe": "lambda=0.5"},
            "fair": {"name": "fair", "label": "FA*IR", "grid": fair, "valid_rows": rows("valid", fair),
                     "test_rows": rows("test", fair), "pick": 3, "params": fair[3], "within_limit": False}}


def test_baselines_are_method_runs_with_their_grid_points(tracker, tmp_path):
    import json

    path = tmp_path / "baselines.json"
    path.write_text(json.dumps({"identity": {}, "methods": _methods()}, default=float))
    calls = tracker.client.calls
    calls.clear()
    ids = point_runs.log_baselines(tracker, path)
    assert len(ids) == 2 + 3 + 4
    # the parent's search; a new method run has no children to look for
    assert calls == {"search_runs": 1, "create_run": 9, "log_batch": 9, "set_terminated": 9}, calls
    methods = {r.data.params["method"]: r for r in _under(tracker, tracker.parent_run_id)}
    assert set(methods) == {"ipr", "fair"} and methods["ipr"].data.tags["popsteer.kind"] == "method"
    ipr = methods["ipr"]
    assert ipr.data.params == {"method": "ipr", "label": "IPR", "within_limit": "True", "pick": "lambda=0.5",
                               "lam": "0.5"}
    assert ipr.data.metrics["pick_test_gini_at_10"] == pytest.approx(_metrics(0, 0.5, "test")["gini@10"])
    assert not any(k.startswith(("valid_", "test_")) for k in ipr.data.metrics)  # a chart plots each point once
    points = _under(tracker, ipr.info.run_id)
    assert sorted(r.data.params["lam"] for r in points) == ["0.1", "0.5", "0.9"]
    assert all(r.data.params["method"] == "ipr" and "test_ndcg_at_10" in r.data.metrics for r in points)
    assert [r.data.params["lam"] for r in points if r.data.tags["popsteer.picked"] == "true"] == ["0.5"]
    fair = _under(tracker, methods["fair"].info.run_id)
    assert {(r.data.params["p"], r.data.params["alpha"]) for r in fair} == {("0.5", "0.1"), ("0.5", "0.2"),
                                                                            ("0.9", "0.1"), ("0.9", "0.2")}
    calls.clear()
    assert point_runs.log_baselines(tracker, path) == ids
    assert calls == {"search_runs": 3}, calls  # the parent's and each method's: nothing logged again


def test_offline_journaled_tracker_skips_point_runs_with_a_log_line(tmp_path, monkeypatch, caplog):
    from popsteer.platform.journal import Journal, JournaledTracker, read_records

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tracker = JournaledTracker(Tracker(f"http://127.0.0.1:{port}", "offline", str(tmp_path / "sweep")),
                               tmp_path / "journal")
    tracker.start_parent("unit", {})
    tracker.child_run("k4-s2-r0", {})
    with caplog.at_level(logging.INFO, logger="popsteer.platform"):
        assert point_runs.log_steering(tracker, "k4-s2-r0", _grid()) == {}
        assert tracker.log_point_runs(tracker.parent_run_id, point_runs.steering_runs(_grid(), "k4-s2-r0")) == {}
    skipped = [r.getMessage() for r in caplog.records if "not journaled" in r.getMessage()]
    assert len(skipped) == 2 and "58 steering point (k4-s2-r0) run(s) not logged" in skipped[0], skipped
    ops = [r["op"] for r in read_records(Journal(tmp_path / "journal").path)]
    assert ops == ["start_parent", "child_run"]  # nothing of the points in the journal
