"""The steering grid: every (N, alpha) point scored on cached pre-activations, and the
validation-tuned pick (METHOD.md section 4).

Users are encoded once; the SAE pre-activations h (U, n) are cached; a grid point is a
cheap shift of h, then ReLU/TopK, decode, and a top-k over the item table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from popsteer.evaluate import Evaluator
from popsteer.steering import NeuronScores, steered_reconstruction, steering_delta

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
                  scores: NeuronScores, points: list[GridPoint], swap_sigma: bool = False) -> list[dict]:
    """One metric row per grid point. h: (U, n) cached pre-activations of the split's users."""
    rows = []
    for p in tqdm(points, desc="steering grid", leave=False, disable=None):
        x_hat = steered_reconstruction(sae, h, steering_delta(scores, p.num_neurons, p.alpha, swap_sigma))
        rows.append({"num_neurons": p.num_neurons, "alpha": p.alpha, **evaluator(x_hat, item_emb)})
    return rows


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
