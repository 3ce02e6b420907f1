"""Paired tests, bootstrap intervals and Holm correction (popsteer/eval/significance.py) against scipy,
brute force and the bootstrap's expected behaviour."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from popsteer.eval.metrics import topk_metrics
from popsteer.eval.popularity import PopularityGroups
from popsteer.eval.significance import (TopkMetricFn, bootstrap_difference, bootstrap_intervals, bootstrap_samples,
                                        compare, holm, multiplicities, paired_tests, per_user_accuracy,
                                        resample_indices)

MEANS = ("ndcg@5", "precision@5", "recall@5", "hit@5", "mrr@5", "arp@5", "aplt@5", "aclt@5", "novelty@5")


def _split(seed=0, n_users=300, n_items=80, k=5, hit_rate=0.3):
    """Random lists drawn by popularity, targets hit with probability ``hit_rate``."""
    rng = np.random.default_rng(seed)
    counts = np.r_[0, rng.integers(1, 60, n_items - 1)]
    g = PopularityGroups.from_counts(counts)
    pop = counts[1:] / counts[1:].sum()
    topk = np.stack([rng.choice(np.arange(1, n_items), k, replace=False, p=pop) for _ in range(n_users)])
    targets = np.where(rng.random(n_users) < hit_rate, topk[np.arange(n_users), rng.integers(0, k, n_users)],
                       rng.integers(1, n_items, n_users))
    return topk, targets, TopkMetricFn(targets, g.counts, g.head, g.mid, g.tail)


def test_module_does_not_import_torch():
    code = "import sys, popsteer.eval.significance; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_per_user_accuracy_averages_to_topk_metrics():
    topk, targets, fn = _split()
    per_user = per_user_accuracy(topk, targets)
    m = fn(topk, np.arange(len(topk)))
    assert per_user.keys() == {"ndcg@5", "precision@5"}
    for key, v in per_user.items():
        assert v.shape == targets.shape and v.mean() == pytest.approx(m[key], abs=1e-12)


def test_paired_tests_equal_scipy_and_separate_clear_from_null():
    rng = np.random.default_rng(0)
    b = rng.random(500)
    clear, null = b + 0.05 + 0.1 * rng.standard_normal(500), rng.permutation(b)
    for a, significant in ((clear, True), (null, False)):
        res = paired_tests(a, b)
        t, w = stats.ttest_rel(a, b), stats.wilcoxon(a, b, zero_method="wilcox")
        assert res["t_stat"] == pytest.approx(t.statistic) and res["t_p"] == pytest.approx(t.pvalue)
        assert res["w_stat"] == pytest.approx(w.statistic) and res["w_p"] == pytest.approx(w.pvalue)
        assert res["mean_diff"] == pytest.approx((a - b).mean())
        assert (res["t_p"] < 1e-6 and res["w_p"] < 1e-6) if significant else (res["t_p"] > 0.05 and res["w_p"] > 0.05)


def test_paired_tests_with_all_differences_zero():
    a = np.array([0.0, 0.5, 0.0, 1.0])
    res = paired_tests(a, a.copy())
    assert res["t_p"] == 1.0 and res["w_p"] == 1.0 and res["mean_diff"] == 0.0 and res["n_nonzero"] == 0
    with pytest.raises(ValueError):
        paired_tests(a, a[:3])


def test_holm_hand_worked():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == pytest.approx([0.02])
    out = holm([0.01, np.nan, 0.02])  # nan left out of m
    assert np.isnan(out[1]) and out[[0, 2]] == pytest.approx([0.02, 0.02])
    assert holm([]).shape == (0,)


def _holm_step_down(p, alpha):
    """Holm's procedure itself: reject the smallest p-values while p_(j) <= alpha / (m - j + 1)."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    rejected = set()
    for j, i in enumerate(order):
        if p[i] > alpha / (len(p) - j):
            break
        rejected.add(i)
    return rejected


def _holm_brute(p):
    """Adjusted p-value from its definition: max over the hypotheses sorted at or before it."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    for pos, i in enumerate(order):
        out[i] = min(1.0, max((m - j) * p[order[j]] for j in range(pos + 1)))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_holm_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    p = np.round(rng.random(12) ** 3, 3)  # rounding makes ties
    adjusted = holm(p)
    assert adjusted == pytest.approx(_holm_brute(p.tolist()), abs=1e-12)
    assert np.all(adjusted >= p) and np.all(adjusted <= 1)
    assert np.all(np.diff(adjusted[np.argsort(p, kind="stable")]) >= 0)
    for alpha in rng.random(100) * 0.3:
        assert set(np.flatnonzero(adjusted <= alpha)) == _holm_step_down(p.tolist(), alpha)


def test_batched_samples_equal_the_per_resample_loop():
    topk, targets, fn = _split(seed=3, n_users=120)
    idx = resample_indices(len(topk), 25, seed=7)
    fast = bootstrap_samples(topk, fn, idx)
    slow = bootstrap_samples(topk, lambda rows, users: fn(rows, users), idx)  # no batch: R calls
    assert fast.keys() == slow.keys() == topk_metrics(topk, targets, fn.counts, fn.head, fn.mid, fn.tail).keys()
    for key in slow:
        assert fast[key] == pytest.approx(slow[key], rel=1e-9, abs=1e-12, nan_ok=True), key
    assert multiplicities(idx, len(topk)).sum(1).tolist() == [len(topk)] * 25


def test_intervals_are_deterministic_and_contain_user_means():
    topk, _, fn = _split()
    a = bootstrap_intervals(topk, fn, n_resamples=300, seed=11)
    assert a == bootstrap_intervals(topk, fn, n_resamples=300, seed=11)
    assert a != bootstrap_intervals(topk, fn, n_resamples=300, seed=12)
    assert np.array_equal(resample_indices(50, 10, 3), resample_indices(50, 10, 3))
    for key, iv in a.items():
        assert iv["low"] <= iv["high"] or np.isnan(iv["low"]), key
    for key in MEANS:
        assert a[key]["low"] <= a[key]["estimate"] <= a[key]["high"], key
        assert abs(a[key]["bias"]) < 0.1 * (a[key]["high"] - a[key]["low"]), key


def test_centered_intervals_contain_list_level_estimates():
    """Coverage-type metrics shift on resamples (fewer distinct users); centring undoes the shift."""
    topk, _, fn = _split(seed=6, n_users=1500, n_items=400)
    plain = bootstrap_intervals(topk, fn, n_resamples=300)
    centered = bootstrap_intervals(topk, fn, n_resamples=300, centered=True)
    assert plain["item_coverage@5"]["bias"] < 0 < plain["gini@5"]["bias"]
    for key, iv in centered.items():
        if not np.isnan(iv["low"]):
            assert iv["low"] <= iv["estimate"] <= iv["high"], key
            assert iv["high"] - iv["low"] == pytest.approx(plain[key]["high"] - plain[key]["low"]), key


def test_intervals_shrink_with_more_users():
    widths = []
    for n_users in (100, 2000):
        topk, _, fn = _split(seed=5, n_users=n_users)
        iv = bootstrap_intervals(topk, fn, n_resamples=300)
        widths.append({key: iv[key]["high"] - iv[key]["low"] for key in ("ndcg@5", "gini@5", "aplt@5", "pop_rsp@5")})
    for key in widths[0]:
        assert widths[1][key] < 0.5 * widths[0][key], key


def test_mean_interval_agrees_with_scipy_bootstrap():
    rng = np.random.default_rng(1)
    x = rng.exponential(size=400)
    ours = bootstrap_intervals(np.zeros((400, 1), dtype=int), lambda rows, users: {"m": x[users].mean()},
                               n_resamples=4000, seed=3)["m"]
    theirs = stats.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", confidence_level=0.95,
                             rng=np.random.default_rng(4)).confidence_interval
    width = theirs.high - theirs.low
    assert ours["estimate"] == pytest.approx(x.mean())
    assert ours["low"] == pytest.approx(theirs.low, abs=0.1 * width)
    assert ours["high"] == pytest.approx(theirs.high, abs=0.1 * width)


def test_difference_interval_is_paired():
    topk, targets, fn = _split(seed=2)
    same = bootstrap_difference(topk, topk.copy(), fn, n_resamples=200)
    assert all(iv["low"] == iv["high"] == 0.0 for key, iv in same.items() if not np.isnan(iv["low"])), same
    better = topk.copy()
    better[:, 0] = targets  # every target first: NDCG 1 for all users
    diff = bootstrap_difference(better, topk, fn, n_resamples=200)
    point = fn(better, np.arange(len(topk)))["ndcg@5"] - fn(topk, np.arange(len(topk)))["ndcg@5"]
    assert diff["ndcg@5"]["estimate"] == pytest.approx(point)
    assert 0 < diff["ndcg@5"]["low"] <= point <= diff["ndcg@5"]["high"]


def test_compare_rows_and_holm():
    topk, targets, fn = _split(seed=4, n_users=400)
    better = topk.copy()
    better[: len(topk) // 2, 0] = targets[: len(topk) // 2]
    methods = {"base": topk, "better": better, "same": topk.copy()}
    rows = compare(methods, "base", targets, fn, n_resamples=100)
    assert len(rows) == 2 * 2 * 2  # two methods, two metrics, two tests
    keys = {"method", "reference", "metric", "test", "mean", "mean_reference", "mean_diff", "statistic", "p",
            "p_holm", "significant", "diff_low", "diff_high"}
    assert all(r.keys() == keys for r in rows)
    for r in rows:
        assert r["p_holm"] >= r["p"] and r["significant"] == (r["method"] == "better")
    for metric in ("ndcg@5", "precision@5"):
        for test in ("t", "wilcoxon"):
            group = [r for r in rows if r["metric"] == metric and r["test"] == test]
            assert [r["p_holm"] for r in group] == pytest.approx(holm([r["p"] for r in group]).tolist())
    assert compare(methods, "base", targets)[0].keys() == keys - {"diff_low", "diff_high"}
    with pytest.raises(KeyError):
        compare(methods, "sasrec", targets)
