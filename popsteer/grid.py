"""The steering grid: every (N, alpha) point scored on cached pre-activations, and the
validation-tuned pick (METHOD.md section 4).

Users are encoded once; the SAE pre-activations h (U, n) are cached; a grid point is a
cheap shift of h, then ReLU/TopK, decode, and a top-k over the item table. Every point is
evaluated on a small chunk of users before the next chunk, so the working set stays in
cache and h is read once per chunk, not once per point. The points of one N share the
candidate columns of their TopK (``popsteer.grid_topk``), and the decode is sparse.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from popsteer.evaluate import Evaluator
from popsteer.grid_topk import CandidateTopK
from popsteer.progress import progress
from popsteer.steering import NeuronScores, steered_reconstruction, steering_delta
from popsteer.topk import topk_relu_sparse

log = logging.getLogger(__name__)

DEFAULT_NS = tuple(range(512, 4097, 512))
DEFAULT_ALPHAS = tuple(np.arange(1.0, 4.01, 0.5).round(2).tolist())


@dataclass(frozen=True)
class GridPoint:
    num_neurons: int
    alpha: float


def grid_points(n_hidden: int, ns=DEFAULT_NS, alphas=DEFAULT_ALPHAS) -> list[GridPoint]:
    """The METHOD.md grid, N capped at the SAE's hidden size (duplicates dropped)."""
    capped = sorted({min(int(n), n_hidden) for n in ns})
    return [GridPoint(n, float(a)) for n in capped for a in alphas]


def evaluate_grid(sae: torch.nn.Module, h: torch.Tensor, item_emb: torch.Tensor, evaluator: Evaluator,
                  scores: NeuronScores, points: list[GridPoint], swap_sigma: bool = False,
                  user_chunk: int = 256) -> list[dict]:
    """One metric row per grid point. h: (U, n) cached pre-activations of the split's users.

    Batched: users are taken ``user_chunk`` at a time and every grid point is evaluated on
    the chunk before moving on, so the chunk's pre-activations, codes, reconstructions and
    item scores stay in cache; only each point's (U, k) top-k lists are kept. The result is
    exactly ``evaluate_point`` for every point (same ops per row, in the same order).
    """
    if not points:
        return []
    deltas = torch.stack([steering_delta(scores, p.num_neurons, p.alpha, swap_sigma) for p in points])  # (P, n)
    groups: dict[int, list[int]] = {}  # N -> its points: one candidate set per chunk and N
    for i, p in enumerate(points):
        groups.setdefault(p.num_neurons, []).append(i)
    n_users, k = h.shape[0], evaluator.k
    topk = np.empty((len(points), n_users, k), dtype=np.int32)  # (P, U, k) item ids
    with torch.no_grad():
        for s in progress(range(0, n_users, user_chunk), desc="steering grid", unit="chunk", leave=False):
            hc = h[s : s + user_chunk]  # (C, n)
            for members in groups.values():
                if len(members) == 1:  # nothing to share: the plain top-k (as evaluate_point)
                    latents = lambda delta: topk_relu_sparse(hc + delta, sae.k)  # noqa: E731
                else:
                    latents = CandidateTopK(hc, deltas[members], sae.k)
                x_hat = torch.cat([sae.decode_sparse(*latents(deltas[i])) for i in members])  # (G C, d)
                items = evaluator.topk(x_hat, item_emb).reshape(len(members), len(hc), k)  # one scoring pass
                topk[members, s : s + user_chunk] = items
    return [{"num_neurons": p.num_neurons, "alpha": p.alpha, **evaluator.metrics_of_topk(topk[i])}
            for i, p in enumerate(points)]


def evaluate_point(sae: torch.nn.Module, h: torch.Tensor, item_emb: torch.Tensor, evaluator: Evaluator,
                   scores: NeuronScores, point: GridPoint, swap_sigma: bool = False) -> dict:
    """One grid point the straightforward way: reconstruct every user, then score (the reference)."""
    x_hat = steered_reconstruction(sae, h, steering_delta(scores, point.num_neurons, point.alpha, swap_sigma))
    return {"num_neurons": point.num_neurons, "alpha": point.alpha, **evaluator(x_hat, item_emb)}


def tradeoff(row: dict, base: dict, k: int = 10) -> tuple[float, float]:
    """(relative Gini drop, relative NDCG drop) of a row against the baseline."""
    g0, n0 = base[f"gini@{k}"], base[f"ndcg@{k}"]
    return (g0 - row[f"gini@{k}"]) / g0, (n0 - row[f"ndcg@{k}"]) / n0


def pick_point(rows: list[dict], base: dict, max_ndcg_drop: float = 0.05, k: int = 10) -> dict | None:
    """The row maximising relative Gini drop minus relative NDCG drop, with NDCG drop <= max_ndcg_drop.

    Returns None when no row satisfies the constraint.
    """
    best, best_score = None, -np.inf
    for row in rows:
        gini_drop, ndcg_drop = tradeoff(row, base, k)
        if ndcg_drop <= max_ndcg_drop and gini_drop - ndcg_drop > best_score:
            best, best_score = row, gini_drop - ndcg_drop
    return best
