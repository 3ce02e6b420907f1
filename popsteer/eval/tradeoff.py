"""The accuracy / exposure trade-off: relative drops, the validation pick rule, Pareto fronts.

Every method (PopSteer's grid, each re-ranker's grid) is tuned with one rule
(docs/METHOD.md §4): among the points whose relative NDCG@10 drop against SASRec is at most
``max_ndcg_drop`` (5%), pick the one maximising relative Gini@10 drop minus relative NDCG@10
drop. Higher NDCG and lower Gini are better, so a point dominates another when it is no worse
in both and better in one.
"""

from __future__ import annotations

import numpy as np

MAX_NDCG_DROP = 0.05
"""The pick rule's limit on the relative NDCG@10 drop against the base model (5%), for every method."""


def tradeoff(row: dict, base: dict, k: int = 10) -> tuple[float, float]:
    """(relative Gini drop, relative NDCG drop) of a row against the baseline."""
    g0, n0 = base[f"gini@{k}"], base[f"ndcg@{k}"]
    return (g0 - row[f"gini@{k}"]) / g0, (n0 - row[f"ndcg@{k}"]) / n0


def trade_score(row: dict, base: dict, k: int = 10) -> float:
    """Relative Gini drop minus relative NDCG drop: what ``pick_point`` maximises."""
    gini_drop, ndcg_drop = tradeoff(row, base, k)
    return gini_drop - ndcg_drop


def pick_index(rows: list[dict], base: dict, max_ndcg_drop: float = MAX_NDCG_DROP, k: int = 10) -> int | None:
    """Index of the row maximising ``trade_score`` with NDCG drop <= ``max_ndcg_drop`` (first on ties), or None."""
    best, best_score = None, -np.inf
    for i, row in enumerate(rows):
        gini_drop, ndcg_drop = tradeoff(row, base, k)
        if ndcg_drop <= max_ndcg_drop and gini_drop - ndcg_drop > best_score:
            best, best_score = i, gini_drop - ndcg_drop
    return best


def pick_point(rows: list[dict], base: dict, max_ndcg_drop: float = MAX_NDCG_DROP, k: int = 10) -> dict | None:
    """The row ``pick_index`` chooses, or None when no row satisfies the constraint."""
    i = pick_index(rows, base, max_ndcg_drop, k)
    return None if i is None else rows[i]


def pick_with_fallback(rows: list[dict], base: dict, max_ndcg_drop: float = MAX_NDCG_DROP) -> tuple[int, bool]:
    """``(pick_index, True)``; when no row keeps the NDCG drop within ``max_ndcg_drop``, the row
    with the smallest NDCG drop and False."""
    i = pick_index(rows, base, max_ndcg_drop)
    if i is not None:
        return i, True
    return int(np.argmin([tradeoff(r, base)[1] for r in rows])), False


def pareto_front(gini: np.ndarray, ndcg: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated (gini, ndcg) points, by increasing Gini."""
    gini, ndcg = np.asarray(gini, dtype=np.float64), np.asarray(ndcg, dtype=np.float64)
    order = np.lexsort((-ndcg, gini))
    front, best = [], -np.inf
    for i in order:
        if ndcg[i] > best:
            front.append(i)
            best = ndcg[i]
    return np.asarray(front, dtype=np.int64)


def dominated_share(rows: list[dict], by: list[dict], k: int = 10) -> float:
    """Share of ``rows`` for which some row of ``by`` has Gini <= and NDCG >= (and differs)."""
    g, n = f"gini@{k}", f"ndcg@{k}"
    hit = [any(b[g] <= r[g] and b[n] >= r[n] and (b[g], b[n]) != (r[g], r[n]) for b in by) for r in rows]
    return float(np.mean(hit)) if hit else float("nan")


def hv_reference(base: dict, k: int = 10, ndcg_floor: float = 0.5) -> tuple[float, float]:
    """The hypervolume reference point of a split: (``ndcg_floor`` x the base model's NDCG@k, its
    1 - Gini@k). Only points at least as fair as the base model, keeping at least half its
    accuracy, add volume: the region the fair-grid rule extends every method into."""
    return ndcg_floor * base[f"ndcg@{k}"], 1.0 - base[f"gini@{k}"]


def hypervolume(rows: list[dict], ref: tuple[float, float], k: int = 10) -> float:
    """Area dominated by the rows' (NDCG@k, 1 - Gini@k) points and bounded below by ``ref``.

    Both coordinates are maximised. Sweeping the points by decreasing NDCG, each point whose
    fairness ``f`` exceeds the best so far ``f*`` adds the strip ``(n - r_n) * (f - f*)``:
    every point seen earlier has a larger NDCG but reaches only ``f*``. Exact; points not
    beyond ``ref`` in both coordinates add nothing.
    """
    r_n, r_f = ref
    pts = sorted(((r[f"ndcg@{k}"], 1.0 - r[f"gini@{k}"]) for r in rows), key=lambda p: (-p[0], -p[1]))
    area, best_f = 0.0, r_f
    for n, f in pts:
        if n > r_n and f > best_f:
            area += (n - r_n) * (f - best_f)
            best_f = f
    return float(area)
