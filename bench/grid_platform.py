"""The grid stage on evaluator actors over user shards against the same stage in one process.

    .venv/bin/python bench/grid_platform.py -p SAE.safetensors --data-dir DIR [--out-dir DIR] [--evaluators 2]

The same analysed SAE, the same 56-point grid on valid and test, the same encodings (read by
both, not timed): ``steering_grid`` with ``LocalGrid`` (torch on all cores) vs with an
``EvaluatorPool`` on a local Ray instance (pool start-up, shards, merge and shutdown timed;
Ray's own start is not, as a cluster is already up). Median of 3 runs each, interleaved.
Every metric row and baseline must be identical (asserted).
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
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    single, platform, results = [], [], {}
    for _ in range(a.runs):
        t0 = time.perf_counter()
        results["single"] = steering_grid(cfg, write=False, data=ctx.data, encodings=encodings)
        single.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pool = EvaluatorPool(a.evaluators, num_cpus=cpus / a.evaluators)
        try:
            results["platform"] = steering_grid(cfg, write=False, data=ctx.data, encodings=encodings, executor=pool)
        finally:
            pool.shutdown()
        platform.append(time.perf_counter() - t0)
    ray.shutdown()
    s, p = results["single"], results["platform"]
    for split in ("valid", "test"):
        assert all(same(x, y) for x, y in zip(s.rows[split], p.rows[split])), split
        assert all(same(s.baselines[split][m], p.baselines[split][m]) for m in ("sasrec", "sae")), split
    assert s.pick == p.pick
    t_s, t_p = sorted(single)[len(single) // 2], sorted(platform)[len(platform) // 2]
    ratio = t_p / t_s
    users = {sp: len(encodings.read(sp)) for sp in ("valid", "test")}
    print(f"{len(s.points)} points x valid+test ({users}): single {t_s:.1f} s ({', '.join(f'{x:.1f}' for x in single)}), "
          f"{a.evaluators} evaluators {t_p:.1f} s ({', '.join(f'{x:.1f}' for x in platform)}), ratio {ratio:.2f}; rows identical")
    record("grid_platform_over_single", round(ratio, 2), "x (evaluator actors time / single-process time)", "<= 1.2, identical rows",
           ratio <= 1.2, f".venv/bin/python bench/grid_platform.py -p {Path(a.pretrained_path).name} --data-dir DIR",
           f"{ctx.data.name}, {len(s.points)} points on valid and test ({users['valid']} + {users['test']} users), "
           f"SAE n={ctx.meta['n_latents']}: single process {t_s:.1f} s vs {a.evaluators} evaluator actors on a local Ray "
           f"({cpus} CPUs; pool start-up, shards and merge included) {t_p:.1f} s, median of {a.runs}; every metric row "
           f"identical (asserted)")


if __name__ == "__main__":
    main()
