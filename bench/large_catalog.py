"""Large catalogs: streamed scoring keeps memory flat in catalog size.

A synthetic catalog (power-law popularity, d = 64 item embeddings) and synthetic user
representations; an SAE of width s*d = 4096 with synthetic neuron scores. For each catalog
size, time a steering-grid point (steer -> TopK -> decode -> streamed scoring with a running
top-k -> metrics) and record the process's peak RSS.

    .venv/bin/python bench/large_catalog.py [--users 100000] [--sizes 10000 100000 1000000]

Each size runs in its own subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def synthetic_catalog(n_items: int, n_users: int, d: int, seed: int = 0):
    """Zipf-like counts (item 1 most popular), embeddings whose norm grows with popularity."""
    g = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, n_items + 1, dtype=torch.float64)
    counts = torch.floor(1e6 / ranks**1.1).long()
    counts[0] = 0  # padding
    emb = torch.randn(n_items, d, generator=g) * (1 + 0.1 * torch.log1p(counts.float())).unsqueeze(1)
    emb[0] = 0
    users = torch.randn(n_users, d, generator=g)
    targets = torch.randint(1, n_items, (n_users,), generator=g)
    return emb, users, counts.numpy(), targets.numpy()


def one_size(n_items: int, n_users: int, points: int, chunk: int) -> dict:
    from popsteer.eval.evaluator import Evaluator
    from popsteer.steering.grid import evaluate_grid, grid_points
    from popsteer.eval.popularity import PopularityGroups
    from popsteer.sae.model import SAEConfig, TopKSAE
    from popsteer.steering.steer import NeuronScores

    d = 64
    emb, users, counts, targets = synthetic_catalog(n_items, n_users, d)
    sae = TopKSAE(d, SAEConfig(k=32, scale=64)).eval()
    rng = np.random.default_rng(0)
    n = sae.W_enc.shape[0]
    scores = NeuronScores(d=rng.normal(size=n), sigma_pop=rng.uniform(0.5, 1.5, n), sigma_unpop=rng.uniform(0.5, 1.5, n))
    with torch.no_grad():
        h = sae.preact(users)  # (U, n)
    ev = Evaluator(targets=targets, groups=PopularityGroups.from_counts(counts), item_chunk=chunk)  # 256-row batches
    pts = grid_points(n)[:points]
    t0 = time.perf_counter()
    rows = evaluate_grid(sae, h, emb, ev, scores, pts)
    secs = (time.perf_counter() - t0) / len(pts)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"n_items": n_items, "n_users": n_users, "seconds_per_point": secs, "peak_rss_gb": peak_gb,
            "points_timed": len(pts), "gini": rows[0]["gini@10"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--points", type=int, default=1, help="grid points timed per size (the full grid is 56)")
    ap.add_argument("--chunk", type=int, default=65536, help="items scored per chunk")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one is not None:
        print(json.dumps(one_size(a.one, a.users, a.points, a.chunk)))
        return
    from isolated import run_json
    from results import record

    rows = []
    for size in a.sizes:
        rows.append(run_json(__file__, "--one", size, "--users", a.users, "--points", a.points, "--chunk", a.chunk))
        print(json.dumps(rows[-1]), flush=True)
    big = rows[-1]
    growth = ", ".join(f"{r['n_items']:,} items {r['seconds_per_point']:.1f} s/point ({r['peak_rss_gb']:.2f} GB)" for r in rows)
    cmd = f".venv/bin/python bench/large_catalog.py --users {a.users} --sizes {' '.join(map(str, a.sizes))}"
    record("large_catalog_peak_rss_gb", round(big["peak_rss_gb"], 2), "GB", "<= 4 (1M items, 100k users, d=64)",
           big["peak_rss_gb"] <= 4 and big["n_items"] >= 1_000_000 and a.users >= 100_000, cmd,
           f"{a.users:,} users; {growth}; full 56-point grid at {big['n_items']:,} items extrapolated "
           f"{56 * big['seconds_per_point'] / 60:.0f} min")


if __name__ == "__main__":
    main()
