"""The steering grid: every (N, alpha) point scored on cached pre-activations, and the
validation-tuned pick (METHOD.md section 4).

Users are encoded once; the SAE pre-activations h (U, n) are cached; a grid point is a
cheap shift of h, then ReLU/TopK, decode, and a top-k over the item table. Every point is
evaluated on a small chunk of users before the next chunk, so the working set stays in
cache and h is read once per chunk, not once per point. All points of a chunk share the
candidate columns of their TopK (``popsteer.steering.candidates``), and the decode is sparse.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from popsteer.eval.evaluator import Evaluator
from popsteer.steering.candidates import CandidateTopK
from popsteer.util.progress import progress
from popsteer.steering.steer import NeuronScores, steer_preactivations, steered_reconstruction, steering_delta
from popsteer.sae.topk import topk_relu_sparse

log = logging.getLogger(__name__)

DEFAULT_NS = tuple(range(512, 4097, 512))
DEFAULT_ALPHAS = tuple(np.arange(1.0, 4.01, 0.5).round(2).tolist())


@dataclass(frozen=True)
class GridPoint:
    num_neurons: int
    alpha: float


@contextmanager
def single_threaded_torch():
    """torch's intra-op threads set to 1 for the block (our own threads share the cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def grid_points(n_hidden: int, ns=DEFAULT_NS, alphas=DEFAULT_ALPHAS) -> list[GridPoint]:
    """The METHOD.md grid, N capped at the SAE's hidden size (duplicates dropped)."""
    capped = sorted({min(int(n), n_hidden) for n in ns})
    return [GridPoint(n, float(a)) for n in capped for a in alphas]


def evaluate_grid(sae: torch.nn.Module, h: torch.Tensor, item_emb: torch.Tensor, evaluator: Evaluator,
                  scores: NeuronScores, points: list[GridPoint], swap_sigma: bool = False,
                  user_chunk: int = 256, workers: int | None = None) -> list[dict]:
    """One metric row per grid point. h: (U, n) cached pre-activations of the split's users.

    Batched: users are taken ``user_chunk`` at a time and every grid point is evaluated on
    the chunk before moving on, so the chunk's pre-activations, codes, reconstructions and
    item scores stay in cache; only each point's (U, k) top-k lists are kept. Chunks are
    shared among ``workers`` threads (default: torch's thread count), each running torch
    single-threaded: most per-chunk ops are too small for torch's own intra-op threads.
    The result is exactly ``evaluate_point`` for every point (same ops per row, in the same
    order).
    """
    if not points:
        return []
    deltas = torch.stack([steering_delta(scores, p.num_neurons, p.alpha, swap_sigma) for p in points])  # (P, n)
    n_users, k, P = h.shape[0], evaluator.k, len(points)
    topk = np.empty((P, n_users, k), dtype=np.int32)  # (P, U, k) item ids
    starts = list(range(0, n_users, user_chunk))

    def chunk(s: int) -> None:
        with torch.no_grad():
            hc = h[s : s + user_chunk]  # (C, n)
            if P == 1:  # nothing to share: the plain top-k (as evaluate_point)
                values, indices = topk_relu_sparse(steer_preactivations(hc, deltas[0]), sae.k)  # (C, K)
            else:  # every point ranks only the chunk's candidate columns
                values, indices = CandidateTopK(hc, deltas, sae.k)(deltas)  # (P, C, K)
            x_hat = sae.decode_sparse(values.reshape(-1, sae.k), indices.reshape(-1, sae.k))  # (P C, d)
            topk[:, s : s + user_chunk] = evaluator.topk(x_hat, item_emb).reshape(P, len(hc), k)

    workers = max(1, min(workers or torch.get_num_threads(), len(starts)))
    bar = progress(total=len(starts), desc="steering grid", unit="chunk", leave=False)
    if workers == 1:
        for s in starts:
            chunk(s)
            bar.update()
    else:
        with single_threaded_torch(), ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(chunk, starts):
                bar.update()
    bar.close()
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
