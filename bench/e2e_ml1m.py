"""End-to-end ML-1M pipeline wall time: one process vs the same stages on a local Ray.

    .venv/bin/python bench/e2e_ml1m.py [--data-dir DIR] [--sasrec-epochs 3] [--sae-epochs 5]

Single process: ``popsteer pipeline`` (SASRec -> SAE K=32 s=64 -> analysis -> steering at
N=4096 alpha=1.5 on test -> the 56-point grid on valid, the pick on test).
Local Ray: ``python -m popsteer.sweep`` with sweeps/steer_grid.yaml and the same epochs
(SASRec as a Ray task, prefixes encoded by a Ray Data actor pool, the SAE as a Tune trial,
analysis, the 56-point grid on valid and test by evaluator actors, every run in MLflow).
Both start from nothing (no cached checkpoint) and run one after the other, same machine.
Epochs are capped so that the comparison fits a session; the stages' fixed costs (data
loading, encoding, analysis, grid, Ray start-up, tracking) are then a large share, which is
what the comparison is about.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record  # noqa: E402
from shared_data import ml1m_data_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--sasrec-epochs", type=int, default=3)
    ap.add_argument("--sae-epochs", type=int, default=5)
    ap.add_argument("--work", default=None, help="keep both runs' outputs here (default: a new temporary folder)")
    a = ap.parse_args()
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="popsteer-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    data_dir = a.data_dir or str(ml1m_data_dir(work / "data"))
    env = {**os.environ, "POPSTEER_ALLOWED_ROOTS": str(work), "POPSTEER_PROGRESS": "0",
           "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    env.pop("RAY_ADDRESS", None)
    py = sys.executable
    single = timed([str(Path(py).parent / "popsteer"), "pipeline", "--dataset", "ml-1m", "--data-dir", data_dir,
                    "--out-dir", str(work / "single"), "--epochs", str(a.sasrec_epochs),
                    "--sae-epochs", str(a.sae_epochs)], env)
    sets = [f"data_dir={data_dir}", f"storage={work / 'ray'}", f"train_recommender.epochs={a.sasrec_epochs}",
            f"search.sae.max_epochs={a.sae_epochs}", f"search.sae.min_epochs={a.sae_epochs}",
            f"search.sae.patience={a.sae_epochs}", "stages.steering.evaluators=2", "stages.steering.cpus_per_evaluator=1"]
    ray = timed([py, "-m", "popsteer.sweep", "sweeps/steer_grid.yaml", *[x for s in sets for x in ("--set", s)]], env)
    print(f"ML-1M end to end ({a.sasrec_epochs} SASRec epochs, {a.sae_epochs} SAE epochs): single process "
          f"{single:.0f} s, local Ray {ray:.0f} s, ratio {single / ray:.2f}")
    cmd = f".venv/bin/python bench/e2e_ml1m.py --sasrec-epochs {a.sasrec_epochs} --sae-epochs {a.sae_epochs}"
    record("e2e_ml1m_single_over_ray", round(single / ray, 2), "x (single-process time / local-Ray time)",
           ">= 0.87 (local Ray at most 1.15x)", single / ray >= 0.87, cmd,
           f"single process (popsteer pipeline) {single:.0f} s vs local Ray (sweeps/steer_grid.yaml, 2 evaluator "
           f"actors) {ray:.0f} s; {a.sasrec_epochs} SASRec + {a.sae_epochs} SAE epochs, analysis, 56-point grid")


if __name__ == "__main__":
    main()
