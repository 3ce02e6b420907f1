"""Learning-rate schedule probe for all-position SASRec training: valid NDCG@10 per epoch.

    python bench/sasrec_probe.py --data-dir DIR [--device cuda] [--deadline-s 300] [--out probe.json]

Each named configuration trains in its own process (all at once), for as many epochs as
30 minutes of training give on the 2-core CPU machine, so a GPU can answer in minutes which
schedule to spend a 30-minute CPU run on. Every process stops at the deadline and keeps
the epochs it finished. Writes one JSON object {config: [{epoch, valid_ndcg@10, lr}, ...]}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name: (peak lr, schedule, precision, epochs, batch targets, window stride[, other TrainConfig
# fields]). Epochs: as many as 30 minutes of training give on the 2-core machine (anomaly mode
# off), measured there per step plus ~3 s of valid pass per epoch: stride 25 batch 2048 ~51 s
# (35 epochs), bf16 ~39 s (46), batch 1024 ~49 s (36), stride 50 ~42 s (43).
CONFIGS = {
    "const-2e-3": (2e-3, "constant", "fp32", 35, 2048, 25),
    "const-1e-3": (1e-3, "constant", "fp32", 35, 2048, 25),
    "cos-2e-3": (2e-3, "cosine", "fp32", 35, 2048, 25),
    "cos-4e-3": (4e-3, "cosine", "fp32", 35, 2048, 25),
    "cos-6e-3": (6e-3, "cosine", "fp32", 35, 2048, 25),
    "cos-1e-2": (1e-2, "cosine", "fp32", 35, 2048, 25),
    "cos-4e-3-bf16": (4e-3, "cosine", "bf16", 46, 2048, 25),
    "cos-6e-3-bf16": (6e-3, "cosine", "bf16", 46, 2048, 25),
    "cos-2e-3-b1024": (2e-3, "cosine", "fp32", 36, 1024, 25),
    "cos-2e-3-s50": (2e-3, "cosine", "fp32", 43, 2048, 50),
}
SCHEDULES = list(CONFIGS)  # the default set: which schedule to spend a 30-minute CPU run on
CONFIGS |= {
    # Does more compute lift the plateau? 70 full epochs (1.7x the 30-minute CPU budget), and
    # 140 epochs of at most 4 windows per user (~1.5x).
    "cos-2e-3-e41": (2e-3, "cosine", "fp32", 41, 2048, 25),
    "cos-2e-3-e70": (2e-3, "cosine", "fp32", 70, 2048, 25, {"eval_every": 2}),
    # bf16 is 1.45x faster per step on the 2-core CPU (AVX512-BF16): does it cost accuracy?
    "cos-2e-3-e41-bf16": (2e-3, "cosine", "bf16", 41, 2048, 25),
    "cos-2e-3-e60-bf16": (2e-3, "cosine", "bf16", 60, 2048, 25, {"eval_every": 2}),
    "cos-2e-3-e140-w4": (2e-3, "cosine", "fp32", 140, 2048, 25, {"eval_every": 4, "windows_per_user": 4}),
}


def run_one(name: str, dataset: str, data_dir: str | None, device: str, deadline: float, out: Path) -> None:
    import torch

    from popsteer.models.config import SASRecConfig, TrainConfig
    from popsteer.data import load_dataset
    from popsteer.models.recbole_adapter import build_sasrec
    from popsteer.models.allpos import train_allpos

    torch.set_num_threads(2)
    lr, schedule, precision, epochs, batch, stride, *extra = CONFIGS[name]
    data = load_dataset(dataset, data_dir)
    torch.manual_seed(2020)
    model = build_sasrec(data.n_items, SASRecConfig())
    rows: list[dict] = []

    def on_epoch(epoch: int, row: dict) -> None:
        rows.append({"epoch": epoch, "valid_ndcg@10": row.get("valid_ndcg@10"), "lr": row["lr"],
                     "train_loss": round(row["train_loss"], 5),
                     "seconds": round(row["train_seconds"], 2)})
        out.write_text(json.dumps(rows))
        if time.time() > deadline:
            raise TimeoutError

    cfg = TrainConfig(epochs=epochs, learning_rate=lr, batch_size=batch, stopping_step=epochs, stride=stride,
                      lr_schedule=schedule, precision=precision, device=device, **(extra[0] if extra else {}))
    try:
        train_allpos(model, data, cfg, on_epoch)
    except TimeoutError:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--configs", default=None, help="comma-separated names (default: the schedule set)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--deadline-s", type=float, default=300)
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "sasrec_probe.json"))
    ap.add_argument("--only", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.only:
        run_one(a.only, a.dataset, a.data_dir, a.device, a.deadline, Path(a.out))
        return
    deadline = time.time() + a.deadline_s
    work = Path(tempfile.mkdtemp(prefix="sasrec-probe-"))
    names = a.configs.split(",") if a.configs else SCHEDULES
    data_dir = ["--data-dir", a.data_dir] if a.data_dir else []
    procs = {name: subprocess.Popen([sys.executable, __file__, *data_dir, "--device", a.device,
                                     "--dataset", a.dataset,
                                     "--only", name, "--deadline", str(deadline), "--out", str(work / f"{name}.json")])
             for name in names}
    for p in procs.values():
        p.wait()
    res = {}
    for name in names:
        f = work / f"{name}.json"
        res[name] = {"config": CONFIGS[name], "epochs": json.loads(f.read_text()) if f.exists() else []}
        curve = [r["valid_ndcg@10"] for r in res[name]["epochs"] if r["valid_ndcg@10"] is not None]
        print(f"{name:16s} epochs {len(curve):3d}  best {max(curve, default=float('nan')):.4f}  last "
              f"{curve[-1] if curve else float('nan'):.4f}", flush=True)
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
