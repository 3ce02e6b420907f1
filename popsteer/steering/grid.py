"""The steering grid: every (N, alpha) point scored on cached pre-activations (docs/METHOD.md §4).

Users are encoded once; the SAE pre-activations h (U, n) are cached; a grid point is a
cheap shift of h, then ReLU/TopK, decode, and a top-k over the item table. Every point is
evaluated on a small chunk of users before the next chunk, so the working set stays in
cache and h is read once per chunk, not once per point. All points of a chunk share the
candidate columns of their TopK (``popsteer.steering.candidates``), and the decode is sparse.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from popsteer.eval.evaluator import Evaluator, rank_topk, repeat_csr
from popsteer.steering.candidates import CandidateTopK
from popsteer.util.progress import progress
from popsteer.steering.steer import (NeuronScores, preserve_error, steer_preactivations, steered_reconstruction,
                                     steering_delta, unsteered_decode)
from popsteer.sae.topk import topk_relu_sparse


DEFAULT_NS = tuple(range(512, 4097, 512))
DEFAULT_ALPHAS = tuple(np.arange(1.0, 4.01, 0.5).round(2).tolist())


@dataclass(frozen=True)
class GridPoint:
    num_neurons: int
    alpha: float
    """The strength of every steered neuron, or of the popular (suppressed) ones when ``alpha_unpop`` is set."""
    alpha_unpop: float | None = None
    """The unpopular (boosted) neurons' strength; None: ``alpha``."""

    def params(self) -> dict:
        """The point's columns in a results row (``alpha_unpop`` only on a two-strength grid)."""
        out = {"num_neurons": self.num_neurons, "alpha": self.alpha}
        if self.alpha_unpop is not None:
            out["alpha_unpop"] = self.alpha_unpop
        return out


@contextmanager
def single_threaded_torch():
    """torch's intra-op threads set to 1 for the block (our own threads share the cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def grid_points(n_hidden: int, ns=DEFAULT_NS, alphas=DEFAULT_ALPHAS, alpha_unpops=None) -> list[GridPoint]:
    """The docs/METHOD.md grid, N capped at the SAE's hidden size (duplicates dropped); with
    ``alpha_unpops``, N x alpha (popular neurons) x alpha_unpop (unpopular neurons)."""
    capped = sorted({min(int(n), n_hidden) for n in ns})
    if alpha_unpops is None:
        return [GridPoint(n, float(a)) for n in capped for a in alphas]
    return [GridPoint(n, float(a), float(b)) for n in capped for a in alphas for b in alpha_unpops]


def grid_topk(sae: torch.nn.Module, h: torch.Tensor, item_emb: torch.Tensor, k: int, deltas: torch.Tensor,
              user_chunk: int = 256, workers: int | None = None, bias: torch.Tensor | None = None,
              exclude: tuple[np.ndarray, np.ndarray] | None = None, x: torch.Tensor | None = None) -> np.ndarray:
    """Every point's top-k lists, (P, U, k) int32. h: (U, n) cached pre-activations; deltas: (P, n).
    With ``x`` (U, d), the users' representations, the error-preserving variant is scored:
    ``x + (decode(steer(h)) - decode(h))`` (``popsteer.steering.steer.preserve_error``).

    Batched: users are taken ``user_chunk`` at a time and every point is evaluated on the
    chunk before moving on, so the chunk's pre-activations, codes, reconstructions and item
    scores stay in cache; only each point's (U, k) top-k lists are kept. Chunks are shared
    among ``workers`` threads (default: torch's thread count), each running torch
    single-threaded: most per-chunk ops are too small for torch's own intra-op threads.
    A user's lists depend on its own row only, so any split of the users into shards gives
    the same lists (exactly ``evaluate_point``'s: same ops per row, in the same order).
    ``bias`` and ``exclude`` (CSR over the users of h) are ``rank_topk``'s.
    """
    n_users, P = h.shape[0], deltas.shape[0]
    topk = np.empty((P, n_users, k), dtype=np.int32)  # (P, U, k) item ids
    if P == 0 or n_users == 0:
        return topk
    starts = list(range(0, n_users, user_chunk))

    def chunk(s: int) -> None:
        with torch.no_grad():
            hc = h[s : s + user_chunk]  # (C, n)
            if P == 1:  # nothing to share: the plain top-k (as evaluate_point)
                values, indices = topk_relu_sparse(steer_preactivations(hc, deltas[0]), sae.k)  # (C, K)
            else:  # every point ranks only the chunk's candidate columns
                values, indices = CandidateTopK(hc, deltas, sae.k)(deltas)  # (P, C, K)
            values, indices = values.reshape(-1, sae.k), indices.reshape(-1, sae.k)  # (P C, K)
            if x is None:
                x_hat = sae.decode_sparse(values, indices)  # (P C, d)
            else:
                x0 = unsteered_decode(sae, hc)  # (C, d), once per chunk for all P points
                x_hat = preserve_error(sae, x[s : s + user_chunk].repeat(P, 1), values, indices, x0.repeat(P, 1))
            ex = None if exclude is None else repeat_csr(exclude, s, s + len(hc), P)  # rows (P C)
            topk[:, s : s + user_chunk] = rank_topk(x_hat, item_emb, k, bias=bias, exclude=ex).numpy().reshape(
                P, len(hc), k)

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
    return topk


def point_deltas(scores: NeuronScores, points: list[GridPoint], swap_sigma: bool = False) -> torch.Tensor:
    """Eq. 4's shift of the pre-activations at every point, (P, n) float32."""
    if not points:
        return torch.zeros((0, len(scores.d)), dtype=torch.float32)
    return torch.stack([steering_delta(scores, p.num_neurons, p.alpha, swap_sigma, p.alpha_unpop) for p in points])


def score_users(sae: torch.nn.Module, x: torch.Tensor, item_emb: torch.Tensor, k: int, deltas: torch.Tensor,
                workers: int | None = None, bias: torch.Tensor | None = None,
                exclude: tuple[np.ndarray, np.ndarray] | None = None, preserve: bool = False) -> dict[str, np.ndarray]:
    """The grid's work on one shard of users x (U, d): the top-k lists of the recommender itself
    (``sasrec``, (U, k)), of the unsteered SAE reconstruction (``sae``, (U, k)) and of every
    steered point (``points``, (P, U, k)). Metrics come after the shards are put together.
    ``exclude``: CSR over the users of x; ``preserve``: the error-preserving variant."""
    with torch.no_grad():
        h = sae.preact(x)  # (U, n)
        recon = sae.decode(sae.encode(h))  # (U, d)
        return {"sasrec": rank_topk(x, item_emb, k, bias=bias, exclude=exclude).numpy().astype(np.int32),
                "sae": rank_topk(recon, item_emb, k, bias=bias, exclude=exclude).numpy().astype(np.int32),
                "points": grid_topk(sae, h, item_emb, k, deltas, workers=workers, bias=bias, exclude=exclude,
                                    x=x if preserve else None)}


def evaluate_grid(sae: torch.nn.Module, h: torch.Tensor, item_emb: torch.Tensor, evaluator: Evaluator,
                  scores: NeuronScores, points: list[GridPoint], swap_sigma: bool = False,
                  user_chunk: int = 256, workers: int | None = None, x: torch.Tensor | None = None) -> list[dict]:
    """One metric row per grid point over all users of h (U, n); ``x`` (U, d): error-preserving."""
    topk = grid_topk(sae, h, item_emb, evaluator.k, point_deltas(scores, points, swap_sigma), user_chunk, workers,
                     evaluator.bias, evaluator.exclude, x)
    return [{**p.params(), **evaluator.metrics_of_topk(topk[i])} for i, p in enumerate(points)]


def evaluate_point(sae: torch.nn.Module, h: torch.Tensor, item_emb: torch.Tensor, evaluator: Evaluator,
                   scores: NeuronScores, point: GridPoint, swap_sigma: bool = False,
                   x: torch.Tensor | None = None) -> dict:
    """One grid point the straightforward way: reconstruct every user, then score (the reference).
    ``x`` (U, d): the error-preserving variant."""
    delta = steering_delta(scores, point.num_neurons, point.alpha, swap_sigma, point.alpha_unpop)
    return {**point.params(), **evaluator(steered_reconstruction(sae, h, delta, x=x), item_emb)}
