"""PCT, popularity calibration: each user's list should hold head / mid / tail items in the
shares of the user's own history (Steck 2018's calibrated re-ranking, with popularity
groups in place of genres and the Jensen-Shannon divergence of Abdollahpouri et al. 2021).

Greedy over k positions, among the user's top ``n_candidates`` items by SASRec's score:

    add argmax_i (1 - lam) * r_i - lam * JS(P_user, Q(list + i))

r_i is the score min-max scaled to [0, 1] over the user's candidates (SASRec's raw scores
have no fixed scale), P_user the (head, mid, tail) shares of the history, Q the list's
shares, JS in base 2 (within [0, 1]). ``lam = 0`` is SASRec's top-k.
"""

from __future__ import annotations

import torch

from popsteer.baselines.common import Baseline, RerankContext, finite_topk
from popsteer.baselines.extension import toward
from popsteer.errors import PopSteerError

GRID = tuple({"lam": lam} for lam in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9))
N_CANDIDATES = 100


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (base 2) along the last axis; 0 log 0 = 0. (..., G) -> (...)."""
    mix = (p + q) / 2

    def kl(a: torch.Tensor) -> torch.Tensor:
        return torch.where(a > 0, a * torch.log2(a / mix.clamp_min(1e-300)), torch.zeros_like(a)).sum(-1)

    return (kl(p) + kl(q)) / 2


def calibrated_rerank(scores: torch.Tensor, ctx: RerankContext, k: int, lam: float,
                      n_candidates: int = N_CANDIDATES) -> torch.Tensor:
    """Greedy popularity-calibrated top-k. scores (U, n_items), padding at -inf -> (U, k)."""
    if not 0 <= lam <= 1:
        raise PopSteerError(f"calibration lambda must be in [0, 1], got {lam}")
    vals, cand = finite_topk(scores, max(n_candidates, k))  # (U, m), best first
    vals = vals.double()
    finite = vals > -torch.inf
    lo = torch.where(finite, vals, torch.inf).min(1, keepdim=True).values
    hi = vals[:, :1]
    rel = torch.where(finite, (vals - lo) / (hi - lo).clamp_min(1e-12), 0.0)  # (U, m) in [0, 1]
    group = (torch.as_tensor(ctx.groups.label())[cand] - 1).clamp_min(0)  # (U, m): 0 head, 1 mid, 2 tail
    target = torch.as_tensor(ctx.history, dtype=torch.float64)  # (U, 3)
    counts = torch.zeros_like(target)  # (U, 3) groups of the items chosen so far
    taken = ~finite  # (U, m) unavailable
    picks = []
    eye = torch.eye(3, dtype=torch.float64)
    for t in range(k):
        q_if = (counts[:, None, :] + eye[None]) / (t + 1)  # (U, 3 groups added, 3 shares)
        js_if = js_divergence(target[:, None, :], q_if)  # (U, 3)
        gain = (1 - lam) * rel - lam * js_if.gather(1, group)  # (U, m)
        j = gain.masked_fill(taken, -torch.inf).argmax(1)  # (U,)
        picks.append(cand.gather(1, j[:, None]))
        taken = taken.scatter(1, j[:, None], True)
        counts = counts + eye[group.gather(1, j[:, None]).squeeze(1)]
    return torch.cat(picks, 1)


EXTENSION = tuple({"lam": lam} for lam in (0.95, 0.99, 1.0))
"""Grid extension toward the bound lam = 1 (the score ignored: the most calibrated list)."""

PCT = Baseline("pct", "PCT", calibrated_rerank, GRID, {"lam": "λ"}, extend=toward(EXTENSION))
