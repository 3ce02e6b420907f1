"""Each re-ranker's sweep against the authors' recorded sweep on ML-1M (parepic/PopSteer2.0 ``final_results/``).

    .venv/bin/python bench/baseline_sweeps.py -p SASRec-authors-ml-1m.safetensors --data-dir DIR

The authors' own SASRec, imported into our split, is re-ranked on test at the parameter
points the authors recorded (IPR ``a``, random ``m``; FA*IR and PCT are parameterised
differently there, so their strongest recorded Gini drop is compared with the strongest of
our grid). The authors' figures are their split's (SASRec test NDCG@10 0.1213, Gini@10 0.742),
so relative drops are compared. IPR runs in both of our forms: the reference's raw-score
weight (the registered one) and the earlier softmax-space weight. Rows go to
``bench/baseline_sweeps.json``; ``ipr_gini_drop_at_a1_over_authors`` to bench/results.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record  # noqa: E402

from popsteer.report import authors_ml1m  # noqa: E402

HERE = Path(__file__).resolve().parent
def _by_value(name: str) -> dict:
    """{parameter value: (Gini@10, NDCG@10)} of one of the authors' recorded sweeps ("a=0.1" -> 0.1, "m=15" -> 15)."""
    def value(setting: str):
        v = setting.split("=", 1)[1]
        return int(v) if v.isdigit() else float(v)

    return {value(s): (g, n) for s, n, g in authors_ml1m.GRIDS[name]}


# The authors' recorded test Gini@10 / NDCG@10 on ML-1M (their split): popsteer.report.authors_ml1m.
AUTHORS = {"base": (authors_ml1m.SASREC["gini@10"], authors_ml1m.SASREC["ndcg@10"]), "ipr": _by_value("ipr"),
           "random": _by_value("random"),
           **{name: {"strongest": min(((g, n) for _, n, g in authors_ml1m.GRIDS[name]), key=lambda t: (t[0], -t[1]))}
              for name in ("fair", "pct")}}  # the lowest Gini (the more accurate on a tie)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-p", "--path", required=True)
    ap.add_argument("--data-dir", required=True)
    a = ap.parse_args()
    os.environ.setdefault("POPSTEER_PROGRESS", "0")
    os.environ.setdefault("POPSTEER_ALLOWED_ROOTS", str(Path(a.path).resolve().parent.parent.parent))

    from popsteer.baselines import BASELINES
    from popsteer.baselines.ipr import ipr_rerank
    from popsteer.baselines.tuning import rerank_split
    from popsteer.stages.baselines import scored_splits
    from popsteer.stages.config import Workspace
    from popsteer.stages.context import load_base

    base = load_base(a.path, Workspace(data_dir=a.data_dir))
    test = scored_splits(base, splits=("test",))["test"]
    ev = test.evaluator
    own = ev.metrics_of_topk(ev.topk(test.x, test.item_emb))
    g0, n0 = own["gini@10"], own["ndcg@10"]
    ag0, an0 = AUTHORS["base"]
    rows = []

    def add(method: str, params: dict, topk, authors: tuple[float, float] | None) -> None:
        m = ev.metrics_of_topk(topk)
        row = {"method": method, **params, "gini@10": m["gini@10"], "ndcg@10": m["ndcg@10"],
               "gini_drop": (g0 - m["gini@10"]) / g0, "ndcg_drop": (n0 - m["ndcg@10"]) / n0}
        if authors is not None:
            row.update(authors_gini_drop=(ag0 - authors[0]) / ag0, authors_ndcg_drop=(an0 - authors[1]) / an0)
        rows.append(row)
        print(json.dumps(row))

    for space in ("raw", "softmax"):
        ipr = dataclasses.replace(BASELINES["ipr"], rerank=functools.partial(ipr_rerank, space=space))
        for value, ref in AUTHORS["ipr"].items():
            add(f"ipr-{space}", {"a": value}, rerank_split(ipr, {"a": value}, test), ref)
    for value, ref in AUTHORS["random"].items():
        add("random", {"m": value}, rerank_split(BASELINES["random"], {"m": value}, test), ref)
    for name in ("fair", "pct"):
        for params in BASELINES[name].grid:
            add(name, dict(params), rerank_split(BASELINES[name], params, test), None)
    out = {"checkpoint": str(a.path), "base": own, "rows": rows}
    (HERE / "baseline_sweeps.json").write_text(json.dumps(out, indent=2, default=float) + "\n")

    def drop(method, key, value):
        return next(r for r in rows if r["method"] == method and r[key] == value)

    raw, soft = drop("ipr-raw", "a", 1.0), drop("ipr-softmax", "a", 1.0)
    ratio = raw["gini_drop"] / raw["authors_gini_drop"]
    cmd = f".venv/bin/python bench/baseline_sweeps.py -p {Path(a.path).name} --data-dir DIR"
    record("ipr_gini_drop_at_a1_over_authors", round(ratio, 3), "x (our relative Gini@10 drop / the authors' recorded)",
           ">= 1 (moves Gini at least as far as the authors' sweep)", ratio >= 1, cmd,
           f"authors' SASRec imported into our split, test: raw-score IPR a=1 Gini {g0:.4f} -> {raw['gini@10']:.4f} "
           f"({100 * raw['gini_drop']:.1f}%, NDCG {100 * raw['ndcg_drop']:.1f}% down); softmax-space form "
           f"{100 * soft['gini_drop']:.1f}%; authors recorded {100 * raw['authors_gini_drop']:.1f}% (NDCG "
           f"{100 * raw['authors_ndcg_drop']:.1f}% down)")
    strongest = {m: max(r["gini_drop"] for r in rows if r["method"] == m) for m in ("random", "fair", "pct")}
    authors = {"random": (ag0 - AUTHORS["random"][100][0]) / ag0, "fair": (ag0 - AUTHORS["fair"]["strongest"][0]) / ag0,
               "pct": (ag0 - AUTHORS["pct"]["strongest"][0]) / ag0}
    for m in strongest:
        print(f"{m}: strongest Gini drop ours {100 * strongest[m]:.1f}% vs authors' {100 * authors[m]:.1f}%")
    worst = min(strongest[m] / authors[m] for m in strongest)
    record("baseline_sweeps_gini_drop_over_authors_min", round(worst, 3),
           "x (min over random, FA*IR, PCT of our strongest relative Gini@10 drop / the authors' strongest)",
           ">= 1", worst >= 1, cmd, "; ".join(f"{m} {100 * strongest[m]:.1f}% vs {100 * authors[m]:.1f}%"
                                              for m in strongest))


if __name__ == "__main__":
    main()
