"""SASRec and GRU4Rec on the Amazon Beauty and Sports sequence files, then PopSteer on each.

    .venv/bin/python bench/amazon.py [--datasets beauty sports] [--models sasrec gru4rec]
        [--rec-budget-min 8] [--sae-budget-min 4] [--work DIR]

Each dataset is imported with ``popsteer data import --format seq`` (the user's path), then per
model: the recommender (all-position trainer, paper architecture, early stopping on valid
NDCG@10 within the time budget), the SAE (K=32, s=64, within its budget), the analysis, and the
56-point grid on valid with its pick on test. Rows go to ``bench/amazon.json`` and the
``amazon_<dataset>_<model>_test_ndcg`` records of bench/results.json.

Evaluation: RecBole's leave-one-out full ranking over every item (sequential models: the user's
history is not excluded), unlike ICLRec's numbers, which exclude history items.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
FILES = {"beauty": SHARED / "beauty" / "Beauty.txt.gz", "sports": SHARED / "sports" / "Sports_and_Outdoors.txt.gz"}
KEEP = ("ndcg@10", "precision@10", "gini@10", "lt_coverage@10", "arp@10")


def run_one(dataset: str, model: str, work: Path, rec_min: float, sae_min: float) -> dict:
    from popsteer.data import load_dataset
    from popsteer.models.config import TrainConfig
    from popsteer.sae.model import SAEConfig
    from popsteer.stages.analysis import analyze
    from popsteer.stages.config import AnalysisConfig, GridStageConfig, RecommenderConfig, SAERef, SAEStageConfig, Workspace
    from popsteer.stages.recommender import train_recommender
    from popsteer.stages.sae import train_sae
    from popsteer.stages.steer import tune_steering

    where = Workspace(data_dir=str(work / "data"), out_dir=str(work / "out" / model))
    rcfg = RecommenderConfig(dataset=dataset, model=model, train=TrainConfig(time_budget_min=rec_min), where=where)
    rec = train_recommender(rcfg)
    data = load_dataset(dataset, where.data_dir, max_len=rcfg.architecture().max_len, cfg=rcfg.data)
    sae = train_sae(SAEStageConfig(base=rec.checkpoint, sae=SAEConfig(time_budget_min=sae_min), where=where), data=data)
    ref = SAERef(path=sae.checkpoint, dataset=dataset, where=where)
    analyze(AnalysisConfig(ref), data=data)
    tuned = tune_steering(GridStageConfig(ref), data=data)
    test = tuned.get("test") or {}
    pick = tuned.get("pick") or {}
    return {
        "dataset": dataset, "model": model, "users": int(data.n_users), "items": int(data.n_items - 1),
        "train_minutes": round(rec.train_minutes, 2), "epochs": rec.epochs, "best_epoch": rec.best_epoch,
        "valid": {k: rec.best_valid.get(k) for k in KEEP}, "test": {k: rec.test_result.get(k) for k in KEEP},
        "sae_epochs": sae.epochs, "sae_minutes": round(sae.train_minutes, 2),
        "pick": {k: pick.get(k) for k in ("num_neurons", "alpha", "valid_gini_drop", "valid_ndcg_drop")} if pick else None,
        "popsteer_test": {k: test.get("popsteer_tuned", {}).get(k) for k in KEEP} if test else None,
        "sae_test": {k: test.get("sae", {}).get(k) for k in KEEP} if test else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(FILES))
    ap.add_argument("--models", nargs="+", default=["sasrec", "gru4rec"])
    ap.add_argument("--rec-budget-min", type=float, default=8.0)
    ap.add_argument("--sae-budget-min", type=float, default=4.0)
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="popsteer-amazon-"))
    os.environ["POPSTEER_ALLOWED_ROOTS"] = str(work)
    os.environ.setdefault("POPSTEER_PROGRESS", "0")
    out_json = ROOT / "bench" / "amazon.json"
    rows = json.loads(out_json.read_text()) if out_json.exists() else []
    for ds in a.datasets:
        if not FILES[ds].exists():
            print(f"skip {ds}: {FILES[ds]} is absent")
            continue
        subprocess.run([str(Path(sys.executable).parent / "popsteer"), "data", "import", "--format", "seq",
                        str(FILES[ds]), "--name", ds, "--data-dir", str(work / "data")], check=True)
        for model in a.models:
            row = run_one(ds, model, work, a.rec_budget_min, a.sae_budget_min)
            print(json.dumps(row))
            rows = [r for r in rows if (r["dataset"], r["model"]) != (ds, model)] + [row]
            out_json.write_text(json.dumps(rows, indent=2) + "\n")
            ps = row["popsteer_test"] or {}
            record(f"amazon_{ds}_{model}_test_ndcg", round(row["test"]["ndcg@10"], 4), "NDCG@10 (test)", "n/a",
                   None, f".venv/bin/python bench/amazon.py --datasets {ds} --models {model} "
                   f"--rec-budget-min {a.rec_budget_min:g} --sae-budget-min {a.sae_budget_min:g}",
                   f"valid NDCG@10 {row['valid']['ndcg@10']:.4f}, Gini@10 {row['test']['gini@10']:.4f}, "
                   f"{row['train_minutes']:.1f} min training; PopSteer tuned on valid: test NDCG@10 "
                   f"{ps.get('ndcg@10') or float('nan'):.4f}, Gini@10 {ps.get('gini@10') or float('nan'):.4f}")


if __name__ == "__main__":
    main()
