"""The popularity-bias metrics of topk_metrics against plain-Python loops written here, on a hand-made
case with known answers and on a random one."""

from __future__ import annotations

import math
import statistics
from collections import Counter

import numpy as np
import pytest

from popsteer.eval.metrics import topk_metrics
from popsteer.eval.popularity import PopularityGroups

NEW = ("aplt", "aclt", "pop_rsp", "pop_reo", "entropy", "novelty", "item_coverage")


def _relstd(p):
    if any(math.isnan(x) for x in p) or statistics.fmean(p) == 0:
        return math.nan
    return statistics.pstdev(p) / statistics.fmean(p)


def reference(lists, targets, counts, head_ids, tail_ids):
    """Each metric from its definition, item by item; lists: list of lists of item ids."""
    n_catalogue = len(counts) - 1
    head_ids, tail_ids = set(head_ids), set(tail_ids)
    rest = set(range(1, n_catalogue + 1)) - head_ids
    k, n_users = len(lists[0]), len(lists)
    lt_per_list = [sum(1 for i in lst if i in tail_ids) for lst in lists]
    rec_share = []
    for group in (head_ids, rest):
        shown = sum(1 for lst in lists for i in lst if i in group)
        rec_share.append(shown / (n_users * len(group)))
    hit_share = []
    for group in (head_ids, rest):
        users = [u for u in range(n_users) if targets[u] in group]
        hit_share.append(sum(1 for u in users if targets[u] in lists[u]) / len(users) if users else math.nan)
    slots = Counter(i for lst in lists for i in lst)
    total_slots = sum(slots.values())
    entropy = -sum(c / total_slots * math.log2(c / total_slots) for c in slots.values())
    total_counts = sum(counts[1:])
    info = {i: -math.log2((counts[i] + 1) / (total_counts + n_catalogue)) for i in range(1, n_catalogue + 1)}
    return {
        f"aplt@{k}": statistics.fmean(n / k for n in lt_per_list),
        f"aclt@{k}": statistics.fmean(lt_per_list),
        f"pop_rsp@{k}": _relstd(rec_share),
        f"pop_reo@{k}": _relstd(hit_share),
        f"entropy@{k}": entropy,
        f"novelty@{k}": statistics.fmean(info[i] for lst in lists for i in lst),
        f"item_coverage@{k}": len(slots) / n_catalogue,
    }


def _masks(n_items, head_ids, mid_ids, tail_ids):
    out = []
    for ids in (head_ids, mid_ids, tail_ids):
        m = np.zeros(n_items, dtype=bool)
        m[list(ids)] = True
        out.append(m)
    return out


def test_hand_made_case():
    # items 1..6: head {1, 2}, mid {3, 4}, tail {5, 6}; three users, k = 2
    counts = np.array([0, 10, 8, 4, 3, 1, 0])
    head, mid, tail = _masks(7, {1, 2}, {3, 4}, {5, 6})
    topk = np.array([[1, 2], [1, 5], [3, 6]])
    targets = np.array([2, 6, 3])  # hit (head), miss (long tail), hit (long tail)
    m = topk_metrics(topk, targets, counts, head, mid, tail)
    # long-tail items per list 0, 1, 1
    assert m["aplt@2"] == pytest.approx(1 / 3)
    assert m["aclt@2"] == pytest.approx(2 / 3)
    # P(rec | head) = 3 / (3 * 2) = 0.5, P(rec | rest) = 3 / (3 * 4) = 0.25: std 0.125 / mean 0.375
    assert m["pop_rsp@2"] == pytest.approx(1 / 3)
    # P(hit | head) = 1 / 1, P(hit | rest) = 1 / 2: |1 - 0.5| / 1.5
    assert m["pop_reo@2"] == pytest.approx(1 / 3)
    # exposure 1:2, 2:1, 3:1, 5:1, 6:1 of 6 slots
    assert m["entropy@2"] == pytest.approx(math.log2(3) / 3 + 2 * math.log2(6) / 3)
    # p_i = (c_i + 1) / (26 + 6); slots 1, 2, 1, 5, 3, 6
    nov = (2 * math.log2(32 / 11) + math.log2(32 / 9) + math.log2(32 / 2) + math.log2(32 / 5) + math.log2(32)) / 6
    assert m["novelty@2"] == pytest.approx(nov)
    assert m["item_coverage@2"] == pytest.approx(5 / 6)
    ref = reference(topk.tolist(), targets.tolist(), counts.tolist(), {1, 2}, {5, 6})
    for key, value in ref.items():
        assert m[key] == pytest.approx(value, abs=1e-12), key


def test_equal_exposure_and_equal_opportunity_give_zero():
    counts = np.array([0, 5, 5, 1, 1])
    head, mid, tail = _masks(5, {1}, {2, 3}, {4})
    # each of the 4 items shown once per 2 users: P(rec | g) = 1/2 for both groups
    topk = np.array([[1, 2], [3, 4]])
    m = topk_metrics(topk, np.array([1, 4]), counts, head, mid, tail)
    assert m["pop_rsp@2"] == pytest.approx(0.0)
    assert m["pop_reo@2"] == pytest.approx(0.0)
    assert m["entropy@2"] == pytest.approx(2.0)  # uniform over 4 items: log2 4 bits


def test_reo_is_nan_without_a_head_target_and_novelty_is_finite_for_unseen_items():
    counts = np.array([0, 5, 0, 0])  # items 2 and 3 never seen in training
    head, mid, tail = _masks(4, {1}, {2}, {3})
    m = topk_metrics(np.array([[2, 3], [3, 1]]), np.array([2, 3]), counts, head, mid, tail)
    assert math.isnan(m["pop_reo@2"])
    assert math.isfinite(m["novelty@2"]) and m["novelty@2"] > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_case_against_loops(seed):
    rng = np.random.default_rng(seed)
    n_items, n_users, k = 60, 40, 5
    counts = np.r_[0, rng.integers(0, 50, n_items - 1)]
    g = PopularityGroups.from_counts(counts)
    popular = counts[1:] / counts[1:].sum()
    topk = np.stack([rng.choice(np.arange(1, n_items), k, replace=False, p=popular) for _ in range(n_users)])
    targets = np.where(rng.random(n_users) < 0.5, topk[np.arange(n_users), rng.integers(0, k, n_users)],
                       rng.integers(1, n_items, n_users))
    m = topk_metrics(topk, targets, g.counts, g.head, g.mid, g.tail)
    ref = reference(topk.tolist(), targets.tolist(), counts.tolist(), np.flatnonzero(g.head), np.flatnonzero(g.tail))
    assert set(f"{name}@{k}" for name in NEW) <= m.keys()
    for key, value in ref.items():
        assert m[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key
