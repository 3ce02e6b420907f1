"""Approximate retrieval at 1M items: recall@10 against exact, build time and per-query latency.

The synthetic catalog of ``bench/large_catalog.py`` (power-law popularity, d = 64, norms growing
with popularity), its synthetic users, and queries made from them as serving makes them: the users'
own vectors, their (unsteered) TopK SAE reconstruction (SAE width 4,096, K = 32, as large_catalog),
and two steered reconstructions (grid points N = 2,048, alpha = 2 and N = 4,096, alpha = 4, with
synthetic neuron scores). One index, built once with default settings, answers them all; the
exact lists come from the fused exact index. ``serve_ann_recall10_1m`` is the lowest recall over
the query sets.

    .venv/bin/python bench/ann_recall.py [--items 1000000] [--queries 1000] [--kind hnsw]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from large_catalog import synthetic_catalog  # noqa: E402

from popsteer.retrieval import build_index  # noqa: E402
from popsteer.sae.model import SAEConfig, TopKSAE  # noqa: E402
from popsteer.steering.steer import NeuronScores, steered_reconstruction, steering_delta  # noqa: E402


def query_sets(users: torch.Tensor) -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    sae = TopKSAE(users.shape[1], SAEConfig(k=32, scale=64)).eval()
    n = sae.W_enc.shape[0]
    rng = np.random.default_rng(0)
    scores = NeuronScores(d=rng.normal(size=n), sigma_pop=rng.uniform(0.5, 1.5, n), sigma_unpop=rng.uniform(0.5, 1.5, n))
    with torch.no_grad():
        h = sae.preact(users)
    sets = {"users": users, "sae_unsteered": steered_reconstruction(sae, h, torch.zeros(n))}
    for num, alpha in ((2048, 2.0), (4096, 4.0)):
        sets[f"steered_n{num}_a{alpha:g}"] = steered_reconstruction(sae, h, steering_delta(scores, num, alpha))
    return {k: np.ascontiguousarray(v.numpy(), dtype=np.float32) for k, v in sets.items()}


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / exact.shape[1] for a, b in zip(approx, exact)]))


def run(n_items: int, n_queries: int, kind: str, params: dict) -> dict:
    emb, users, _, _ = synthetic_catalog(n_items, n_queries, 64)
    emb = emb.numpy()
    sets = query_sets(users)
    exact = build_index(emb, None, "exact")
    t0 = time.perf_counter()
    index = build_index(emb, None, kind, **params)
    build_s = time.perf_counter() - t0
    out = {"n_items": n_items, "queries": n_queries, "kind": kind, "params": index.params(), "build_s": build_s,
           "recall": {}, "batch_ms_per_query": {}, "exact_batch_ms_per_query": {}}
    for name, q in sets.items():
        t0 = time.perf_counter()
        want = exact.search(q, 10)[1]
        out["exact_batch_ms_per_query"][name] = (time.perf_counter() - t0) / len(q) * 1e3
        t0 = time.perf_counter()
        got = index.search(q, 10)[1]
        out["batch_ms_per_query"][name] = (time.perf_counter() - t0) / len(q) * 1e3
        out["recall"][name] = recall(got, want)
    single = []
    for row in sets["steered_n4096_a4"][:200]:  # one query per call, as a served request
        t0 = time.perf_counter()
        index.search(row[None], 10)
        single.append((time.perf_counter() - t0) * 1e3)
    out["single_ms_p50"], out["single_ms_p99"] = float(np.percentile(single, 50)), float(np.percentile(single, 99))
    out["min_recall"] = min(out["recall"].values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--kind", default="hnsw", choices=["ivf", "hnsw"])
    ap.add_argument("--param", action="append", default=[], metavar="NAME=INT", help="an index setting (repeatable)")
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args()
    params = {k: int(v) for k, v in (p.split("=", 1) for p in a.param)}
    r = run(a.items, a.queries, a.kind, params)
    print(json.dumps(r), flush=True)
    if a.no_record:
        return
    from results import record

    cmd = f".venv/bin/python bench/ann_recall.py --items {a.items} --queries {a.queries} --kind {a.kind}" + "".join(
        f" --param {p}" for p in a.param)
    rec = ", ".join(f"{k} {v:.4f}" for k, v in r["recall"].items())
    record("serve_ann_recall10_1m", round(r["min_recall"], 4), "recall@10 vs exact (min over query sets)",
           ">= 0.95 at default settings, 1M items, steered and unsteered",
           r["min_recall"] >= 0.95 and a.items >= 1_000_000 and not params, cmd,
           f"{a.items:,} items, d=64, {a.queries} queries per set; index {r['params']}; build {r['build_s']:.0f} s; "
           f"recall {rec}; one query per call p50 {r['single_ms_p50']:.1f} ms, p99 {r['single_ms_p99']:.1f} ms; "
           f"batched {np.mean(list(r['batch_ms_per_query'].values())):.2f} ms/query "
           f"(exact batched {np.mean(list(r['exact_batch_ms_per_query'].values())):.2f} ms/query)")


if __name__ == "__main__":
    main()
