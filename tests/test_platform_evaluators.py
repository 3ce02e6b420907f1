"""Evaluator actors score the steering grid exactly as the single-process ``evaluate_grid``,
and a killed evaluator loses no grid point and duplicates none (killed from the pool's result
hook, and its worker process killed from outside, found through the Ray state API, while the
steering stage writes its table)."""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import asdict

import pytest
import torch

from platform_util import wait_for

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture(scope="module")
def steering_setup(ml100k_small, small_sasrec, tmp_path_factory):
    """A small SAE (trained in-process), its Cohen's d, and the valid/test representations."""
    from popsteer.util import checkpoint
    from popsteer.steering.analysis import analyze_neurons
    from popsteer.eval.evaluator import Evaluator
    from popsteer.models.encode import encode_users
    from popsteer.sae.model import SAEConfig
    from popsteer.sae.train import train_sae
    from popsteer.steering.steer import NeuronScores

    model, _ = small_sasrec
    seq, ln, _ = ml100k_small.train_prefix_pairs()
    x = {s: encode_users(model, *ml100k_small.split(s)[:2]) for s in ("valid", "test")}
    cfg = SAEConfig(k=8, scale=4, max_epochs=3, min_epochs=1)
    sae, _ = train_sae(encode_users(model, seq, ln), x["valid"], cfg)
    path = tmp_path_factory.mktemp("sae") / "sae.safetensors"
    checkpoint.save(path, sae.state_dict(), {"kind": "sae", "d": 32, "n_latents": sae.n, "sae": asdict(cfg)})
    d, pop, unpop = analyze_neurons(model, sae, ml100k_small)
    scores = NeuronScores(d=d, sigma_pop=pop.std, sigma_unpop=unpop.std)
    evaluators = {s: Evaluator.for_split(ml100k_small, s) for s in ("valid", "test")}
    return sae, path, scores, x, evaluators, model.item_embedding.weight.detach()


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) if isinstance(a[k], float) and math.isnan(a[k]) else a[k] == b[k]
        for k in a)


def _pool(setup, size=2):
    from popsteer.platform.evaluators import EvaluatorPool, SAEEntry

    sae, path, scores, x, evaluators, item_emb = setup
    return EvaluatorPool(size, item_emb.numpy(), x["valid"].numpy(), x["test"].numpy(), evaluators,
                         {"sae": SAEEntry("sae", str(path), scores)}, num_cpus=0.5)


def test_actor_grid_equals_single_process_grid(ray_session, steering_setup):
    from popsteer.steering.grid import evaluate_grid, grid_points
    from popsteer.platform.evaluators import GridTask

    sae, path, scores, x, evaluators, item_emb = steering_setup
    points = grid_points(sae.n, ns=(16, 64, 128), alphas=(1.0, 2.5, 4.0))
    pool = _pool(steering_setup)
    try:
        rows = pool.run([GridTask("sae", p) for p in points])
    finally:
        pool.shutdown()
    assert len(rows) == 2 * len(points)
    for split in ("valid", "test"):
        with torch.no_grad():
            want = evaluate_grid(sae, sae.preact(x[split]), item_emb, evaluators[split], scores, points)
        got = [{k: v for k, v in r.items() if k not in ("sae", "split")} for r in rows if r["split"] == split]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert _same(g, w), (split, g, w)


def test_killed_evaluator_loses_and_duplicates_no_point(ray_session, steering_setup):
    from popsteer.steering.grid import grid_points
    from popsteer.platform.evaluators import GridTask

    sae = steering_setup[0]
    points = grid_points(sae.n, ns=(16, 64, 128), alphas=(1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0))
    pool = _pool(steering_setup)
    first_pids = set(pool.pids())
    killed = []

    def kill_first(i, out):  # SIGKILL the evaluator that answered first, while its queue is full
        if not killed:
            killed.append(out["pid"])
            os.kill(out["pid"], signal.SIGKILL)

    try:
        rows = pool.run([GridTask("sae", p) for p in points], on_result=kill_first)
        later_pids = set(pool.pids())
    finally:
        pool.shutdown()
    keys = [(r["split"], r["num_neurons"], r["alpha"]) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * len(points)
    assert {(n, a) for _, n, a in keys} == {(p.num_neurons, p.alpha) for p in points}
    assert killed and killed[0] in first_pids and killed[0] not in later_pids  # the actor was restarted
    assert pool.pids_seen - first_pids or pool.resubmitted, "no point ran on the restarted evaluator"


def _live_evaluator(job_id: str):
    """A live GridEvaluator actor of this job whose worker pid is known, else None."""
    from ray.util.state import list_actors

    alive = list_actors(filters=[("job_id", "=", job_id), ("class_name", "=", "GridEvaluator"),
                                 ("state", "=", "ALIVE")], raise_on_missing_output=False)
    return next((a for a in alive if a.pid), None)


def _interrupted_tasks(job_id: str, actor_id: str) -> list:
    """The evaluate attempts on ``actor_id`` that failed or were retries (the kill's traces)."""
    from ray.util.state import list_tasks

    tasks = list_tasks(filters=[("job_id", "=", job_id), ("actor_id", "=", actor_id)], limit=10_000,
                       raise_on_missing_output=False)
    return [t for t in tasks if t.func_or_class_name == "GridEvaluator.evaluate"
            and (t.state == "FAILED" or t.attempt_number > 0)]


def test_evaluator_process_killed_mid_grid_table_has_each_point_once(ray_session, steering_setup, tmp_path):
    import threading

    import pandas as pd
    import ray

    from popsteer.steering.grid import grid_points
    from popsteer.platform.evaluators import SAEEntry
    from popsteer.platform.spec import SteeringSpec
    from popsteer.platform.stages import steering_stage

    sae, path, scores, x, evaluators, item_emb = steering_setup
    steering = SteeringSpec(ns=[8, 16, 32, 64, 128], alphas=[0.25 * i for i in range(1, 25)], evaluators=2)
    points = grid_points(sae.n, steering.ns, steering.alphas)
    outcome: dict = {}

    def score_grid() -> None:
        try:
            outcome["result"] = steering_stage([SAEEntry("sae", str(path), scores)], {"sae": sae.n}, steering,
                                               item_emb.numpy(), x["valid"].numpy(), x["test"].numpy(), evaluators,
                                               tmp_path)
        except BaseException as exc:  # reported by the assertion below
            outcome["error"] = exc

    stage = threading.Thread(target=score_grid, daemon=True)
    stage.start()
    job_id = ray.get_runtime_context().get_job_id()
    victim = wait_for(lambda: not stage.is_alive() or _live_evaluator(job_id), 180, "a live evaluator", 0.1)
    time.sleep(0.3)  # scoring its first points; every point was submitted at the start, so its queue is full
    assert stage.is_alive(), "the grid was done before the kill: give it more points"
    os.kill(victim.pid, signal.SIGKILL)  # the worker process, mid-grid
    stage.join(300)
    assert not stage.is_alive() and "error" not in outcome, outcome.get("error")
    table = pd.read_csv(tmp_path / "steering_grid.csv")
    keys = list(zip(table["split"], table["num_neurons"], table["alpha"]))
    assert len(keys) == len(set(keys)) == 2 * len(points)  # every point once: none missing, none twice
    assert set(keys) == {(s, p.num_neurons, p.alpha) for s in ("valid", "test") for p in points}
    assert outcome["result"]["rows"] == 2 * len(points)
    # the kill hit work in flight or queued on that evaluator (Ray retried it, or the pool resubmitted it)
    wait_for(lambda: _interrupted_tasks(job_id, victim.actor_id), 30, "a failed or retried evaluate task", 1.0)


def test_analysis_from_encoded_profiles_equals_analyze_neurons(ray_session, steering_setup, ml100k_small,
                                                               small_sasrec, tmp_path_factory):
    import numpy as np

    from popsteer.platform.encode import ensure_encoded
    from popsteer.platform.stages import analyze_encoded

    sae, path, scores, *_ = steering_setup
    encoded = ensure_encoded(small_sasrec[1], ml100k_small, tmp_path_factory.getbasetemp() / "encoded")
    d, pop, unpop = analyze_encoded(str(path), str(encoded.folder))
    np.testing.assert_allclose(d, scores.d, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(pop.std, scores.sigma_pop, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(unpop.std, scores.sigma_unpop, rtol=1e-9, atol=1e-12)
