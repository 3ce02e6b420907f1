"""Top-k metrics with one held-out target per user (docs/METHOD.md §5).

NDCG, Precision, Recall/Hit and MRR follow RecBole's definitions; Gini, long-tail
coverage and ARP are computed from the top-k lists of all users.
"""

from __future__ import annotations

import numpy as np


def target_ranks(topk: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each user's target in its top-k list, -1 when absent.

    Args:
        topk: (U, k) item ids, best first. targets: (U,).
    """
    hit = topk == targets[:, None]  # (U, k)
    return np.where(hit.any(1), hit.argmax(1), -1)


def ndcg_per_user(ranks: np.ndarray) -> np.ndarray:
    return np.where(ranks >= 0, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)


def gini(exposure: np.ndarray, n_items: int | None = None) -> float:
    """Gini index of per-item exposure counts.

    ``G = 2 * sum_i i * c_(i) / (n * sum c) - (n + 1) / n`` with counts sorted ascending
    and i = 1..n. ``exposure`` holds one count per catalogue item (padding excluded);
    ``n_items`` overrides n (RecBole uses its item count including padding).
    """
    c = np.sort(np.asarray(exposure, dtype=np.float64))
    n = len(c) if n_items is None else n_items
    if c.sum() == 0:
        return 0.0
    i = np.arange(n - len(c) + 1, n + 1, dtype=np.float64)
    return float(2.0 * np.sum(i * c) / (n * c.sum()) - (n + 1.0) / n)


def topk_metrics(
    topk: np.ndarray,
    targets: np.ndarray,
    counts: np.ndarray,
    head: np.ndarray,
    mid: np.ndarray,
    tail: np.ndarray,
    gini_n: int | None = None,
) -> dict[str, float]:
    """All metrics of one set of top-k lists.

    Args:
        topk: (U, k) recommended item ids (never padding 0). targets: (U,).
        counts: (n_items,) training-target counts (popularity). head/mid/tail: (n_items,) bool.
        gini_n: n in the Gini formula; default the catalogue size without padding.
    """
    k = topk.shape[1]
    n_items = len(counts)
    ranks = target_ranks(topk, targets)
    ndcg = ndcg_per_user(ranks)
    hit = ranks >= 0
    exposure = np.bincount(topk.ravel(), minlength=n_items)[1:]  # (n_items - 1,) padding excluded
    out = {
        f"ndcg@{k}": float(ndcg.mean()),
        f"precision@{k}": float(hit.mean() / k),
        f"recall@{k}": float(hit.mean()),
        f"hit@{k}": float(hit.mean()),
        f"mrr@{k}": float(np.where(hit, 1.0 / (np.maximum(ranks, 0) + 1.0), 0.0).mean()),
        f"lt_coverage@{k}": float(np.isin(np.flatnonzero(tail), np.unique(topk)).mean()) if tail.any() else 0.0,
        f"item_coverage@{k}": float((exposure > 0).mean()),
        f"gini@{k}": gini(exposure, gini_n),
        f"arp@{k}": float(counts[topk].mean()),
    }
    for name, mask in (("head", head), ("mid", mid), ("tail", tail)):
        sel = mask[targets]
        out[f"ndcg_{name}@{k}"] = float(ndcg[sel].mean()) if sel.any() else float("nan")
    return out
