"""``popsteer serve`` under load, on loopback: p50/p99 latency and throughput of POST /recommend.

A synthetic catalog (bench/large_catalog.py's: power-law popularity, d = 64) and a random SAE of width 4096
(K = 32) with synthetic neuron scores are written as a vector-only serving bundle (no recommender: requests
carry x); for each catalog size and index kind one Serve app (one model replica) is deployed, and for
steered (the bundle's default point, N = 4096, alpha = 1.5) and unsteered (alpha = 0, error-preserving: x
itself) requests, 1, 8 and 32 closed-loop clients each send requests for at most ``--seconds`` or
``--requests`` in all, whichever comes first; GET /health is loaded the same way, the Serve path's
own cost (proxy -> gateway -> replica) with no model work. Every request goes to 127.0.0.1.

    .venv/bin/python bench/serve_load.py [--sizes 10000 100000 1000000] [--indexes exact ivf]
        [--clients 1 8 32] [--seconds 15] [--requests 2000] [--record]

With ``--record`` (and 1M items, 8 clients measured) it records ``serve_p99_ms_1m_ann``,
``serve_p99_ms_1m_exact`` and ``serve_steered_over_unsteered_p50`` (exact, 1M, 8 clients) in
bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def synthetic_bundle(folder: Path, n_items: int, index: str, d: int = 64, seed: int = 0) -> Path:
    """A vector-only serving bundle of a synthetic catalog and a random SAE (K = 32, width 64 d)."""
    import torch

    from large_catalog import synthetic_catalog
    from popsteer.sae.io import sae_meta, save_sae
    from popsteer.sae.model import SAEConfig, TopKSAE
    from popsteer.serve.bundle import write_bundle

    torch.manual_seed(seed)
    emb, _, _, _ = synthetic_catalog(n_items, 1, d, seed)
    cfg = SAEConfig(k=32, scale=64)
    sae = TopKSAE(d, cfg).eval()
    folder.mkdir(parents=True, exist_ok=True)
    sae_path = save_sae(folder / "sae-src.safetensors", sae, sae_meta(
        dataset="synthetic", d=d, cfg=cfg, base="synthetic", base_sha256="0" * 64, prefix_stride=1,
        train_mode_quirk=False, report={}, history=[], train_minutes=0.0))
    rng = np.random.default_rng(seed)
    n = cfg.hidden(d)
    scores = {"cohen_d": rng.normal(size=n), "sigma_pop": rng.uniform(0.5, 1.5, n),
              "sigma_unpop": rng.uniform(0.5, 1.5, n)}
    steering = {"variant": "replace", "num_neurons": n, "alpha": 1.5, "alpha_unpop": None, "swap_sigma": False,
                "source": "synthetic"}
    tokens = [str(i) for i in range(n_items)]
    return write_bundle(folder / f"bundle-{n_items}-{index}", sae_path=sae_path, base_path=None,
                        emb=emb.float(), bias=None, sequences=None, item_tokens=tokens, titles=tokens,
                        user_tokens=[], scores=scores, labels=[""] * n, steering=steering, index=index,
                        facts={"dataset": "synthetic", "model": "vectors", "general": False, "max_len": 0,
                               "sae_checkpoint": str(sae_path), "sae_sha256": "", "base_checkpoint": "",
                               "base_sha256": ""})


def load(url: str, bodies: list[dict] | None, clients: int, seconds: float, max_requests: int) -> dict:
    """Closed-loop clients over ``bodies`` (cycled; None: GET /health, the Serve path's own cost with no
    model work): latency percentiles (ms) and throughput (req/s)."""
    import requests

    lat, errors, lock = [], [0], threading.Lock()
    stop = time.monotonic() + seconds

    def client(c: int) -> None:
        s = requests.Session()
        i = c
        while time.monotonic() < stop:
            with lock:
                if len(lat) + errors[0] >= max_requests:
                    return
            t0 = time.perf_counter()
            r = (s.get(f"{url}/health", timeout=120) if bodies is None
                 else s.post(f"{url}/recommend", json=bodies[i % len(bodies)], timeout=120))
            dt = (time.perf_counter() - t0) * 1e3
            with lock:
                (lat.append(dt) if r.status_code == 200 else errors.__setitem__(0, errors[0] + 1))
            i += clients

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    a = np.array(lat)
    return {"requests": len(lat), "errors": errors[0], "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "throughput_rps": len(lat) / wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--indexes", nargs="+", default=["exact", "ivf"])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--batch", type=int, default=8, help="requests a replica answers together (popsteer serve --batch)")
    p.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs (hence torch threads) of the one replica")
    p.add_argument("--record", action="store_true")
    args = p.parse_args()

    from ray import serve

    from popsteer.serve.app import connect_ray, start_app

    connect_ray()
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(256, 64)).astype(np.float32)
    kinds = {"steered": {}, "unsteered": {"alpha": 0.0, "variant": "preserve"}, "health": None}
    rows = []
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        for n_items in args.sizes:
            for index in args.indexes:
                bundle = synthetic_bundle(Path(tmp), n_items, index)
                url = start_app(bundle, port=args.port, replicas=1, replica_cpus=args.replica_cpus, name="bench",
                                batch=args.batch, max_ongoing=64)
                for kind, extra in kinds.items():
                    bodies = None if extra is None else [{"vector": x.tolist(), "k": 10, **extra} for x in xs]
                    load(url, bodies, 1, 2.0, 20)  # warm-up
                    for clients in args.clients:
                        row = {"n_items": n_items, "index": index, "kind": kind, "clients": clients,
                               **load(url, bodies, clients, args.seconds, args.requests)}
                        print(json.dumps(row), flush=True)
                        rows.append(row)
                serve.delete("bench")
    serve.shutdown()
    if args.record:
        record_rows(rows)


def record_rows(rows: list[dict]) -> None:
    from results import record

    def get(index: str, kind: str) -> dict | None:
        return next((r for r in rows if (r["n_items"], r["index"], r["kind"], r["clients"]) ==
                     (1_000_000, index, kind, 8)), None)

    cmd = "python bench/serve_load.py " + " ".join(sys.argv[1:])
    ann = next((get(i, "steered") for i in ("ivf", "hnsw") if get(i, "steered")), None)
    exact, unsteered = get("exact", "steered"), get("exact", "unsteered")

    def floor(index: str) -> str:  # the same app's GET /health: Serve's own cost, no model work
        h = get(index, "health")
        return "" if h is None else (f"; GET /health of the same app (no model work) at 8 clients: p50 "
                                     f"{h['p50_ms']:.0f} ms, p99 {h['p99_ms']:.0f} ms, {h['throughput_rps']:.0f} req/s")
    if ann:
        record("serve_p99_ms_1m_ann", ann["p99_ms"], "ms", "<= 30", ann["p99_ms"] <= 30, cmd,
               f"{ann['index']}, 1M items, 8 clients, steered, one replica, {ann['throughput_rps']:.0f} req/s"
               + floor(ann["index"]))
    if exact:
        record("serve_p99_ms_1m_exact", exact["p99_ms"], "ms", "<= 100", exact["p99_ms"] <= 100, cmd,
               f"1M items, 8 clients, steered, one replica, {exact['throughput_rps']:.0f} req/s" + floor("exact"))
    if exact and unsteered:
        ratio = exact["p50_ms"] / unsteered["p50_ms"]
        record("serve_steered_over_unsteered_p50", ratio, "x", "<= 1.2", ratio <= 1.2, cmd,
               f"exact, 1M items, 8 clients: p50 {exact['p50_ms']:.1f} ms steered, {unsteered['p50_ms']:.1f} ms "
               "unsteered (alpha 0, preserve), measured in the same run")


if __name__ == "__main__":
    main()
