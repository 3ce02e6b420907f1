"""BERT4Rec's time per epoch under RecBole's own (masked-item) trainer, paper-size architecture, ml-100k.

    .venv/bin/python bench/bert4rec_epoch.py [--epochs 2]

BERT4Rec is bidirectional, so the all-position trainer does not apply (its output at a position
sees later items); PopSteer trains it with RecBole's trainer and reports the time per epoch here,
with the valid NDCG@10 after each epoch from PopSteer's evaluator (equal to RecBole's, tests).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record  # noqa: E402

from popsteer.data import load_dataset  # noqa: E402
from popsteer.models.config import TrainConfig  # noqa: E402
from popsteer.models.recbole_trainer import train_recbole  # noqa: E402
from popsteer.models.registry import BERT4RecConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args()
    hp = BERT4RecConfig()
    data = load_dataset("ml-100k", None, max_len=hp.max_len)
    t0 = time.perf_counter()
    _, history = train_recbole(data, hp, TrainConfig(epochs=a.epochs, learning_rate=1e-3), "bert4rec")
    per_epoch = [round(r["train_seconds"], 1) for r in history]
    print(f"BERT4Rec (RecBole's trainer), ml-100k: {per_epoch} s per epoch; valid NDCG@10 "
          f"{[round(r['valid_ndcg@10'], 4) for r in history]}; total {time.perf_counter() - t0:.0f} s")
    record("bert4rec_recbole_epoch_seconds", min(per_epoch), "s per epoch (ml-100k, RecBole's trainer)", "report",
           None, f".venv/bin/python bench/bert4rec_epoch.py --epochs {a.epochs}",
           f"paper-size BERT4Rec (2 layers, d=64, max_len 50, mask ratio 0.2); epochs {per_epoch} s; valid "
           f"NDCG@10 after the last {history[-1]['valid_ndcg@10']:.4f}")


if __name__ == "__main__":
    main()
