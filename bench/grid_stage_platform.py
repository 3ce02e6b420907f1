"""The analysis and steering-grid stages as the sweep runner runs them, against the same two stages in one process.

    .venv/bin/python bench/grid_stage_platform.py -p SAE.safetensors --data-dir DIR [--out-dir DIR] [--runs 3]

Platform (``popsteer.platform.steps``, called as ``popsteer.platform.sweep`` calls them): a new
pool of evaluator actors (one, of all the CPUs), ``analysis_step`` on it, then ``steering_step`` on
the same actors, shut down after: the actors' start-up is timed within the analysis stage. Single process: ``analyze`` then ``steering_grid``
(torch on all cores). Same SAE, same 56-point grid on valid and test, same encodings and data
(loaded once, not timed; a Ray instance is already up, as in a sweep). Timed: each stage, and
the two together. Median of the interleaved runs; the grid files the two write are byte-identical
(asserted), so is every metric row.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid_platform import same  # noqa: E402
from results import record  # noqa: E402

from popsteer.platform import steps  # noqa: E402
from popsteer.platform.spec import StagesSpec, SteeringSpec, SweepSpec  # noqa: E402
from popsteer.stages.analysis import analyze  # noqa: E402
from popsteer.stages.config import AnalysisConfig, GridStageConfig, SAERef, Workspace  # noqa: E402
from popsteer.stages.context import load_sae_context  # noqa: E402
from popsteer.stages.encoded import Part  # noqa: E402
from popsteer.stages.grid import steering_grid  # noqa: E402
from popsteer.stages.analysis import probe_parts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-p", "--pretrained_path", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out-dir", default="saved")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ["POPSTEER_ALLOWED_ROOTS"] = os.pathsep.join(str(Path(p).resolve().parent.parent)
                                                           for p in (a.pretrained_path, a.data_dir))
    import ray

    ctx = load_sae_context(SAERef(path=a.pretrained_path, where=Workspace(data_dir=a.data_dir, out_dir=a.out_dir)))
    spec_model = ctx.base.model
    enc = ctx.base.encodings([*probe_parts(spec_model.default_probe, spec_model.general, 2020), Part("valid"),
                              Part("test")])
    cpus = os.cpu_count() or 2
    spec = SweepSpec(name="bench-grid-stage", dataset=ctx.data.name, data_dir=a.data_dir,
                     base_checkpoint=str(ctx.meta["base_checkpoint"]), storage=str(Path(a.out_dir) / "sweeps"),
                     stages=StagesSpec(steering=SteeringSpec(evaluators=1, cpus_per_evaluator=float(cpus))))
    sweep = {"trials": [{"trial_key": "t", "sae_checkpoint": a.pretrained_path}], "selected": ["t"]}
    encoded = {"encoded_dir": str(enc.folder)}
    ref = steps.sae_ref(spec, a.pretrained_path)
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    times = {k: [] for k in ("single_analysis", "single_grid", "ray_analysis", "ray_grid")}
    grids = {}
    for _ in range(a.runs):
        t0 = time.perf_counter()
        analyze(AnalysisConfig(ref, seed=spec.encode.profile_seed, dataset_copy=False), data=ctx.data, encodings=enc)
        t1 = time.perf_counter()
        grids["single"] = steering_grid(GridStageConfig(ref, steps.grid_config(spec)), data=ctx.data, encodings=enc)
        t2 = time.perf_counter()
        written = {Path(f).name: Path(f).read_bytes() for f in grids["single"].files if f.endswith(".csv")}
        times["single_analysis"].append(t1 - t0)
        times["single_grid"].append(t2 - t1)
        t0 = time.perf_counter()
        pool = steps.evaluator_pool(spec)
        analysis = steps.analysis_step(spec, encoded, sweep, ctx.data, None, pool)
        t1 = time.perf_counter()
        out = steps.steering_step(spec, encoded, analysis, ctx.data, None, pool)
        t2 = time.perf_counter()
        assert out["pool"]["shared_with_analysis"]
        again = {Path(f).name: Path(f).read_bytes() for f in out["files"]["t"] if f.endswith(".csv")}
        assert written and again == written, "the platform's grid files differ from the single process's"
        times["ray_analysis"].append(t1 - t0)
        times["ray_grid"].append(t2 - t1)
    ray.shutdown()
    s, p = grids["single"], out["picks"]["t"]
    assert s.pick == p["pick"] and same(s.baselines["valid"]["sasrec"], p["valid_baselines"]["sasrec"])
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    runs = {k: ", ".join(f"{x:.1f}" for x in v) for k, v in times.items()}
    both_s, both_r = med["single_analysis"] + med["single_grid"], med["ray_analysis"] + med["ray_grid"]
    line = (f"single: analysis {med['single_analysis']:.1f} s ({runs['single_analysis']}), grid {med['single_grid']:.1f} s "
            f"({runs['single_grid']}); platform: a new pool + the analysis on it {med['ray_analysis']:.1f} s "
            f"({runs['ray_analysis']}), the grid on the same actors {med['ray_grid']:.1f} s ({runs['ray_grid']})")
    print(f"{line}; grid ratio {med['ray_grid'] / med['single_grid']:.2f}, both stages {both_r / both_s:.2f}")
    cmd = f".venv/bin/python bench/grid_stage_platform.py -p {Path(a.pretrained_path).name} --data-dir DIR --runs {a.runs}"
    what = (f"{ctx.data.name}, 56 points on valid and test, SAE n={ctx.meta['n_latents']}, 1 evaluator of {cpus} CPUs on a "
            f"local Ray, median of {a.runs} interleaved runs, every metric row identical (asserted): {line}")
    record("grid_stage_platform_over_single", round(med["ray_grid"] / med["single_grid"], 2),
           "x (platform grid stage on the actors the analysis started / single-process grid)", "<= 1.2, identical rows",
           med["ray_grid"] / med["single_grid"] <= 1.2, cmd, what)
    record("analysis_grid_platform_over_single", round(both_r / both_s, 2),
           "x (platform analysis + grid stages, actor start-up included / single process)", "report", None, cmd, what)


if __name__ == "__main__":
    main()
