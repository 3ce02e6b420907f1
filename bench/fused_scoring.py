"""Fused exact scoring against the fp32 matmul floor, at 10k, 100k and 1M items (d = 64).

For each catalog size, in one process and interleaved (best of ``--repeats``), the same users in
256-row blocks shared by ``torch.get_num_threads()`` worker threads, torch single-threaded in each
(as ``grid_topk`` runs):

- ``floor_full``: ``torch.mm`` of each block against the whole item table into a reused (256, n_items)
  buffer (the product alone, the issue's floor);
- ``floor_tiled``: the same product tile by tile into a reused tile buffer (the fused path's own
  product, no selection): the stricter floor where it is faster;
- ``unfused``: the previous path, the full product then the native ``row_topk``;
- ``rank_topk``: today's path, fused (``popsteer.kernels.native.fused``);
- ``grid_point``: one steering-grid point end to end (steer, TopK, decode, fused scoring, metrics).

``large_catalog_grid_over_matmul_floor`` = grid point / min(floor_full, floor_tiled) at the largest size, wall
clock (the ratios in the process's CPU seconds are recorded beside them: on a shared machine wall times swing).

    .venv/bin/python bench/fused_scoring.py [--users 4096] [--sizes 10000 100000 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from large_catalog import synthetic_catalog  # noqa: E402

from popsteer.eval.evaluator import Evaluator, rank_topk  # noqa: E402
from popsteer.eval.popularity import PopularityGroups  # noqa: E402
from popsteer.kernels.native import row_topk  # noqa: E402
from popsteer.kernels.native.fused import FusedScorer  # noqa: E402
from popsteer.sae.model import SAEConfig, TopKSAE  # noqa: E402
from popsteer.steering.grid import evaluate_grid, grid_points, single_threaded_torch  # noqa: E402
from popsteer.steering.steer import NeuronScores  # noqa: E402

BLOCK = 256


def per_block(users: torch.Tensor, work) -> None:
    """work(block) over 256-row blocks on torch's thread count of workers, torch single-threaded in each."""
    starts, workers = range(0, len(users), BLOCK), torch.get_num_threads()  # as grid_topk: read before going single
    with single_threaded_torch(), ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda s: work(users[s : s + BLOCK]), starts))


def methods(emb: torch.Tensor, users: torch.Tensor, counts: np.ndarray, targets: np.ndarray) -> dict:
    emb_t = emb.T.contiguous()  # (d, n_items)
    n = emb.shape[0]

    def floor_full():
        def work(x):
            torch.mm(x, emb_t, out=torch.empty((len(x), n)) if len(x) < BLOCK else buffers.full())
        per_block(users, work)

    tiles = FusedScorer(emb).tiles(BLOCK)  # the fused path's tiles, made once

    def floor_tiled():
        def work(x):
            buf = buffers.tile()
            for c0, c1, _, t in tiles:
                torch.mm(x, t, out=buf[: len(x) * (c1 - c0)].view(len(x), c1 - c0))
        per_block(users, work)

    def unfused():
        def work(x):
            scores = torch.mm(x, emb_t, out=buffers.full()[: len(x)])
            scores[:, 0] = -torch.inf
            row_topk(scores, 10)
        per_block(users, work)

    def fused():
        per_block(users, lambda x: rank_topk(x, emb, 10))

    sae = TopKSAE(emb.shape[1], SAEConfig(k=32, scale=64)).eval()
    rng = np.random.default_rng(0)
    h_n = sae.W_enc.shape[0]
    nscores = NeuronScores(d=rng.normal(size=h_n), sigma_pop=rng.uniform(0.5, 1.5, h_n),
                           sigma_unpop=rng.uniform(0.5, 1.5, h_n))
    with torch.no_grad():
        h = sae.preact(users)
    ev = Evaluator(targets=targets, groups=PopularityGroups.from_counts(counts))
    point = grid_points(h_n)[:1]

    def grid_point():
        evaluate_grid(sae, h, emb, ev, nscores, point)

    return {"floor_full": floor_full, "floor_tiled": floor_tiled, "unfused": unfused, "rank_topk": fused,
            "grid_point": grid_point}


class _Buffers:
    """One reused (256, n_items) and one tile buffer per worker thread."""

    def __init__(self, n_items: int):
        import threading

        self.n, self.local = n_items, threading.local()

    def full(self) -> torch.Tensor:
        if not hasattr(self.local, "full"):
            self.local.full = torch.empty((BLOCK, self.n))
        return self.local.full

    def tile(self) -> torch.Tensor:
        if not hasattr(self.local, "tile"):
            self.local.tile = torch.empty(1 << 19)
        return self.local.tile


buffers: _Buffers


def one_size(n_items: int, n_users: int, repeats: int) -> dict:
    global buffers
    n_users = max(BLOCK, n_users - n_users % BLOCK)  # whole blocks: one buffer shape
    emb, users, counts, targets = synthetic_catalog(n_items, n_users, 64)
    buffers = _Buffers(n_items)
    fns = methods(emb, users, counts, targets)
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    out = {"n_items": n_items, "users": len(users), "threads": torch.get_num_threads()}
    for clock, times in (("wall", wall), ("cpu", cpu)):
        best = {k: min(v) for k, v in times.items()}
        floor = min(best["floor_full"], best["floor_tiled"])
        out[clock] = {"seconds": best, "floor_gflops": 2 * len(users) * n_items * 64 / floor / 1e9,
                      **{f"{k}_over_floor": best[k] / floor for k in ("grid_point", "rank_topk", "unfused")}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=4096)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one is not None:
        print(json.dumps(one_size(a.one, a.users, a.repeats)))
        return
    from isolated import run_json
    from results import record

    rows = []
    for size in a.sizes:
        rows.append(run_json(__file__, "--one", size, "--users", a.users, "--repeats", a.repeats))
        print(json.dumps(rows[-1]), flush=True)
    big = rows[-1]

    def line(r: dict, clock: str) -> str:
        c = r[clock]
        return (f"{r['n_items']:,} items: grid point {c['seconds']['grid_point']:.2f} s, rank_topk {c['seconds']['rank_topk']:.2f} s, "
                f"unfused {c['seconds']['unfused']:.2f} s, floor full {c['seconds']['floor_full']:.2f} s / tiled "
                f"{c['seconds']['floor_tiled']:.2f} s ({c['floor_gflops']:.0f} GFLOP/s); grid/floor {c['grid_point_over_floor']:.2f}x, "
                f"rank_topk/floor {c['rank_topk_over_floor']:.2f}x, unfused/floor {c['unfused_over_floor']:.2f}x")

    cmd = f".venv/bin/python bench/fused_scoring.py --users {a.users} --sizes {' '.join(map(str, a.sizes))} --repeats {a.repeats}"
    value = big["wall"]["grid_point_over_floor"]
    record("large_catalog_grid_over_matmul_floor", round(value, 3), "x (grid point / fp32 matmul floor, wall clock)",
           "<= 1.3 (1M items, d=64)", value <= 1.3 and big["n_items"] >= 1_000_000, cmd,
           f"{big['users']:,} users, {big['threads']} worker threads, best of {a.repeats} interleaved; floor = the faster of "
           f"torch.mm into a reused (256, n_items) buffer and the same product tile by tile; wall clock: "
           + "; ".join(line(r, "wall") for r in rows) + ". The process's CPU seconds (the machine was shared): "
           + "; ".join(line(r, "cpu") for r in rows))


if __name__ == "__main__":
    main()
