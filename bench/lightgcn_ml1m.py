"""LightGCN on ML-1M with the real-user probe: RecBole's BPR trainer, the SAE on the users' propagated
embeddings, Cohen's d from the 10% most / least popular users, the 56-point grid on valid, its pick on test.

    .venv/bin/python bench/lightgcn_ml1m.py [--rec-budget-min 15] [--epochs 300] [--lr 0.01] [--sae-budget-min 3]

Ranking follows RecBole for a general model: each user's earlier items are never ranked.
Rows go to ``bench/lightgcn_ml1m.json`` and ``lightgcn_ml1m_test_ndcg`` in bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record  # noqa: E402
from shared_data import ml1m_data_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEEP = ("ndcg@10", "precision@10", "gini@10", "lt_coverage@10", "arp@10")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rec-budget-min", type=float, default=15.0)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--sae-budget-min", type=float, default=3.0)
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="popsteer-lightgcn-"))
    os.environ["POPSTEER_ALLOWED_ROOTS"] = str(work)
    os.environ.setdefault("POPSTEER_PROGRESS", "0")

    from popsteer.data import load_dataset
    from popsteer.models.config import TrainConfig
    from popsteer.sae.model import SAEConfig
    from popsteer.stages.analysis import analyze
    from popsteer.stages.config import AnalysisConfig, GridStageConfig, RecommenderConfig, SAERef, SAEStageConfig, Workspace
    from popsteer.stages.recommender import train_recommender
    from popsteer.stages.sae import train_sae
    from popsteer.stages.steer import tune_steering
    from popsteer.util.logs import setup_logging

    setup_logging(False)
    where = Workspace(data_dir=str(ml1m_data_dir(work / "data")), out_dir=str(work / "out"))
    rcfg = RecommenderConfig(dataset="ml-1m", model="lightgcn", where=where,
                             train=TrainConfig(epochs=a.epochs, learning_rate=a.lr, time_budget_min=a.rec_budget_min))
    rec = train_recommender(rcfg)
    data = load_dataset("ml-1m", where.data_dir, max_len=rcfg.architecture().max_len, cfg=rcfg.data)
    sae = train_sae(SAEStageConfig(base=rec.checkpoint, sae=SAEConfig(time_budget_min=a.sae_budget_min), where=where),
                    data=data)
    ref = SAERef(path=sae.checkpoint, dataset="ml-1m", where=where)
    analysis = analyze(AnalysisConfig(ref, probe="users"), data=data)
    tuned = tune_steering(GridStageConfig(ref), data=data)
    test = tuned.get("test") or {}
    row = {"train_minutes": round(rec.train_minutes, 2), "epochs": rec.epochs, "best_epoch": rec.best_epoch,
           "valid": {k: rec.best_valid.get(k) for k in KEEP}, "test": {k: rec.test_result.get(k) for k in KEEP},
           "sae": {"epochs": sae.epochs, "minutes": round(sae.train_minutes, 2), **{k: sae.report.get(k) for k in
                                                                                   ("fvu", "dead_fraction")}},
           "analysis": {k: analysis.summary[k] for k in ("n_neurons", "n_positive", "median_abs_d",
                                                         "profiles_per_group", "probe")},
           "pick": tuned.get("pick"),
           "popsteer_test": {k: test.get("popsteer_tuned", {}).get(k) for k in KEEP} if test else None,
           "sae_test": {k: test.get("sae", {}).get(k) for k in KEEP} if test else None}
    print(json.dumps(row, indent=2))
    (ROOT / "bench" / "lightgcn_ml1m.json").write_text(json.dumps(row, indent=2) + "\n")
    ps = row["popsteer_test"] or {}
    record("lightgcn_ml1m_test_ndcg", round(row["test"]["ndcg@10"], 4), "NDCG@10 (test, history masked)", "n/a", None,
           f".venv/bin/python bench/lightgcn_ml1m.py --rec-budget-min {a.rec_budget_min:g} --lr {a.lr:g}",
           f"LightGCN {rec.epochs} epochs ({row['train_minutes']:.1f} min), Gini@10 {row['test']['gini@10']:.4f}; "
           f"real-user probe: {row['analysis']['n_positive']} of {row['analysis']['n_neurons']} neurons d > 0; "
           f"PopSteer tuned on valid: test NDCG@10 {ps.get('ndcg@10') or float('nan'):.4f}, "
           f"Gini@10 {ps.get('gini@10') or float('nan'):.4f}")


if __name__ == "__main__":
    main()
