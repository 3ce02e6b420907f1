"""The report's markdown: one section per (dataset, base recommender), and the closing note."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from popsteer.eval.tradeoff import dominated_share, trade_score, tradeoff
from popsteer.report.fidelity import REFERENCE_D
from popsteer.report.markdown import fmt, md, md_table
from popsteer.report.render_steering import learned_lines, oracle_lines, serving_table
from popsteer.report.render_eval import (bias_table, hv_note, hv_table, intervals_table, significance_table,
                                         two_strength_table, variants_lines, verdict_lines)


COLUMNS = (("ndcg@10", "NDCG@10"), ("precision@10", "P@10"), ("lt_coverage@10", "LT-cov@10"),
           ("gini@10", "Gini@10"), ("arp@10", "ARP@10"), ("ndcg_head@10", "NDCG head"),
           ("ndcg_mid@10", "NDCG mid"), ("ndcg_tail@10", "NDCG tail"))
METRIC_KEYS = tuple(k for k, _ in COLUMNS)


def closing_lines(res: dict) -> list[str]:
    """One bullet per baseline: PopSteer (tuned) against it on test, by pick and by grid."""
    base = res["base_test"]["sasrec"]
    ps = res["methods"]["popsteer"]
    g_ps, n_ps = tradeoff(ps["test"], base)
    lines = []
    for name, m in res["methods"].items():
        if name == "popsteer":
            continue
        g_b, n_b = tradeoff(m["test"], base)
        verdict = "beats" if g_ps - n_ps > g_b - n_b else "does not beat"
        lines.append(
            f"- vs **{md(m['label'])}** ({m['describe']}): PopSteer {verdict} it on the trade-off score "
            f"(relative Gini drop − relative NDCG drop against SASRec, test): {100 * (g_ps - n_ps):+.1f} vs "
            f"{100 * (g_b - n_b):+.1f} points, margin {100 * ((g_ps - n_ps) - (g_b - n_b)):+.1f} (Gini@10 "
            f"{ps['test']['gini@10']:.4f} vs "
            f"{m['test']['gini@10']:.4f}, NDCG@10 {ps['test']['ndcg@10']:.4f} vs {m['test']['ndcg@10']:.4f}). "
            f"Over the grids on test, {100 * dominated_share(m['test_rows'], ps['test_rows']):.0f}% of its points "
            f"are dominated by a PopSteer point and {100 * dominated_share(ps['test_rows'], m['test_rows']):.0f}% "
            f"of PopSteer's by one of its points.")
    return lines


def beaten_baselines(res: dict) -> tuple[list[str], list[str], list[str]]:
    """Labels of the other methods PopSteer (tuned) beats / does not beat / ties (the same score: the
    same pick) on the test trade-off score."""
    base = res["base_test"]["sasrec"]
    score = {name: trade_score(m["test"], base) for name, m in res["methods"].items()}
    others = [m for name, m in res["methods"].items() if name != "popsteer"]
    won = [m["label"] for m in others if score["popsteer"] > score[m["name"]]]
    tied = [m["label"] for m in others if score["popsteer"] == score[m["name"]]]
    return won, [m["label"] for m in others if m["label"] not in won + tied], tied


def closing_note(results: list[dict]) -> list[str]:
    out = ["## Closing note", "",
           "Trade-off score: relative Gini@10 drop minus relative NDCG@10 drop against SASRec on test, for each "
           "method's validation pick (the per-dataset summaries give the margins and the grid dominance).", ""]
    for res in results:
        won, lost, tied = beaten_baselines(res)
        line = f"- **{res['title']}**: PopSteer (tuned) beats {len(won)} of {len(won) + len(lost) + len(tied)} other methods"
        line += f" ({', '.join(map(md, won))})" if won else ""
        line += f"; it does not beat {', '.join(map(md, lost))}" if lost else ""
        line += f"; it ties {', '.join(map(md, tied))} (the same pick)." if tied else "."
        out.append(line)
        out += [f"  - {v}." for v in verdict_lines(res)]
    return out + [""]


def method_label(m: dict) -> str:
    """A tuned method's name in the tables: PopSteer's forms carry "(tuned)" in their label already."""
    return m["label"] if m["name"].startswith("popsteer") else f"{m['label']} (tuned)"


def main_rows(res: dict) -> list[tuple[str, str, dict, str]]:
    """(method, setting, test metrics, validation pick note) per table row."""
    ref = res["base_valid"]["sasrec"]
    d = res["defaults"]
    model = res.get("model", "SASRec")
    rows = [(model, "—", res["base_test"]["sasrec"], "—"),
            (f"{model} + SAE (unsteered)", "reconstruction", res["base_test"]["sae"], "—"),
            ("PopSteer (defaults)", f"N={d['num_neurons']}, α={d['alpha']:g}", res["default_test"], "—")]
    for m in res["methods"].values():
        g, n = tradeoff(m["valid_rows"][m["pick"]], ref)
        note = f"{100 * g:+.1f}% / {100 * n:+.1f}%" + ("" if m["within_limit"] else " †")
        label = method_label(m)
        rows.append((label, m["describe"], m["test"], note))
    return rows


def sweep_table(res: dict, fixed: str, value: float, vary: str) -> str:
    m = res["methods"]["popsteer"]
    rows = []
    for p, rv, rt in zip(m["grid"], m["valid_rows"], m["test_rows"]):
        if p[fixed] == value:
            rows.append([fmt(p[vary]) if vary == "num_neurons" else f"{p[vary]:g}",
                         *(fmt(rt[k], k) for k in ("ndcg@10", "gini@10", "lt_coverage@10", "arp@10")),
                         fmt(rv["ndcg@10"]), fmt(rv["gini@10"])])
    name = "N" if vary == "num_neurons" else "α"
    return md_table([name, "test NDCG@10", "test Gini@10", "test LT-cov@10", "test ARP@10", "valid NDCG@10",
                     "valid Gini@10"], rows)


def sae_line(meta: dict) -> str:
    """``SAE: N epochs, FVU F, dead D%`` and why training stopped, from an SAE checkpoint's header."""
    history, cfg, report = meta.get("history") or [], meta["sae"], meta.get("report", {})
    n = len(history)
    if n >= cfg["max_epochs"]:
        why = f"all {cfg['max_epochs']} epochs"
    elif cfg.get("time_budget_min") and meta.get("train_minutes", 0) >= 0.97 * cfg["time_budget_min"]:
        why = f"stopped by its {cfg['time_budget_min']:g}-minute time budget"
    else:
        why = f"early stop (patience {cfg['patience']}, never before epoch {cfg.get('min_epochs') or 50})"
    if history:
        best = min(history, key=lambda r: r["valid_loss"])["epoch"]
        why += f", best epoch {best}"
    return (f"SAE: {n} epochs, FVU {report.get('fvu', float('nan')):.4f}, dead "
            f"{100 * report.get('dead_fraction', float('nan')):.1f}% ({why}; valid split)")


def render_dataset(res: dict, figure: Path, grids_csv: Path) -> str:
    meta, d = res["meta"], res["defaults"]
    pick = res["methods"]["popsteer"]["params"]
    out = [f"## {res['title']}", "", f"**{sae_line(meta)}**", "",
           f"SAE `{Path(res['checkpoint']).name}` (K={meta['sae']['k']}, scale {meta['sae']['scale']}, "
           f"{res['n_latents']} neurons) on {res.get('model', 'SASRec')} `{Path(meta['base_checkpoint']).name}`. "
           f"Test split; every tuned method picked on validation by the rule of docs/METHOD.md §4 "
           f"(max relative Gini drop − relative NDCG drop with NDCG drop ≤ 5% against {res.get('model', 'SASRec')}).",
           "",
           "### Test results", ""]
    header = ["method", "setting", *(name for _, name in COLUMNS), "valid Gini↓ / NDCG↓"]
    out.append(md_table(header, [[md(label), setting, *(fmt(metrics[k], k) for k in METRIC_KEYS), note]
                                 for label, setting, metrics, note in main_rows(res)]))
    stats = res["stats"]
    caption, strengths = two_strength_table(res)
    out += ["", "“valid Gini↓ / NDCG↓”: relative drops of the picked point against SASRec on validation. "
            "† no grid point kept the NDCG drop within 5%: the point with the smallest drop is shown.", "",
            "### Popularity-bias metrics", "", bias_table(main_rows(res)), "",
            "APLT / ACLT: share / count of long-tail items per list; PopREO / PopRSP: relative spread of the head's and "
            "the rest's hit (equal opportunity) and recommendation (statistical parity) rates, lower is fairer; "
            "entropy of exposure and novelty in bits (docs/METHOD.md §5).", "",
            "### Significance", "",
            f"Paired per-user tests on test, Holm-Bonferroni corrected across the methods compared; ✓ significant at "
            f"0.05 after correction. Intervals: {stats['resamples']} bootstrap resamples of the users (seed "
            f"{stats['seed']}), the same for every method, so differences are paired.", "",
            f"Against {md(res.get('model', 'SASRec'))}:", "",
            significance_table(stats["vs_sasrec"], stats["labels"], stats["gini_vs_sasrec"]), "",
            "Against PopSteer (tuned):", "",
            significance_table(stats["vs_popsteer"], stats["labels"], stats["gini_vs_popsteer"]), "",
            "95% bootstrap intervals (Gini, coverage and entropy re-centred by their bootstrap bias, docs/METHOD.md §5):",
            "", intervals_table(stats), "",
            "### Hypervolume", "", hv_note(res), "", hv_table(res), "",
            "### Error-preserving steering", "", *[line + "\n" for line in variants_lines(res)],
            "### Separate strengths (α_pop × α_unpop)", "", caption, "", strengths, "",
            "### Learned steering", "", *learned_lines(res),
            "### Serving setting (top-m candidates)", "", *serving_table(res),
            "### Oracle bound of query shifts", "", *oracle_lines(res),
            "### Accuracy-fairness trade-off", "",
            f"![NDCG@10 vs Gini@10 on {res['title']}]({figure.name})", "",
            "Each method's grid (faint points), its Pareto front (line) and its validation pick (ringed); the star "
            f"is SASRec, the diamond PopSteer at the defaults. Every grid point: `{grids_csv.name}`.", "",
            "### PopSteer sweeps", "",
            f"α sweep at N={d['num_neurons']} (the default N):", "", sweep_table(res, "num_neurons", d["num_neurons"], "alpha"),
            "", f"N sweep at α={d['alpha']:g} (the default α):", "", sweep_table(res, "alpha", d["alpha"], "num_neurons")]
    if pick["num_neurons"] != d["num_neurons"]:
        out += ["", f"α sweep at the tuned N={pick['num_neurons']}:", "",
                sweep_table(res, "num_neurons", pick["num_neurons"], "alpha")]
    dd = res["d"]
    out += ["", "### Popularity neurons", "",
            f"{(dd > 0).sum()} of {len(dd)} neurons have d > 0 (fire more for popular-only profiles), "
            f"{(dd < 0).sum()} d < 0; median |d| {np.median(np.abs(dd)):.3f}. The 10 largest |d|, with the items "
            "whose one-item profile activates each most (H/M/T: head/mid/tail):", "",
            md_table(["#", "neuron", "d", "direction", "top items", "concept label (q < 0.05)"],
                     [[str(r["rank"]), str(r["neuron"]), f"{r['d']:+.3f}", r["direction"], r["top items"],
                       r.get("label") or "—"] for r in res["neurons"].to_dict("records")]),
            "", "Concept labels: the item tags enriched among a neuron's top items (hypergeometric test, "
            "Benjamini-Hochberg; `popsteer browse`, docs/METHOD.md §10); — where none is significant or the "
            "labels were not computed.", ""]
    out += render_fidelity(res["fidelity"])
    out += ["", "### Summary", "", *closing_lines(res), ""]
    return "\n".join(out)


def render_fidelity(f: dict) -> list[str]:
    out = ["### Fidelity to the authors' artifacts", ""]
    if f["summary"] is None:
        out.append(f"No authors' `{REFERENCE_D}` for this dataset: Cohen's d not compared.")
    else:
        s = f["summary"]
        out += [f"Cohen's d of this SAE against the authors' (`{f['reference_path']}` in the shared datasets folder). "
                "The two SAEs are trained "
                "separately and their neuron ids do not correspond, so distributions are compared, not neurons.", "",
                md_table(["", *s.columns], [[idx, *(str(int(v)) if idx == "neurons" else fmt(v) for v in row)]
                                            for idx, row in s.iterrows()]), "",
                md_table(["agreement", "value"], [[k, f"{v:.4f}"] for k, v in f["agreement"].items()])]
    if f["valid"] is not None:
        v = f["valid"]
        out += ["", "Unsteered SASRec on validation against the figures the authors recorded (docs/METHOD.md §5):", "",
                md_table(["metric", *v.columns, "ours − authors'"],
                         [[idx, fmt(row.iloc[0]), fmt(row.iloc[1]), f"{row.iloc[0] - row.iloc[1]:+.4f}"]
                          for idx, row in v.iterrows()])]
    return out


def grid_frame(res: dict) -> pd.DataFrame:
    """Every evaluated grid point of every method, both splits, one row each (SASRec's first)."""
    frames = [pd.DataFrame([{"method": "sasrec", "split": split, **res[f"base_{split}"]["sasrec"], "picked": True}
                            for split in ("valid", "test")])]
    for m in res["methods"].values():
        for split in ("valid", "test"):
            frame = pd.DataFrame(m[f"{split}_rows"])
            frame.insert(0, "split", split)
            frame.insert(0, "method", m["name"])
            frame["picked"] = np.arange(len(frame)) == m["pick"]
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)
