"""Top-k metrics with one held-out target per user (docs/METHOD.md §5).

NDCG, Precision, Recall/Hit and MRR follow RecBole's definitions; Gini, long-tail
coverage and ARP are computed from the top-k lists of all users. The popularity-bias
measures of the field (APLT/ACLT, Abdollahpouri et al. 2019; PopREO/PopRSP, Zhu et al.
SIGIR 2021 as Elliot implements them; Shannon entropy of exposure; novelty) are below.
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


def relative_std(p: np.ndarray) -> float:
    """``std(p) / mean(p)`` with the population std (ddof=0), as Elliot's ``np.std``; nan when
    any entry is nan or the mean is 0. For two groups it equals ``|p1 - p2| / (p1 + p2)``."""
    p = np.asarray(p, dtype=np.float64)
    if np.isnan(p).any() or p.mean() == 0:
        return float("nan")
    return float(p.std() / p.mean())


def short_head_long_tail(head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zhu et al.'s two groups: short head = our head group; long tail = every other
    non-padding item (mid + tail). Both (n_items,) bool, padding 0 in neither.

    Elliot's short head is the most popular items covering 80% of the interactions; ours
    (§3) covers <= 20%, so absolute REO/RSP values differ from an Elliot run on the same lists.
    """
    short = np.asarray(head, dtype=bool).copy()
    short[0] = False
    long_tail = ~short
    long_tail[0] = False
    return short, long_tail


def pop_rsp(topk: np.ndarray, head: np.ndarray) -> float:
    """Popularity ranking-based statistical parity (Zhu et al. 2021; Elliot's ``PopRSP``).

    ``P(R@k | g) = sum_u |L(u) & g| / sum_u |g|`` for g in {short head, long tail}, then
    ``RSP = std(P) / mean(P)`` (ddof=0). Elliot's denominator is ``|g \\ I_u^+|`` (the group
    minus the user's training items); our sequential protocol ranks history items too (no
    masking, §5), so every item of g is a candidate and the denominator is ``U * |g|`` (for
    general models, which mask history, too: no history reaches this function).

    Args:
        topk: (U, k) item ids. head: (n_items,) bool, our head group.
    """
    groups = short_head_long_tail(head)
    p = [g[topk].sum() / (len(topk) * g.sum()) if g.any() else np.nan for g in groups]
    return relative_std(np.array(p))


def pop_reo(hit: np.ndarray, targets: np.ndarray, head: np.ndarray) -> float:
    """Popularity ranking-based equal opportunity (Zhu et al. 2021; Elliot's ``PopREO``).

    ``P(R@k | g, y=1) = sum_u |L(u) & g & T(u)| / sum_u |g & T(u)|``; with one held-out
    target per user it is the share of users whose target lies in g that have it in their
    top-k. ``REO = std(P) / mean(P)`` (ddof=0); nan when a group has no target. Elliot
    removes training items from ``T(u)``; we keep the target even if it repeats a history item.

    Args:
        hit: (U,) bool target in top-k. targets: (U,). head: (n_items,) bool.
    """
    p = []
    for g in short_head_long_tail(head):
        sel = g[targets]  # (U,)
        p.append(hit[sel].mean() if sel.any() else np.nan)
    return relative_std(np.array(p))


def entropy_bits(exposure: np.ndarray) -> float:
    """Shannon entropy ``H = -sum_i p_i log2 p_i`` (bits) of the exposure shares
    ``p_i = c_i / sum c`` (Elliot's ``SEntropy``); items never shown contribute 0."""
    c = np.asarray(exposure, dtype=np.float64)
    c = c[c > 0]
    if c.size == 0:
        return 0.0
    p = c / c.sum()
    return float(-(p * np.log2(p)).sum())


def self_information(counts: np.ndarray) -> np.ndarray:
    """Per-item ``-log2 p_i`` with ``p_i = (counts_i + 1) / (sum_j counts_j + n)`` over the
    n non-padding items (add-one smoothing, so unseen items are finite), shape (n_items,);
    entry 0 (padding) is 0."""
    c = np.asarray(counts, dtype=np.float64)[1:]
    info = np.zeros(len(c) + 1)
    info[1:] = -np.log2((c + 1.0) / (c.sum() + len(c)))
    return info


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
    n_tail = tail[topk].sum(1)  # (U,) long-tail items per list
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
        f"aplt@{k}": float(n_tail.mean() / k),
        f"aclt@{k}": float(n_tail.mean()),
        f"pop_rsp@{k}": pop_rsp(topk, head),
        f"pop_reo@{k}": pop_reo(hit, targets, head),
        f"entropy@{k}": entropy_bits(exposure),
        f"novelty@{k}": float(self_information(counts)[topk].mean()),
    }
    for name, mask in (("head", head), ("mid", mid), ("tail", tail)):
        sel = mask[targets]
        out[f"ndcg_{name}@{k}"] = float(ndcg[sel].mean()) if sel.any() else float("nan")
    return out


def _rows_gini(exposure: np.ndarray, gini_n: int | None) -> np.ndarray:
    """``gini`` of every row of an (R, n) exposure matrix, shape (R,)."""
    c = np.sort(exposure, axis=1)
    n = c.shape[1] if gini_n is None else gini_n
    i = np.arange(n - c.shape[1] + 1, n + 1, dtype=np.float64)
    total = c.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = 2.0 * (c @ i) / (n * total) - (n + 1.0) / n
    return np.where(total > 0, g, 0.0)


def _rows_relative_std(p: np.ndarray) -> np.ndarray:
    """``relative_std`` of every row of an (R, G) matrix, shape (R,)."""
    mean = p.mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = p.std(1) / mean
    return np.where(mean == 0, np.nan, out)


def resampled_topk_metrics(
    topk: np.ndarray,
    targets: np.ndarray,
    counts: np.ndarray,
    head: np.ndarray,
    mid: np.ndarray,
    tail: np.ndarray,
    weights: np.ndarray,
    gini_n: int | None = None,
) -> dict[str, np.ndarray]:
    """``topk_metrics`` of R resampled user sets at once, each key an (R,) array.

    Resample r holds user u ``weights[r, u]`` times, so every user mean becomes
    ``W @ v / U`` and the exposure matrix is ``E = W @ X`` with X the (U, n_items) one-hot
    of the lists; Gini, coverage, entropy and RSP are then row functions of E. This equals
    ``topk_metrics(topk[idx], targets[idx], ...)`` for the users ``idx`` of each resample
    (a test checks every key) at a fraction of the cost.

    Args:
        topk: (U, k). targets: (U,). counts, head, mid, tail: (n_items,) as ``topk_metrics``.
        weights: (R, U) non-negative multiplicities, rows summing to the resample size.
    """
    n_users, k = topk.shape
    n_items = len(counts)
    w = np.asarray(weights, dtype=np.float64)  # (R, U)
    size = w.sum(1)  # (R,) users per resample
    ranks = target_ranks(topk, targets)
    hit = ranks >= 0
    short, long_tail = short_head_long_tail(head)
    per_user = np.stack([
        ndcg_per_user(ranks), hit.astype(np.float64),
        np.where(hit, 1.0 / (np.maximum(ranks, 0) + 1.0), 0.0),
        counts[topk].mean(1), tail[topk].sum(1), self_information(counts)[topk].mean(1),
        short[topk].sum(1), long_tail[topk].sum(1),
    ], axis=1)  # (U, 8)
    ndcg, hit_m, mrr, arp, n_tail, nov, n_short, n_long = (w @ per_user / size[:, None]).T  # 8 x (R,)
    from scipy import sparse  # here: scipy.sparse costs ~0.2 s to import in every evaluator actor

    x_t = sparse.csr_matrix((np.ones(topk.size), (topk.ravel(), np.repeat(np.arange(n_users), k))),
                            shape=(n_items, n_users))  # (n_items, U)
    exposure = np.asarray(x_t @ w.T).T[:, 1:]  # (R, n_items - 1) padding excluded
    shown = exposure > 0
    share = exposure / np.maximum(exposure.sum(1, keepdims=True), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(shown, share * np.log2(np.where(shown, share, 1.0)), 0.0).sum(1)
    rsp = np.stack([n_short / short.sum(), n_long / long_tail.sum()], 1)  # (R, 2) P(recommended | g)
    out = {
        f"ndcg@{k}": ndcg, f"precision@{k}": hit_m / k, f"recall@{k}": hit_m, f"hit@{k}": hit_m, f"mrr@{k}": mrr,
        f"lt_coverage@{k}": shown[:, tail[1:]].mean(1) if tail.any() else np.zeros(len(w)),
        f"item_coverage@{k}": shown.mean(1),
        f"gini@{k}": _rows_gini(exposure, gini_n),
        f"arp@{k}": arp, f"aplt@{k}": n_tail / k, f"aclt@{k}": n_tail,
        f"pop_rsp@{k}": _rows_relative_std(rsp),
        f"pop_reo@{k}": _rows_relative_std(_group_means(w, hit.astype(np.float64), targets, (short, long_tail))),
        f"entropy@{k}": entropy, f"novelty@{k}": nov,
    }
    per_group = _group_means(w, ndcg_per_user(ranks), targets, (head, mid, tail))  # (R, 3)
    for j, name in enumerate(("head", "mid", "tail")):
        out[f"ndcg_{name}@{k}"] = per_group[:, j]
    return out


def _group_means(w: np.ndarray, v: np.ndarray, targets: np.ndarray, groups) -> np.ndarray:
    """Weighted mean of v over the users whose target is in each group, (R, G); nan if none."""
    sel = np.stack([g[targets] for g in groups], 1).astype(np.float64)  # (U, G)
    num, den = w @ (sel * v[:, None]), w @ sel
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)
