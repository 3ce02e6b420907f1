"""The whole 56-point steering grid at 1M items x 20k users, run, not extrapolated.

The synthetic catalog and SAE of ``bench/large_catalog.py`` (d = 64, SAE width 4,096, K = 32,
synthetic neuron scores); ``evaluate_grid`` over all 56 points of the default grid (N in
512..4096 x alpha in 1..4), on torch's thread count of workers, with fused exact scoring. About
2.6 TFLOP of product per point. Records ``large_catalog_full_grid_minutes`` and writes every
point's metrics beside the log.

    nohup .venv/bin/python bench/large_catalog_full_grid.py --out ~/popsteer-runs/bench \\
        > ~/popsteer-runs/bench/large_catalog_full_grid.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from large_catalog import synthetic_catalog  # noqa: E402

from popsteer.eval.evaluator import Evaluator  # noqa: E402
from popsteer.eval.popularity import PopularityGroups  # noqa: E402
from popsteer.sae.model import SAEConfig, TopKSAE  # noqa: E402
from popsteer.steering.grid import evaluate_grid, grid_points  # noqa: E402
from popsteer.steering.steer import NeuronScores  # noqa: E402
from popsteer.util.atomic import write_text  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--points", type=int, default=56, help="the first this many grid points (the full grid is 56)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the points' metrics (JSON)")
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    out_file = a.out / f"large_catalog_full_grid_{a.items}x{a.users}.json"

    emb, users, counts, targets = synthetic_catalog(a.items, a.users, 64)
    sae = TopKSAE(64, SAEConfig(k=32, scale=64)).eval()
    rng = np.random.default_rng(0)
    n = sae.W_enc.shape[0]
    scores = NeuronScores(d=rng.normal(size=n), sigma_pop=rng.uniform(0.5, 1.5, n), sigma_unpop=rng.uniform(0.5, 1.5, n))
    with torch.no_grad():
        h = sae.preact(users)  # (U, n)
    ev = Evaluator(targets=targets, groups=PopularityGroups.from_counts(counts))
    pts = grid_points(n)[: a.points]
    print(f"{len(pts)} points, {a.items:,} items x {a.users:,} users, {torch.get_num_threads()} threads", flush=True)
    t0 = time.perf_counter()
    rows = evaluate_grid(sae, h, emb, ev, scores, pts)
    minutes = (time.perf_counter() - t0) / 60
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result = {"items": a.items, "users": a.users, "points": len(pts), "minutes": minutes, "peak_rss_gb": peak_gb,
              "threads": torch.get_num_threads(), "rows": rows}
    write_text(out_file, json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}), flush=True)
    if a.no_record:
        return
    from results import record

    tflop = 2 * a.users * a.items * 64 * len(pts) / 1e12
    nice, load = os.nice(0), os.getloadavg()
    record("large_catalog_full_grid_minutes", round(minutes, 1), "min",
           "report (the whole 56-point grid at 1M items x 20k users, run)", None,
           f"{'' if nice == 0 else f'nice -n {nice} '}.venv/bin/python bench/large_catalog_full_grid.py --items {a.items} --users {a.users} "
           f"--points {a.points} --out DIR",
           f"points={len(pts)}, users={a.users}, items={a.items:,}, d=64, SAE 4,096 latents K=32; {tflop:.0f} TFLOP of "
           f"product, {tflop * 1e3 / (minutes * 60):.0f} GFLOP/s; {minutes * 60 / len(pts):.1f} s/point; peak RSS "
           f"{peak_gb:.2f} GB; fused exact scoring; niceness {nice}, load average {load[0]:.2f} / {load[1]:.2f} / "
           f"{load[2]:.2f} (1 / 5 / 15 min) at the end")


if __name__ == "__main__":
    main()
