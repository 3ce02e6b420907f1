"""The report's evaluation tables: the field's bias metrics, significance, intervals, hypervolume,
the error-preserving variant and the two-strength grid (one section's ``res``)."""

from __future__ import annotations

from popsteer.report.markdown import fmt, md, md_table

BIAS_COLUMNS = (("aplt@10", "APLT@10"), ("aclt@10", "ACLT@10"), ("pop_reo@10", "PopREO@10"),
                ("pop_rsp@10", "PopRSP@10"), ("entropy@10", "Entropy@10 (bits)"), ("item_coverage@10", "ItemCov@10"),
                ("novelty@10", "Novelty@10 (bits)"))
INTERVAL_KEYS = (("ndcg@10", "NDCG@10"), ("precision@10", "P@10"), ("gini@10", "Gini@10"),
                 ("lt_coverage@10", "LT-cov@10"), ("aplt@10", "APLT@10"), ("arp@10", "ARP@10"),
                 ("entropy@10", "Entropy@10"))
LIST_LEVEL = ("gini@10", "lt_coverage@10", "item_coverage@10", "entropy@10")
"""Metrics of the whole set of lists: their percentile intervals are re-centred by the bootstrap bias."""
UNIT = ("gini@10", "lt_coverage@10", "item_coverage@10")
"""Metrics within [0, 1]: a re-centred interval is clipped to it."""
STOPS = {"ndcg": "NDCG@10 fell by 50%", "bound": "parameter bound", "max_points": "32 extra points", "span": "span"}


def bias_table(rows: list[tuple[str, str, dict, str]]) -> str:
    """rows: ``render.main_rows``'s (method, setting, test metrics, note)."""
    return md_table(["method", "setting", *(name for _, name in BIAS_COLUMNS)],
                    [[md(label), setting, *(fmt(m.get(k), k) for k, _ in BIAS_COLUMNS)] for label, setting, m, _ in rows])


def interval(iv: dict, key: str) -> tuple[float, float]:
    """The 95% interval of one metric; list-level metrics re-centred by their bootstrap bias."""
    shift = iv["bias"] if key in LIST_LEVEL else 0.0
    lo, hi = iv["low"] - shift, iv["high"] - shift
    return (max(lo, 0.0), min(hi, 1.0)) if key in UNIT else (lo, hi)


def intervals_table(stats: dict) -> str:
    out = []
    for name, ivs in stats["intervals"].items():
        cells = []
        for key, _ in INTERVAL_KEYS:
            if key not in ivs:
                cells.append("—")
                continue
            lo, hi = interval(ivs[key], key)
            cells.append(f"{fmt(ivs[key]['estimate'], key)} [{fmt(lo, key)}, {fmt(hi, key)}]")
        out.append([md(stats["labels"][name]), *cells])
    return md_table(["method", *(name for _, name in INTERVAL_KEYS)], out)


def _p(row: dict) -> str:
    mark = " ✓" if row["significant"] else ""
    return f"{row['p_holm']:.3g}{mark}"


def significance_table(rows: list[dict], labels: dict[str, str], gini: dict | None = None) -> str:
    """One line per method: the paired difference on NDCG@10 and P@10 (bootstrap interval), Holm-corrected
    p of the t-test and of Wilcoxon's signed-rank test (✓: significant at 0.05 after correction), and
    the paired bootstrap interval of the Gini@10 difference (✓: it excludes 0)."""
    by = {}
    for r in rows:
        by.setdefault(r["method"], {})[(r["metric"], r["test"])] = r
    out = []
    for name, cell in by.items():
        line = [md(labels.get(name, name))]
        for metric in ("ndcg@10", "precision@10"):
            t, w = cell[(metric, "t")], cell[(metric, "wilcoxon")]
            ci = f" [{t['diff_low']:+.4f}, {t['diff_high']:+.4f}]" if "diff_low" in t else ""
            line += [f"{t['mean_diff']:+.4f}{ci}", _p(t), _p(w)]
        if gini is not None:
            g = gini[name]
            line.append(f"{g['estimate']:+.4f} [{g['low']:+.4f}, {g['high']:+.4f}]" +
                        (" ✓" if g["low"] > 0 or g["high"] < 0 else ""))
        out.append(line)
    return md_table(["method", "ΔNDCG@10 [95% CI]", "t-test p (Holm)", "Wilcoxon p (Holm)", "ΔP@10 [95% CI]",
                     "t-test p (Holm)", "Wilcoxon p (Holm)", *(["ΔGini@10 [95% CI]"] if gini is not None else [])], out)


def hv_table(res: dict) -> str:
    hv = res["hv"]
    rows = []
    for name, m in res["methods"].items():
        spans = m.get("spans")
        note = "—" if spans is None else ("yes" if spans else f"no (stopped: {STOPS.get(m.get('stop'), m.get('stop'))})")
        rows.append([md(m["label"]), f"{1000 * hv['methods'][name]['valid']:.3f}",
                     f"{1000 * hv['methods'][name]['test']:.3f}", str(len(m["grid"])), note])
    return md_table(["method", "HV valid (×10³)", "HV test (×10³)", "grid points", "spans PopSteer's Gini range"], rows)


def hv_note(res: dict) -> str:
    ref = res["hv"]["reference"]
    return ("Hypervolume: the area of the (NDCG@10, 1 − Gini@10) plane dominated by a method's grid points, against "
            "one reference point per split shared by every method: half of SASRec's NDCG@10 and SASRec's own "
            f"1 − Gini@10 (valid ({ref['valid']['ndcg@10']:.4f}, {ref['valid']['1-gini@10']:.4f}), test "
            f"({ref['test']['ndcg@10']:.4f}, {ref['test']['1-gini@10']:.4f})). Only points fairer than SASRec that keep "
            "at least half its accuracy add area; higher is better.")


def variants_lines(res: dict) -> list[str]:
    """The error-preserving variant beside the paper's replacement: picks, hypervolume, significance."""
    m = res["methods"]
    if "popsteer_preserve" not in m:
        return []
    rep, pre = m["popsteer"], m["popsteer_preserve"]
    hv = res["hv"]["methods"]
    sig = {(r["metric"], r["test"]): r for r in res["stats"]["vs_popsteer"] if r["method"] == "popsteer_preserve"}
    t = sig.get(("ndcg@10", "t"))
    better = [s for s in ("valid", "test") if hv["popsteer_preserve"][s] > hv["popsteer"][s]]
    verdict = ("higher on both splits" if len(better) == 2 else "lower on both splits" if not better
               else f"higher on {better[0]} only")
    out = [f"Replacement (the paper): {rep['describe']}, test NDCG@10 {rep['test']['ndcg@10']:.4f}, Gini@10 "
           f"{rep['test']['gini@10']:.4f}. Error-preserving: {pre['describe']}, test NDCG@10 "
           f"{pre['test']['ndcg@10']:.4f}, Gini@10 {pre['test']['gini@10']:.4f}. The unsteered SAE costs "
           f"{100 * (1 - res['base_test']['sae']['ndcg@10'] / res['base_test']['sasrec']['ndcg@10']):.1f}% of test "
           "NDCG@10 under replacement and nothing under preservation (alpha = 0 is SASRec exactly).",
           f"Hypervolume of the error-preserving grid against the replacement grid: "
           f"{1000 * hv['popsteer_preserve']['valid']:.3f} vs {1000 * hv['popsteer']['valid']:.3f} (valid), "
           f"{1000 * hv['popsteer_preserve']['test']:.3f} vs {1000 * hv['popsteer']['test']:.3f} (test): {verdict}."]
    if t is not None:
        out.append(f"Per-user test NDCG@10 of the two picks differs by {t['mean_diff']:+.4f} (paired t-test p = "
                   f"{t['p_holm']:.3g} after Holm: {'significant' if t['significant'] else 'not significant'}).")
    return out


def two_strength_table(res: dict) -> tuple[str, str]:
    """(caption, table): test NDCG@10 / Gini@10 over alpha_pop x alpha_unpop at the two-strength pick's N."""
    m = res["methods"].get("popsteer_2d")
    if m is None:
        return "", ""
    n = m["params"]["num_neurons"]
    cells = {(p["alpha"], p["alpha_unpop"]): r for p, r in zip(m["grid"], m["test_rows"]) if p["num_neurons"] == n}
    pops = sorted({a for a, _ in cells})
    unpops = sorted({b for _, b in cells})
    rows = [[f"α_pop={a:g}", *(f"{cells[(a, b)]['ndcg@10']:.4f} / {cells[(a, b)]['gini@10']:.4f}" for b in unpops)]
            for a in pops]
    caption = (f"Test NDCG@10 / Gini@10 at N={n} (the validation pick's N) over α_pop (rows, suppressing popular "
               f"neurons) × α_unpop (columns, boosting unpopular ones); the diagonal is the single-α method. "
               f"Pick: {m['describe']}.")
    return caption, md_table(["", *(f"α_unpop={b:g}" for b in unpops)], rows)


def hv_ranking(res: dict, split: str) -> list[tuple[str, float]]:
    """(label, hypervolume) of every method on a split, best first."""
    hv = res["hv"]["methods"]
    return sorted(((m["label"], hv[name][split]) for name, m in res["methods"].items()), key=lambda t: -t[1])


def verdict_lines(res: dict) -> list[str]:
    """The closing note's lines of one section: the hypervolume winner on each split, and where
    PopSteer's (tuned) pick differs significantly from each baseline's (NDCG@10 t-test after Holm;
    Gini@10 paired interval)."""
    out = []
    for split in ("valid", "test"):
        ranking = hv_ranking(res, split)
        rank = next(i for i, (label, _) in enumerate(ranking) if label == res["methods"]["popsteer"]["label"]) + 1
        out.append(f"hypervolume on {split}: {md(ranking[0][0])} wins ({1000 * ranking[0][1]:.3f}×10⁻³); "
                   f"PopSteer (tuned) ranks {rank} of {len(ranking)} ({1000 * dict(ranking)[res['methods']['popsteer']['label']]:.3f})")
    stats = res["stats"]
    sig = {r["method"]: r for r in stats["vs_popsteer"] if r["metric"] == "ndcg@10" and r["test"] == "t"}
    parts = []
    for name, m in res["methods"].items():
        if name.startswith("popsteer") or name not in sig:
            continue
        g = stats["gini_vs_popsteer"][name]
        gini_sig = g["low"] > 0 or g["high"] < 0
        ndcg = "NDCG@10 " + (f"significantly {'lower' if sig[name]['mean_diff'] < 0 else 'higher'}"
                             if sig[name]["significant"] else "not significantly different")
        gini = "Gini@10 " + (f"significantly {'higher' if g['estimate'] > 0 else 'lower'}" if gini_sig
                             else "not significantly different")
        parts.append(f"{md(m['label'])}: {ndcg}, {gini}")
    out.append("each baseline's pick against PopSteer's on test: " + "; ".join(parts))
    return out
