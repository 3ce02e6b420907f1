"""Evaluator actors score the steering grid exactly as the single-process ``evaluate_grid``,
and a killed evaluator loses no grid point and duplicates none."""

from __future__ import annotations

import math
import os
import signal
from dataclasses import asdict

import pytest
import torch

from platform_util import ray_unavailable, requires

pytestmark = requires(ray_unavailable())


@pytest.fixture(scope="module")
def steering_setup(ml100k_small, small_sasrec, tmp_path_factory):
    """A small SAE (trained in-process), its Cohen's d, and the valid/test representations."""
    from popsteer import checkpoint
    from popsteer.analysis import analyze_neurons
    from popsteer.evaluate import Evaluator
    from popsteer.recommender import encode_users
    from popsteer.sae import SAEConfig
    from popsteer.sae_train import train_sae
    from popsteer.steering import NeuronScores

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
    from popsteer.grid import evaluate_grid, grid_points
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
    from popsteer.grid import grid_points
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
