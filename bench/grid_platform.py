"""The grid stage on evaluator actors over user shards against the same stage in one process.

    .venv/bin/python bench/grid_platform.py -p SAE.safetensors --data-dir DIR [--out-dir DIR] [--evaluators 2]

The same analysed SAE, the same 56-point grid on valid and test, the same encodings (read by
both, not timed): ``steering_grid`` with ``LocalGrid`` (torch on all cores) vs with an
``EvaluatorPool`` on a local Ray instance: cold (a new pool per run: actor start-up, shards, merge
and shutdown timed; Ray's own start is not, as a cluster is already up) and warm (one pool kept
across runs, as for the second and later SAEs of a ``trials: all`` sweep). Median of the runs
(interleaved). Every metric row and baseline must be identical (asserted).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record  # noqa: E402

from popsteer.platform.evaluators import EvaluatorPool  # noqa: E402
from popsteer.stages.config import GridConfig, GridStageConfig, SAERef, Workspace  # noqa: E402
from popsteer.stages.context import load_sae_context  # noqa: E402
from popsteer.stages.encoded import Part  # noqa: E402
from popsteer.stages.grid import steering_grid  # noqa: E402


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k])
                                                         and math.isnan(b[k])) for k in a)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-p", "--pretrained_path", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out-dir", default="saved")
    ap.add_argument("--evaluators", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    ref = SAERef(path=a.pretrained_path, where=Workspace(data_dir=a.data_dir, out_dir=a.out_dir))
    ctx = load_sae_context(ref)
    encodings = ctx.base.encodings([Part("valid"), Part("test")])
    cfg = GridStageConfig(ref, GridConfig())
    cpus = os.cpu_count() or 2
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)  # a fresh one
    single, platform, warm, results = [], [], [], {}

    def local() -> None:
        t0 = time.perf_counter()
        results["single"] = steering_grid(cfg, write=False, data=ctx.data, encodings=encodings)
        single.append(time.perf_counter() - t0)

    for _ in range(a.runs):  # cold: a new pool per grid (the cluster's CPUs: one pool at a time)
        local()
        t0 = time.perf_counter()
        pool = EvaluatorPool(a.evaluators, num_cpus=cpus / a.evaluators)
        try:
            results["platform"] = steering_grid(cfg, write=False, data=ctx.data, encodings=encodings, executor=pool)
        finally:
            pool.shutdown()
        platform.append(time.perf_counter() - t0)
    kept = EvaluatorPool(a.evaluators, num_cpus=cpus / a.evaluators)
    steering_grid(cfg, write=False, data=ctx.data, encodings=encodings, executor=kept)  # its first grid: warm-up
    for _ in range(a.runs):  # warm: one pool kept
        local()
        t0 = time.perf_counter()
        results["warm"] = steering_grid(cfg, write=False, data=ctx.data, encodings=encodings, executor=kept)
        warm.append(time.perf_counter() - t0)
    kept.shutdown()
    ray.shutdown()
    s = results["single"]
    for other in ("platform", "warm"):
        p = results[other]
        for split in ("valid", "test"):
            assert all(same(x, y) for x, y in zip(s.rows[split], p.rows[split])), (other, split)
            assert all(same(s.baselines[split][m], p.baselines[split][m]) for m in ("sasrec", "sae")), (other, split)
        assert s.pick == p.pick, other
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    runs = lambda xs: ", ".join(f"{x:.1f}" for x in xs)  # noqa: E731
    t_s, t_p, t_w = med(single), med(platform), med(warm)
    users = {sp: len(encodings.read(sp)) for sp in ("valid", "test")}
    print(f"{len(s.points)} points x valid+test ({users}): single {t_s:.1f} s ({runs(single)}); {a.evaluators} evaluators "
          f"cold {t_p:.1f} s ({runs(platform)}), warm {t_w:.1f} s ({runs(warm)}); ratios {t_p / t_s:.2f} / {t_w / t_s:.2f}; "
          "rows identical")
    cmd = (f".venv/bin/python bench/grid_platform.py -p {Path(a.pretrained_path).name} --data-dir DIR --runs {a.runs} "
           f"--evaluators {a.evaluators}")
    what = (f"{ctx.data.name}, {len(s.points)} points on valid and test ({users['valid']} + {users['test']} users), "
            f"SAE n={ctx.meta['n_latents']}, {a.evaluators} evaluator actors on a local Ray ({cpus} CPUs), median of "
            f"{a.runs} interleaved runs, every metric row identical (asserted): single process {t_s:.1f} s ({runs(single)})")
    record("grid_platform_over_single", round(t_p / t_s, 2), "x (new evaluator pool time / single-process time)",
           "<= 1.2, identical rows", t_p / t_s <= 1.2, cmd,
           f"{what}; a new pool per grid (actor start-up included) {t_p:.1f} s ({runs(platform)})")
    record("grid_platform_warm_over_single", round(t_w / t_s, 2), "x (running evaluator pool time / single-process time)",
           "report", None, cmd, f"{what}; a pool already running (the later SAEs of a sweep) {t_w:.1f} s ({runs(warm)})")


if __name__ == "__main__":
    main()
