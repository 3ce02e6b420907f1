"""SASRec training steps on large catalogs: peak memory and step time, fused vs unfused loss.

RecBole's SASRec (docs/METHOD.md §1, d = 64) over a synthetic catalog of N items, windows of 50
random item ids (Zipf-like popularity), 2,048 targets per step, Adam, fp32. ``unfused``: the full
(targets, N) logits, then ``F.cross_entropy`` (what the trainer did before); ``fused``: the trainer's
``allpos_loss`` (``popsteer/fused_ce.py``: chunks of 2^21 logits, gradient computed in the forward).

    .venv/bin/python bench/sasrec_catalog_memory.py [--sizes 10000 100000 1000000] [--unfused-max 100000]

Each (size, loss) runs in its own subprocess so its peak RSS is its own; the unfused loss runs only up
to ``--unfused-max`` items (at 1M items its logits alone need ~8 GB per copy in fp32).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def one(n_items: int, fused: bool, steps: int) -> dict:
    from sasrec_step import unfused_loss

    from popsteer.models.config import SASRecConfig
    from popsteer.models.recbole_adapter import build_sasrec
    from popsteer.models.allpos import allpos_loss

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build_sasrec(n_items, SASRecConfig()).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ranks = torch.arange(1, n_items, dtype=torch.float64)
    popularity = 1.0 / ranks**1.1  # item i + 1 has rank i + 1
    windows = 41  # x 50 positions, the first of each predicts nothing: 2,009 targets

    loss_fn = allpos_loss if fused else unfused_loss
    times = []
    for _ in range(steps + 1):
        seq = torch.multinomial(popularity, windows * 51, replacement=True).view(windows, 51) + 1
        inputs, targets = seq[:, :50], seq[:, 1:].clone()
        t0 = time.perf_counter()
        loss = loss_fn(model, inputs, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return {"n_items": n_items, "loss": "fused" if fused else "unfused", "ms_per_step": 1e3 * min(times[1:]),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "final_loss": float(loss)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--unfused-max", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--fused", type=int, default=1, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one is not None:
        print(json.dumps(one(a.one, bool(a.fused), a.steps)))
        return
    from isolated import run_json
    from results import record

    rows = []
    for size in a.sizes:
        for fused in (0, 1):
            if not fused and size > a.unfused_max:
                continue
            rows.append(run_json(__file__, "--one", size, "--fused", fused, "--steps", a.steps))
            print(json.dumps(rows[-1]), flush=True)
    by = {(r["n_items"], r["loss"]): r for r in rows}
    both = max(n for n, loss in by if loss == "unfused")
    big = max(n for n, _ in by)
    ratio = by[(both, "unfused")]["peak_rss_gb"] / by[(both, "fused")]["peak_rss_gb"]
    table = "; ".join(f"{r['n_items']:,} items {r['loss']} {r['ms_per_step']:.0f} ms/step, {r['peak_rss_gb']:.2f} GB"
                      for r in rows)
    cmd = (f".venv/bin/python bench/sasrec_catalog_memory.py --sizes {' '.join(map(str, a.sizes))} "
           f"--unfused-max {a.unfused_max}")
    record("sasrec_step_peak_rss_ratio_unfused_vs_fused", round(ratio, 2), f"x (peak RSS at {both:,} items)",
           "report", None, cmd,
           f"2,009 targets per step, fp32, Adam, best of {a.steps} steps; {table}; fused at {big:,} items: "
           f"{by[(big, 'fused')]['peak_rss_gb']:.2f} GB")


if __name__ == "__main__":
    main()
