"""The large-catalog grid through the platform: evaluator actors over user shards on a local Ray
against the same grid in one process, same lists asserted.

    .venv/bin/python bench/large_catalog_platform.py [--items 1000000] [--users 20000] [--points 2]

The synthetic catalog and SAE of ``bench/large_catalog.py``. One process: ``score_users`` (the grid
stage's ``LocalGrid`` work) on all users, torch on every core. Platform: an ``EvaluatorPool`` of
``--evaluators`` actors (the cluster's CPUs split among them) on a fresh local Ray; the item table,
the users and the deltas go into the object store once and every actor reads them zero-copy. Timed
from the pool's creation (actor start-up included) to the merged lists; Ray's own start is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from large_catalog import synthetic_catalog  # noqa: E402
from results import record  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--points", type=int, default=2, help="grid points (the full grid is 56)")
    ap.add_argument("--evaluators", type=int, default=2)
    ap.add_argument("--no-record", action="store_true", help="print only (trial runs)")
    a = ap.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    from popsteer.platform.evaluators import EvaluatorPool
    from popsteer.sae.io import sae_meta, save_sae
    from popsteer.sae.model import SAEConfig, TopKSAE
    from popsteer.stages.grid import GridJob
    from popsteer.steering.grid import grid_points, point_deltas, score_users
    from popsteer.steering.steer import NeuronScores

    d = 64
    emb, users, _, _ = synthetic_catalog(a.items, a.users, d)
    sae = TopKSAE(d, SAEConfig(k=32, scale=64)).eval()
    rng = np.random.default_rng(0)
    n = sae.W_enc.shape[0]
    scores = NeuronScores(d=rng.normal(size=n), sigma_pop=rng.uniform(0.5, 1.5, n), sigma_unpop=rng.uniform(0.5, 1.5, n))
    deltas = point_deltas(scores, grid_points(n)[: a.points])
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SAEConfig(k=32, scale=64)
        meta = sae_meta(dataset="synthetic", d=d, cfg=cfg, base="synthetic", base_sha256="", prefix_stride=1,
                        train_mode_quirk=False, report={}, history=[], train_minutes=0.0)
        sae_path = str(save_sae(Path(tmp) / "SAE-bench.safetensors", sae, meta))
        t0 = time.perf_counter()
        single = score_users(sae, users, emb, 10, deltas)
        t_single = time.perf_counter() - t0
        rss_single = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        cpus = os.cpu_count() or 2
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)  # a fresh one
        job = GridJob(sae_path=sae_path, sae=sae, deltas=deltas, item_emb=emb, x={"valid": users.numpy()})
        t0 = time.perf_counter()
        pool = EvaluatorPool(a.evaluators, num_cpus=cpus / a.evaluators)
        try:
            lists = pool.topk_lists(job)["valid"]
        finally:
            pool.shutdown()
        t_platform = time.perf_counter() - t0
        ray.shutdown()
    same = all(np.array_equal(single[key], lists[key]) for key in ("sasrec", "sae", "points"))
    assert same, "the actors' lists differ from the single process's"
    ratio = t_platform / t_single
    cmd = (f".venv/bin/python bench/large_catalog_platform.py --items {a.items} --users {a.users} "
           f"--points {a.points} --evaluators {a.evaluators}")
    note = (f"{a.items:,} items x {a.users:,} users, {a.points} grid points plus the two references, every list "
            f"identical (asserted): one process {t_single:.1f} s (peak RSS {rss_single:.2f} GB), {a.evaluators} "
            f"evaluator actors on a local Ray ({cpus} CPUs) {t_platform:.1f} s, actor start-up and object-store "
            "puts included")
    print(json.dumps({"single_s": t_single, "platform_s": t_platform, "ratio": ratio, "same": same}))
    if a.no_record:
        return
    record("large_catalog_platform_over_single", round(ratio, 2), "x (evaluator pool time / single-process time)",
           "report", None, cmd, note)


if __name__ == "__main__":
    main()
