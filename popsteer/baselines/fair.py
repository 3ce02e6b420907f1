"""FA*IR (Zehlike et al., CIKM 2017): top-k ranking with ranked group fairness.

Protected group: the non-head items (mid + tail; ``protected="tail"`` for the tail alone).
A ranking satisfies ranked group fairness with parameters (p, alpha) when every prefix of
length i holds at least ``m(i) = F^-1(alpha_c; i, p)`` protected items, F the binomial CDF
(``scipy.stats.binom.ppf``, negative values read as 0). Testing k prefixes inflates the
chance that a fair (Bernoulli(p)) ranking fails, so alpha is adjusted to ``alpha_c``:
bisection on alpha_c in (0, alpha] until the table's exact failure probability is nearest
alpha, the search of the authors' ``fairsearchcore`` (``adjust_alpha``). The re-ranker (the
paper's Algorithm 1) walks the k positions with two queues, protected and non-protected,
each sorted by score: it takes the best protected candidate when the prefix would
otherwise fall below the table, else the better of the two queue heads (protected on ties).

Implemented here rather than depending on ``fairsearchcore`` (1.0.4, last released 2019):
with current numpy its alpha adjustment raises ``TypeError`` (a hash returning a numpy
float); patched, its failure probability skips the last prefix (its ``compute_aux_mtable``
loops to k - 1), so for 5 of the 15 grid points at k = 10 it picks a different table. The
failure probability here is exact (a dynamic programme over the protected count, checked
against enumerating all 2^k rankings in the tests), and the merge runs over a batch of users
at once on the top-k candidates of each group instead of one user's Python objects.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from scipy import stats

from popsteer.baselines.common import Baseline, RerankContext, finite_topk
from popsteer.baselines.extension import toward
from popsteer.errors import PopSteerError

GRID = tuple({"p": p, "significance": s} for p in (0.3, 0.5, 0.7, 0.9, 0.99) for s in (0.01, 0.05, 0.1))


def mtable(k: int, p: float, alpha: float) -> np.ndarray:
    """Unadjusted table: minimum protected items in each prefix 1..k, shape (k,) int64."""
    m = stats.binom.ppf(alpha, np.arange(1, k + 1), p)
    return np.maximum(np.nan_to_num(m, nan=0.0), 0).astype(np.int64)


def fail_probability(m: np.ndarray, p: float) -> float:
    """Exact probability that a ranking whose items are protected i.i.d. with probability p
    breaks the table ``m`` (shape (k,)) at some prefix."""
    alive = np.array([1.0])  # alive[c]: P(c protected so far and no prefix failed)
    for need in m:
        nxt = np.zeros(len(alive) + 1)
        nxt[:-1] += alive * (1 - p)
        nxt[1:] += alive * p
        nxt[: min(need, len(nxt))] = 0.0
        alive = nxt
    return float(1.0 - alive.sum())


@functools.lru_cache(maxsize=256)
def adjusted_mtable(k: int, p: float, alpha: float) -> tuple[int, ...]:
    """The table for the adjusted significance alpha_c (failure probability nearest alpha)."""
    if not (0 < p < 1 and 0 < alpha < 1 and k >= 1):
        raise PopSteerError(f"FA*IR needs 0 < p < 1, 0 < significance < 1 and k >= 1, got p={p}, alpha={alpha}, k={k}")
    hi_m = mtable(k, p, alpha)
    hi_f = fail_probability(hi_m, p)
    if hi_f <= alpha:
        return tuple(int(v) for v in hi_m)
    lo, hi = 0.0, alpha
    lo_m, lo_f = mtable(k, p, lo), 0.0
    for _ in range(200):  # invariant: fail(lo) <= alpha < fail(hi)
        if hi - lo <= 1e-16 * alpha:
            break
        mid = (lo + hi) / 2
        mid_m = mtable(k, p, mid)
        mid_f = fail_probability(mid_m, p)
        if mid_f <= alpha:
            lo, lo_m, lo_f = mid, mid_m, mid_f
        else:
            hi, hi_m, hi_f = mid, mid_m, mid_f
        if (hi_m - lo_m).sum() <= 1:  # adjacent tables: nothing lies between them
            break
    best = lo_m if abs(lo_f - alpha) <= abs(hi_f - alpha) else hi_m
    return tuple(int(v) for v in best)


def protected_mask(ctx: RerankContext, protected: str) -> np.ndarray:
    """(n_items,) bool: the protected items (padding never)."""
    g = ctx.groups
    if protected == "non_head":
        mask = g.mid | g.tail
    elif protected == "tail":
        mask = g.tail.copy()
    else:
        raise PopSteerError(f"FA*IR protected group must be 'non_head' or 'tail', got {protected!r}")
    mask[0] = False
    return mask


def fair_merge(prot_v: torch.Tensor, prot_i: torch.Tensor, rest_v: torch.Tensor, rest_i: torch.Tensor,
               m: tuple[int, ...]) -> torch.Tensor:
    """FA*IR's Algorithm 1 on two score-sorted queues per user.

    Args:
        prot_v, prot_i: (U, q) protected candidates, best first; ``-inf`` = no candidate.
        rest_v, rest_i: (U, q) non-protected candidates, the same.
        m: minimum protected count of every prefix, length k <= q.
    Returns:
        (U, k) item ids.
    """
    U, q = prot_v.shape
    k = len(m)
    rows = torch.arange(U)
    ip = torch.zeros(U, dtype=torch.long)  # next protected candidate
    ir = torch.zeros(U, dtype=torch.long)
    count = torch.zeros(U, dtype=torch.long)  # protected items placed so far
    out = torch.zeros((U, k), dtype=torch.long)
    for t in range(k):
        vp = torch.where(ip < q, prot_v[rows, ip.clamp(max=q - 1)], -torch.inf)  # (U,)
        vr = torch.where(ir < q, rest_v[rows, ir.clamp(max=q - 1)], -torch.inf)
        p_left, r_left = vp > -torch.inf, vr > -torch.inf
        take_p = p_left & (~r_left | (count < m[t]) | (vp >= vr))
        out[:, t] = torch.where(take_p, prot_i[rows, ip.clamp(max=q - 1)], rest_i[rows, ir.clamp(max=q - 1)])
        ip, ir, count = ip + take_p, ir + ~take_p, count + take_p
    return out


def fair_rerank(scores: torch.Tensor, ctx: RerankContext, k: int, p: float, significance: float,
                protected: str = "non_head") -> torch.Tensor:
    """FA*IR top-k per user. scores (U, n_items), padding at -inf -> (U, k) item ids."""
    mask = torch.as_tensor(protected_mask(ctx, protected))  # (n_items,)
    prot_v, prot_i = finite_topk(scores.masked_fill(~mask, -torch.inf), k)  # (U, k)
    rest_v, rest_i = finite_topk(scores.masked_fill(mask, -torch.inf), k)
    return fair_merge(prot_v, prot_i, rest_v, rest_i, adjusted_mtable(k, float(p), float(significance)))


EXTENSION = tuple({"p": p, "significance": 0.1} for p in (0.995, 0.999))
"""Grid extension toward the bound p -> 1 at the grid's largest significance."""

FAIR = Baseline("fair", "FA*IR", fair_rerank, GRID, {"significance": "α"}, extend=toward(EXTENSION))
