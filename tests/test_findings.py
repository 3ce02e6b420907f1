"""The report's Findings: hypervolume standing, significance of the pick, the authors' ML-1M records."""

from __future__ import annotations

import pytest

from popsteer.report import authors_ml1m
from popsteer.report.findings import authors_rows, best_gini_drop, findings, hv_standing, significant_over

LABELS = {"popsteer": "PopSteer (tuned)", "popsteer_preserve": "PopSteer error-preserving (tuned)",
          "ipr": "IPR", "pct": "PCT"}


def section(hv: dict[str, float], ndcg_diff: float = 0.0, ndcg_significant: bool = False,
            gini_interval: tuple[float, float] = (-0.01, 0.01), dataset: str = "ml-1m") -> dict:
    """A report section with the given test hypervolumes; the IPR pick against PopSteer's as given."""
    base = {"ndcg@10": 0.1, "gini@10": 0.8}
    methods = {name: {"name": name, "label": LABELS[name], "test": dict(base), "test_rows": [dict(base)]}
               for name in hv}
    methods["popsteer"]["test"] = {"ndcg@10": 0.096, "gini@10": 0.72}  # -4% NDCG, -10% Gini
    methods["ipr"]["test_rows"] = [{"ndcg@10": 0.099, "gini@10": 0.79}, {"ndcg@10": 0.097, "gini@10": 0.772},
                                   {"ndcg@10": 0.09, "gini@10": 0.7}]
    vs = [{"method": n, "metric": "ndcg@10", "test": "t", "mean_diff": ndcg_diff if n == "ipr" else 0.0,
           "significant": ndcg_significant and n == "ipr"} for n in hv if not n.startswith("popsteer")]
    gini = {n: {"estimate": sum(gini_interval) / 2, "low": gini_interval[0], "high": gini_interval[1]} for n in hv}
    return {"dataset": dataset, "model": "SASRec", "title": f"{dataset}, SASRec trained by PopSteer",
            "methods": methods, "base_test": {"sasrec": base},
            "hv": {"methods": {n: {"valid": v, "test": v} for n, v in hv.items()}},
            "stats": {"vs_popsteer": vs, "gini_vs_popsteer": gini}}


def test_hv_standing_names_the_baselines_at_or_above_popsteer():
    ps, lost, strongest = hv_standing(section({"popsteer": 0.004, "popsteer_preserve": 0.009, "ipr": 0.005,
                                               "pct": 0.001}))
    assert ps == 0.004 and lost == [("ipr", 0.005)] and strongest == "ipr"  # the preserve form is not a baseline
    assert hv_standing(section({"popsteer": 0.006, "ipr": 0.005, "pct": 0.001}))[1] == []


@pytest.mark.parametrize("ndcg_diff, ndcg_sig, gini, expected", [
    (0.0, False, (0.002, 0.01), True),     # the baseline's Gini significantly higher, NDCG a tie
    (-0.003, True, (-0.01, 0.01), True),   # the baseline's NDCG significantly lower, Gini a tie
    (0.003, True, (0.002, 0.01), False),   # fairer, but significantly less accurate
    (0.0, False, (-0.01, 0.01), False),    # neither differs
    (0.0, False, (-0.01, -0.002), False),  # the baseline is significantly fairer
])
def test_significance_of_the_pick(ndcg_diff, ndcg_sig, gini, expected):
    res = section({"popsteer": 0.006, "ipr": 0.005}, ndcg_diff, ndcg_sig, gini)
    assert significant_over(res, "ipr") is expected


def test_best_gini_drop_within_an_ndcg_drop():
    assert best_gini_drop([(0.02, 0.01), (0.05, 0.03), (0.09, 0.06)], 0.04) == 0.05
    assert best_gini_drop([(0.09, 0.06)], 0.04) is None


def test_authors_rows_compare_relative_drops_on_each_side():
    (dg, dn), rows = authors_rows(section({"popsteer": 0.006, "ipr": 0.005, "pct": 0.001}))
    assert dg == pytest.approx(0.10) and dn == pytest.approx(0.04)
    by = {r[0]: r[1:] for r in rows}
    # theirs: IPR a=0.1 is the last point within a 4% NDCG drop (0.1213 -> 0.1179, -2.8%): Gini 0.742 -> 0.724
    assert by["IPR"][0] == f"{100 * (0.742 - 0.7240) / 0.742:+.1f}%"
    assert by["IPR"][1] == "+3.5%"  # ours: 0.8 -> 0.772 at a 3% NDCG drop
    assert by["PopSteer (tuned)"] == ["not recorded", "+10.0% (its pick)"]
    assert set(by) == {"PopSteer (tuned)", "IPR", "PCT", "random", "fair"} and len(authors_ml1m.GRIDS) == 4


def test_findings_lines():
    won = section({"popsteer": 0.006, "popsteer_preserve": 0.007, "ipr": 0.005}, gini_interval=(0.002, 0.01))
    lost = section({"popsteer": 0.004, "popsteer_preserve": 0.003, "ipr": 0.005}, dataset="beauty")
    text = "\n".join(findings([won, lost]))
    assert "beats every baseline on test hypervolume on 1 of 2 sections: **ml-1m, SASRec trained by PopSteer**" in text
    assert "strongest baseline's pick (per-user NDCG@10 or Gini@10" in text and "on **ml-1m, SASRec trained" in text
    assert "It loses on **beauty, SASRec trained by PopSteer** (PopSteer 4.000×10⁻³) to IPR (5.000)." in text
    assert "higher test hypervolume than the paper's form on 1 of 2 sections (ml-1m, SASRec trained by PopSteer)" in text
    assert text.count("against parepic/PopSteer2.0") == 1  # ML-1M's SASRec only
    assert "PopSteer's pick changes Gini@10 by -10.0% and NDCG@10 by -4.0%." in text
