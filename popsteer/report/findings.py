"""The report's opening "Findings": what the sections say together, stated plainly.

Per section (one ``res`` of ``popsteer.stages.report.evaluate_section``):

- **Hypervolume.** PopSteer (the paper's form, its whole grid) against every re-ranking
  baseline's grid on test. PopSteer *beats every baseline* when its test hypervolume is above
  each of theirs; otherwise it *loses to* each baseline at or above it.
- **Significance.** PopSteer's validation pick against the pick of the strongest baseline (the
  highest test hypervolume): significant when one of per-user NDCG@10 (paired t-test, Holm) or
  Gini@10 (paired bootstrap interval) favours PopSteer significantly and the other does not
  favour the baseline significantly.
- **Error-preserving variant.** Its grid's test hypervolume against the paper's form.
- **ML-1M against the authors' records** (``popsteer.report.authors_ml1m``): relative drops
  against each side's own SASRec. For PopSteer's pick on our test split, its NDCG@10 drop
  ``dn`` and Gini@10 drop ``dg``; for each baseline the authors recorded, the largest Gini drop
  among their points with an NDCG drop <= ``dn``, beside the same for that baseline's grid here.
"""

from __future__ import annotations

from popsteer.eval.tradeoff import tradeoff
from popsteer.report import authors_ml1m
from popsteer.report.findings_forms import forms_lines
from popsteer.report.markdown import md, md_table


def baselines(res: dict) -> list[str]:
    return [name for name in res["methods"] if not name.startswith("popsteer")]


def hv_standing(res: dict) -> tuple[float, list[tuple[str, float]], str]:
    """(PopSteer's test hypervolume, [(baseline, its HV)] at or above it (best first), the strongest baseline)."""
    hv = res["hv"]["methods"]
    ps = hv["popsteer"]["test"]
    base = {name: hv[name]["test"] for name in baselines(res)}
    lost = sorted(((n, v) for n, v in base.items() if v >= ps), key=lambda t: -t[1])
    return ps, lost, max(base, key=base.get)


def significant_over(res: dict, name: str) -> bool:
    """PopSteer's test pick significantly better than ``name``'s (see the module docstring)."""
    stats = res["stats"]
    t = next(r for r in stats["vs_popsteer"] if r["method"] == name and r["metric"] == "ndcg@10" and r["test"] == "t")
    g = stats["gini_vs_popsteer"][name]  # name - PopSteer
    ndcg_for, ndcg_against = t["significant"] and t["mean_diff"] < 0, t["significant"] and t["mean_diff"] > 0
    gini_for, gini_against = g["low"] > 0, g["high"] < 0
    return (ndcg_for or gini_for) and not (ndcg_against or gini_against)


def best_gini_drop(points: list[tuple[float, float]], max_ndcg_drop: float) -> float | None:
    """The largest relative Gini drop among (gini_drop, ndcg_drop) points with ndcg_drop <= max_ndcg_drop."""
    kept = [g for g, n in points if n <= max_ndcg_drop]
    return max(kept) if kept else None


def authors_rows(res: dict) -> tuple[tuple[float, float], list[list[str]]]:
    """PopSteer's (Gini drop, NDCG drop) on test, and one row per baseline the authors recorded."""
    base = res["base_test"]["sasrec"]
    dg, dn = tradeoff(res["methods"]["popsteer"]["test"], base)
    rows = [[md(res["methods"]["popsteer"]["label"]), "not recorded", f"{100 * dg:+.1f}% (its pick)"]]
    for name, grid in authors_ml1m.GRIDS.items():
        theirs = best_gini_drop([tradeoff({"gini@10": g, "ndcg@10": n}, authors_ml1m.SASREC)
                                 for _, n, g in grid], dn)
        m = res["methods"].get(name)
        ours = None if m is None else best_gini_drop([tradeoff(r, base) for r in m["test_rows"]], dn)
        label = md(m["label"]) if m else name
        rows.append([label, "—" if theirs is None else f"{100 * theirs:+.1f}%",
                     "—" if ours is None else f"{100 * ours:+.1f}%"])
    return (dg, dn), rows


def authors_lines(results: list[dict]) -> list[str]:
    """The ML-1M comparison with the authors' records, for each SASRec section of ML-1M."""
    out = []
    for res in results:
        if res["dataset"] != "ml-1m" or res.get("model", "SASRec") != "SASRec":
            continue
        (dg, dn), rows = authors_rows(res)
        base = res["base_test"]["sasrec"]
        out += [f"- **{res['title']}** against {authors_ml1m.SOURCE}: our SASRec has test NDCG@10 "
                f"{base['ndcg@10']:.4f} and Gini@10 {base['gini@10']:.4f}, theirs {authors_ml1m.SASREC['ndcg@10']:.4f} "
                f"and {authors_ml1m.SASREC['gini@10']:.3f} on their split (the splits differ in the order of same-second "
                "ratings of users 3000-6040, docs/METHOD.md §7). PopSteer's pick changes Gini@10 by "
                f"{-100 * dg:+.1f}% and NDCG@10 by {-100 * dn:+.1f}%. The largest Gini@10 drop each baseline "
                "reaches with at most that NDCG@10 drop, on their records and here:", "",
                md_table(["baseline", "authors' records (their split)", "this report (test grid)"], rows), ""]
    return out


def findings(results: list[dict]) -> list[str]:
    """The "Findings" section's markdown lines."""
    won, lost, sig, preserve = [], [], [], []
    for res in results:
        ps, losers, strongest = hv_standing(res)
        label = res["methods"][strongest]["label"]
        if losers:
            lost.append(f"**{res['title']}** (PopSteer {1000 * ps:.3f}×10⁻³) to " + ", ".join(
                f"{md(res['methods'][n]['label'])} ({1000 * v:.3f})" for n, v in losers))
        else:
            won.append(f"**{res['title']}** ({1000 * ps:.3f}×10⁻³ against {md(label)}'s "
                       f"{1000 * res['hv']['methods'][strongest]['test']:.3f})")
            if significant_over(res, strongest):
                sig.append(f"**{res['title']}** (against {md(label)})")
        hv = res["hv"]["methods"]
        if "popsteer_preserve" in hv:
            better = hv["popsteer_preserve"]["test"] > hv["popsteer"]["test"]
            preserve.append((res["title"], better, hv["popsteer_preserve"]["test"], hv["popsteer"]["test"]))
    out = ["## Findings", "",
           "Hypervolume: the area of the (NDCG@10, 1 − Gini@10) plane a method's whole grid dominates on test "
           "(each section's Hypervolume table); PopSteer is its paper's form, against the re-ranking baselines.", "",
           f"- PopSteer beats every baseline on test hypervolume on {len(won)} of {len(results)} sections"
           + (": " + "; ".join(won) + "." if won else ".")]
    out.append("- Its pick is significantly better than the strongest baseline's pick (per-user NDCG@10 or Gini@10 "
               "significantly better, the other not significantly worse) on " +
               ("; ".join(sig) + "." if sig else "no section."))
    out.append("- It loses on " + ("; ".join(lost) + "." if lost else "no section."))
    if preserve:
        ups = [t for t, b, _, _ in preserve if b]
        out.append(f"- The error-preserving variant has a higher test hypervolume than the paper's form on {len(ups)} of "
                   f"{len(preserve)} sections" + (f" ({'; '.join(ups)})" if ups else "") + "; " + ", ".join(
                       f"{t}: {1000 * p:.3f} vs {1000 * r:.3f}" for t, _, p, r in preserve) + ".")
    out += forms_lines(results)
    comparison = authors_lines(results)
    if comparison:
        out += ["", "On ML-1M against what the authors recorded (relative drops; their folder holds their SASRec and "
                "baselines, not a PopSteer grid):", "", *comparison]
    return out + [""]
