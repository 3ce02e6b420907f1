"""Linear steering along a popularity direction in x-space: PPD and a SPREE-like steering.

No maintained package implements either; both are written here from the published
descriptions (docs/METHOD.md §6). The direction is the difference of the mean representations
of a popular and an unpopular probe group (the model's default probe; the stage picks them,
``popsteer.stages.baselines.probe_direction``), normalised:

    u = (mean x_pop - mean x_unpop) / ||mean x_pop - mean x_unpop||        (d,)

Both methods move each user's x along u only, and scores are linear in x
(``s = x E^T (+ b)``), so each is a re-ranker on the frozen model's scores given the per-user
projection ``x . u`` and the per-item projection ``E u`` (``RerankContext.xu`` / ``.eu``):

- **PPD**, popularity-direction projection (arXiv 2510.12959): remove (lam = 1), shrink
  (lam < 1) or reverse (lam > 1) the component of x along u,
  ``x' = x - lam (x . u) u``, i.e. ``s' = s - lam (x . u) (E u)^T``.
- **SPREE-like** activation steering (arXiv 2604.01036): push every user against u by an
  amount proportional to the user's own popularity tendency,
  ``x' = x - beta t_u c u``, i.e. ``s' = s - beta t_u c (E u)^T``, with
  ``t_u`` = the head share of the user's history before the split's target
  (``RerankContext.history[:, 0]``, in [0, 1]; no target leakage) and ``c`` = the population SD of
  ``x . u`` over the split's users, so beta is unit-free (beta = 1: an all-head user moves by
  one SD of the projection).

lam = 0 / beta = 0 give the model's own top-k exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from popsteer.baselines.common import Baseline, RerankContext, finite_topk
from popsteer.baselines.extension import grow
from popsteer.errors import PopSteerError

PPD_GRID = tuple({"lam": v} for v in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0))
"""Dense around lam = 1 (the component removed), where the small ml-100k model's NDCG collapses soon after."""
SPREE_GRID = tuple({"beta": v} for v in (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0))
"""Wider than PPD's: t_u is a head share (ml-100k mean 0.25), so beta = 4 moves the mean user by ~1 SD."""
CAP = 1024.0
"""Largest strength a grid extension reaches (doubling from the grid's last)."""


def popularity_direction(x_popular: np.ndarray, x_unpopular: np.ndarray) -> np.ndarray:
    """Unit vector from the unpopular group's mean x to the popular group's. (P, d), (Q, d) -> (d,) float64."""
    if len(x_popular) == 0 or len(x_unpopular) == 0:
        raise PopSteerError("the popularity direction needs at least one popular and one unpopular probe row")
    diff = np.asarray(x_popular, np.float64).mean(0) - np.asarray(x_unpopular, np.float64).mean(0)  # (d,)
    norm = float(np.linalg.norm(diff))
    if not norm > 0:
        raise PopSteerError("the popular and unpopular probe groups have the same mean x: no popularity direction")
    return diff / norm


def with_direction(ctx: RerankContext, x: torch.Tensor, item_emb: torch.Tensor, u: np.ndarray) -> RerankContext:
    """``ctx`` with the projections on the unit direction u (d,): x (U, d) of the same users, item_emb (n_items, d)."""
    u64 = torch.as_tensor(np.asarray(u, np.float64))
    xu = (x.double() @ u64).numpy()  # (U,)
    eu = (item_emb.double() @ u64).numpy()  # (n_items,)
    return dataclasses.replace(ctx, xu=xu, eu=eu, xu_std=float(xu.std()) if len(xu) else 0.0)


def _shift(scores: torch.Tensor, ctx: RerankContext, per_user: np.ndarray, k: int) -> torch.Tensor:
    """Top-k of ``s - per_user[:, None] * (E u)[None, :]``. scores (U, n_items), per_user (U,) -> (U, k)."""
    if ctx.eu is None:
        raise PopSteerError("this re-ranker needs a popularity direction (RerankContext.xu / .eu)")
    shift = torch.as_tensor(per_user, dtype=scores.dtype)[:, None] * torch.as_tensor(ctx.eu, dtype=scores.dtype)
    return finite_topk(scores - shift, k).indices  # -inf stays -inf


def ppd_rerank(scores: torch.Tensor, ctx: RerankContext, k: int, lam: float) -> torch.Tensor:
    """Top-k of ``(x - lam (x.u) u) E^T (+ b)``. scores (U, n_items), padding at -inf -> (U, k)."""
    if not (lam >= 0 and np.isfinite(lam)):
        raise PopSteerError(f"PPD strength lambda must be a finite number >= 0, got {lam}")
    if lam == 0:
        return finite_topk(scores, k).indices
    if ctx.xu is None:
        raise PopSteerError("PPD needs a popularity direction (RerankContext.xu / .eu)")
    return _shift(scores, ctx, lam * ctx.xu, k)


def spree_rerank(scores: torch.Tensor, ctx: RerankContext, k: int, beta: float) -> torch.Tensor:
    """Top-k of ``(x - beta t_u c u) E^T (+ b)``, t_u the history's head share. (U, n_items) -> (U, k)."""
    if not (beta >= 0 and np.isfinite(beta)):
        raise PopSteerError(f"SPREE strength beta must be a finite number >= 0, got {beta}")
    if beta == 0:
        return finite_topk(scores, k).indices
    return _shift(scores, ctx, beta * ctx.xu_std * ctx.history[:, 0], k)


PPD = Baseline("ppd", "PPD", ppd_rerank, PPD_GRID, {"lam": "λ"}, extend=grow("lam", 2.0, CAP), query_side=True)
SPREE = Baseline("spree", "SPREE-like", spree_rerank, SPREE_GRID, {"beta": "β"}, extend=grow("beta", 2.0, CAP),
                 query_side=True)
