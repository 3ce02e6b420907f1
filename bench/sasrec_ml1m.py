"""SASRec on the shared ML-1M data: valid NDCG@10 reached within a 30-minute training budget.

    .venv/bin/python bench/sasrec_ml1m.py [--data-dir DIR] [--budget-min 30]

DIR must hold ml-1m/ml-1m.inter(.gz); by default a temp folder linking
../shared/datasets/ml-1m/ml-1m.5core.inter.gz is used.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record  # noqa: E402
from shared_data import ml1m_data_dir  # noqa: E402

from popsteer.models.config import TrainConfig  # noqa: E402
from popsteer.stages.config import RecommenderConfig, Workspace  # noqa: E402
from popsteer.stages.recommender import train_recommender  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--budget-min", type=float, default=30.0)
    ap.add_argument("--out-dir", default=str(ROOT / "saved"))
    ap.add_argument("--learning-rate", type=float, default=2e-3)
    ap.add_argument("--stride", type=int, default=25)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--lr-schedule", default="cosine")
    ap.add_argument("--warmup", type=float, default=0.02)
    ap.add_argument("--ema-decay", type=float, default=None)
    ap.add_argument("--windows-per-user", type=int, default=None)
    ap.add_argument("--eval-every", type=int, default=1)
    ap.add_argument("--stopping-step", type=int, default=10,
                    help="early-stop patience in scored epochs (a cosine schedule anneals to the budget: "
                         "a large value lets it finish)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="bf16: autocast matmuls to bfloat16 (1.3-1.5x faster per step on AVX512-BF16 CPUs)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    data_dir = a.data_dir or str(ml1m_data_dir())
    train = TrainConfig(epochs=200, learning_rate=a.learning_rate, batch_size=a.batch_size, stopping_step=a.stopping_step,
                        stride=a.stride, time_budget_min=a.budget_min, lr_schedule=a.lr_schedule, warmup=a.warmup,
                        precision=a.precision, ema_decay=a.ema_decay, windows_per_user=a.windows_per_user,
                        eval_every=a.eval_every)
    res = train_recommender(RecommenderConfig(dataset="ml-1m", train=train,
                                              where=Workspace(data_dir=data_dir, out_dir=a.out_dir))).summary()
    ndcg, minutes = res["best_valid"]["ndcg@10"], res["train_minutes"]
    always = ("learning_rate", "batch_size", "lr_schedule")  # the recorded commands always name these
    cmd = ".venv/bin/python bench/sasrec_ml1m.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in vars(a).items()
        if k not in ("data_dir", "out_dir") and (k in always or v != ap.get_default(k)))
    ema = f", EMA decay {a.ema_decay} (kept: {res['best_weights']} weights)" if a.ema_decay else ""
    note = (f"best epoch {res['best_epoch']}{ema}, test NDCG@10 {res['test_result']['ndcg@10']:.4f}; "
            f"{a.lr_schedule} lr {a.learning_rate} (warm-up {a.warmup:.0%}), batch {a.batch_size} targets, stride {a.stride}, "
            f"{res['epochs']} epochs" + (f" of <= {a.windows_per_user} random windows per user"
                                 if a.windows_per_user else "")
            + (f", valid every {a.eval_every}" if a.eval_every != 1 else "")
            + (f", {a.precision} matmuls" if a.precision != "fp32" else "")
            + (f", patience {a.stopping_step}" if a.stopping_step != 10 else "") + f"; checkpoint {Path(res['checkpoint']).name}")
    record("sasrec_ml1m_valid_ndcg10", round(ndcg, 4), "NDCG@10", ">= 0.112 within 30 min", ndcg >= 0.112 and minutes <= 30.5, cmd, note)
    record("sasrec_ml1m_train_minutes", round(minutes, 1), "min", "<= 30", minutes <= 30.5, cmd, note)


if __name__ == "__main__":
    main()
