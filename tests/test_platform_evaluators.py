"""Evaluator actors over user shards score the steering grid exactly as the grid stage does in this
process, and a killed evaluator loses no shard and duplicates none (killed from the pool's result
hook, and its worker process killed from outside, found through the Ray state API, while the grid
stage writes its table); the analysis stage in a Ray task equals the same stage in this process."""

from __future__ import annotations

import math
import os
import signal
import time

import pandas as pd
import pytest

from platform_util import wait_for

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture(scope="module")
def steering_setup(ml100k_small, small_sasrec, tmp_path_factory):
    """A small SAE trained and analysed by the stages in this process; its data folder and encodings."""
    from popsteer.stages.analysis import analyze
    from popsteer.sae.model import SAEConfig
    from popsteer.stages.config import AnalysisConfig, SAERef, SAEStageConfig, Workspace
    from popsteer.stages.sae import train_sae

    folder = tmp_path_factory.mktemp("evaluators")
    # the base checkpoint's folder allowed explicitly: Ray workers do not see this process' POPSTEER_ALLOWED_ROOTS
    where = Workspace(data_dir=str(folder / "datasets"), out_dir=str(folder / "saved"),
                      allowed_roots=[str(small_sasrec[1].parent)])
    sae = train_sae(SAEStageConfig(base=str(small_sasrec[1]), sae=SAEConfig(k=8, scale=4, max_epochs=3, min_epochs=1),
                                   where=where), data=ml100k_small)
    ref = SAERef(path=sae.checkpoint, where=where)
    analyze(AnalysisConfig(ref), data=ml100k_small)
    return ref, folder


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) if isinstance(a[k], float) and math.isnan(a[k]) else a[k] == b[k]
        for k in a)


def _grid(ref, ns, alphas):
    from popsteer.stages.config import GridConfig, GridStageConfig

    return GridStageConfig(ref, GridConfig(ns=list(ns), alphas=list(alphas)))


def _local_and_actors(cfg, data):
    """The grid of ``cfg`` in this process and on a pool of two evaluator actors: (local, actors, pool)."""
    from popsteer.platform.evaluators import EvaluatorPool
    from popsteer.stages.grid import steering_grid

    want = steering_grid(cfg, write=False, data=data)
    pool = EvaluatorPool(2, num_cpus=0.5)
    try:
        got = steering_grid(cfg, write=False, data=data, executor=pool)
    finally:
        pool.shutdown()
    return want, got, pool


def test_actor_grid_equals_single_process_grid(ray_session, steering_setup, ml100k_small):
    ref, _ = steering_setup
    cfg = _grid(ref, (16, 64, 128), (1.0, 2.5, 4.0))
    want, got, pool = _local_and_actors(cfg, ml100k_small)
    assert len(pool.pids_seen) == 2  # both actors scored shards
    assert got.pick == want.pick
    for split in ("valid", "test"):
        assert len(got.rows[split]) == len(want.rows[split]) == 9
        for g, w in zip(got.rows[split], want.rows[split]):
            assert _same(g, w), (split, g, w)
        for name in ("sasrec", "sae"):
            assert _same(got.baselines[split][name], want.baselines[split][name])


def test_killed_evaluator_loses_and_duplicates_no_shard(ray_session, steering_setup, ml100k_small):
    from popsteer.platform.evaluators import EvaluatorPool
    from popsteer.stages.grid import steering_grid

    ref, _ = steering_setup
    # 120 points: shards long enough that the killed actor still has queued shards when it dies
    cfg = _grid(ref, (8, 16, 32, 64, 128), [0.25 * i for i in range(1, 25)])
    want = steering_grid(cfg, write=False, data=ml100k_small)
    killed, seen = [], []

    class KillingPool(EvaluatorPool):
        def received(self, i, out):  # SIGKILL the evaluator that answered first, while its queue is full
            super().received(i, out)
            seen.append(i)
            if not killed:
                killed.append(out["pid"])
                os.kill(out["pid"], signal.SIGKILL)

    pool = KillingPool(2, num_cpus=0.5, shards_per_evaluator=4)
    first_pids = set(pool.pids())
    try:
        got = steering_grid(cfg, write=False, data=ml100k_small, executor=pool)
        later_pids = set(pool.pids())
    finally:
        pool.shutdown()
    assert sorted(seen) == list(range(2 * 2 * 4))  # every shard of both splits answered once
    assert killed and killed[0] in first_pids and killed[0] not in later_pids  # the actor was restarted
    assert pool.pids_seen - first_pids or pool.resubmitted, "no shard ran on the restarted evaluator"
    for split in ("valid", "test"):
        assert all(_same(g, w) for g, w in zip(got.rows[split], want.rows[split]))


def _live_evaluator(job_id: str):
    """A live GridEvaluator actor of this job whose worker pid is known, else None."""
    from ray.util.state import list_actors

    alive = list_actors(filters=[("job_id", "=", job_id), ("class_name", "=", "GridEvaluator"),
                                 ("state", "=", "ALIVE")], raise_on_missing_output=False)
    return next((a for a in alive if a.pid), None)


def _interrupted_tasks(job_id: str, actor_id: str) -> list:
    """The score attempts on ``actor_id`` that failed or were retries (the kill's traces)."""
    from ray.util.state import list_tasks

    tasks = list_tasks(filters=[("job_id", "=", job_id), ("actor_id", "=", actor_id)], limit=10_000,
                       raise_on_missing_output=False)
    return [t for t in tasks if t.func_or_class_name == "GridEvaluator.score"
            and (t.state == "FAILED" or t.attempt_number > 0)]


def test_evaluator_process_killed_mid_grid_table_has_each_point_once(ray_session, steering_setup, ml100k_small):
    import threading

    import ray

    from popsteer.platform.evaluators import EvaluatorPool
    from popsteer.stages.grid import steering_grid

    ref, folder = steering_setup
    cfg = _grid(ref, (8, 16, 32, 64, 128), [0.25 * i for i in range(1, 25)])
    outcome: dict = {}

    def score_grid() -> None:
        pool = EvaluatorPool(2, num_cpus=0.5, shards_per_evaluator=4)
        try:
            outcome["result"] = steering_grid(cfg, data=ml100k_small, executor=pool)
        except BaseException as exc:  # reported by the assertion below
            outcome["error"] = exc
        finally:
            pool.shutdown()

    stage = threading.Thread(target=score_grid, daemon=True)
    stage.start()
    job_id = ray.get_runtime_context().get_job_id()
    victim = wait_for(lambda: not stage.is_alive() or _live_evaluator(job_id), 180, "a live evaluator", 0.1)
    time.sleep(0.3)  # scoring its first shards; every shard was submitted at the start, so its queue is full
    assert stage.is_alive(), "the grid was done before the kill: give it more points"
    os.kill(victim.pid, signal.SIGKILL)  # the worker process, mid-grid
    stage.join(300)
    assert not stage.is_alive() and "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    table = pd.read_csv(next(f for f in result.files if f.endswith("steering_grid.csv")))
    keys = list(zip(table["split"], table["num_neurons"], table["alpha"]))
    assert len(keys) == len(set(keys)) == 2 * len(result.points)  # every point once: none missing, none twice
    assert set(keys) == {(s, p.num_neurons, p.alpha) for s in ("valid", "test") for p in result.points}
    assert table["ndcg@10"].notna().all()
    # the kill hit work in flight or queued on that evaluator (Ray retried it, or the pool resubmitted it)
    wait_for(lambda: _interrupted_tasks(job_id, victim.actor_id), 30, "a failed or retried score task", 1.0)


def test_analysis_in_a_ray_task_equals_the_local_analysis(ray_session, steering_setup, ml100k_small):
    import json

    import ray

    from popsteer.stages.analysis import analyze
    from popsteer.stages.config import AnalysisConfig

    ref, _ = steering_setup
    local = analyze(AnalysisConfig(ref, dataset_copy=False), data=ml100k_small)
    files = {f: open(f, "rb").read() for f in local.files if f.endswith(".csv")}
    remote = ray.get(ray.remote(num_cpus=1)(analyze).remote(AnalysisConfig(ref, dataset_copy=False), data=ml100k_small))
    assert remote.summary == local.summary and remote.folder == local.folder
    assert {f: open(f, "rb").read() for f in remote.files if f.endswith(".csv")} == files
    assert json.loads(open(next(f for f in remote.files if f.endswith("analysis.json"))).read())["n_neurons"] == 128


def test_actor_grid_equals_single_process_for_the_variants(ray_session, steering_setup, ml100k_small):
    """The error-preserving variant and two strengths on evaluator actors: the single-process rows; with
    preserve, alpha = 0 on both sides is the recommender's own metrics exactly."""
    from popsteer.stages.config import GridConfig, GridStageConfig

    ref, _ = steering_setup
    cfg = GridStageConfig(ref, GridConfig(ns=[16, 128], alphas=[0.0, 2.0], alpha_unpops=[0.0, 3.0], variant="preserve"))
    want, got, _ = _local_and_actors(cfg, ml100k_small)
    for split in ("valid", "test"):
        assert len(got.rows[split]) == 8
        for g, w in zip(got.rows[split], want.rows[split]):
            assert _same(g, w), (split, g, w)
        zero = got.row(split, 16, 0.0, 0.0)
        assert _same({k: v for k, v in zero.items() if k not in ("num_neurons", "alpha", "alpha_unpop")},
                     got.baselines[split]["sasrec"])
        assert not _same(got.baselines[split]["sae"], got.baselines[split]["sasrec"])


def test_learned_steering_as_tune_trials_equals_the_single_process_grid(ray_session, steering_setup, ml100k_small,
                                                                         tmp_path):
    """Learned steering on the platform: one Ray Tune trial per lam fits the deltas on workers and the
    evaluator actors score them; the deltas are the same bits and the rows the single-process rows."""
    import torch

    from popsteer.platform.evaluators import EvaluatorPool
    from popsteer.platform.learned import TuneFitter
    from popsteer.stages.config import GridConfig, GridStageConfig, LearnedConfig
    from popsteer.stages.context import load_sae_context
    from popsteer.stages.grid import steering_grid
    from popsteer.stages.learned import LocalFitter

    ref, _ = steering_setup
    learned = LearnedConfig(lambdas=[0.3, 3.0], steps=25, batch_size=256, refine=1, surrogate="softmax",
                            tau=0.25)  # the surrogate that moves this CI-sized SAE in 25 steps
    cfg = GridStageConfig(ref, GridConfig(variant="learned", learned=learned))
    want = steering_grid(cfg, write=False, data=ml100k_small)  # fitted here, not kept (write=False)
    ctx = load_sae_context(ref, ml100k_small)
    lams = [p.params()["lam"] for p in want.points]  # 0.3, the refined middle, 3.0
    assert len(lams) == 3 and lams[0] == 0.3 and lams[2] == 3.0 and 0.3 < lams[1] < 3.0
    local = LocalFitter().fit(ctx, learned, lams, None)
    fitter = TuneFitter(ref, tmp_path / "storage", "learned-test", tmp_path / "experiment", cpus=0.5)
    remote = fitter.fit(ctx, learned, lams, None)
    for a, b in zip(local, remote):
        assert a["lam"] == b["lam"] and torch.equal(torch.as_tensor(a["delta"]), torch.as_tensor(b["delta"]))
    pool = EvaluatorPool(2, num_cpus=0.5)
    try:
        got = steering_grid(cfg, write=False, data=ml100k_small, executor=pool, fitter=fitter)
    finally:
        pool.shutdown()
    assert [p.params()["lam"] for p in got.points] == lams
    for split in ("valid", "test"):
        for g, w in zip(got.rows[split], want.rows[split]):
            assert _same(g, w), (split, g, w)
    assert got.rows["valid"][2]["gini@10"] < got.baselines["valid"]["sasrec"]["gini@10"]
