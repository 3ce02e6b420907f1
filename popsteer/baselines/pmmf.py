"""P-MMF (Xu et al., WWW 2023, "P-MMF: Provider Max-min Fairness Re-ranking in Recommender
System"): online re-ranking by dual mirror descent on a provider max-min fairness objective.

No maintained package implements it; written here from the paper's description. Providers
(``providers=``): every item its own provider (``"items"``, the default), or the popularity
groups head / mid / tail (``"groups"``, as PCT and FA*IR use them), each weighted by its share
of the catalogue ``w_p = n_p / n`` (items: 1 / n). Users arrive one by one in the split's row
order, each gets a set x_t of K items, and with ``e = (1/T) sum_t A^T x_t`` (the per-user exposure
of each provider, A the item-provider matrix) the primal is

    max  (1/T) sum_t s_t^T x_t + lam * min_p e_p / (K w_p)             (0 <= e_p <= K)

(min = 1: every provider exposed in proportion to its size). Its dual over mu (one per provider)
is ``(1/T) sum_t max_x (s_t - A mu)^T x + r*(mu)``, the conjugate
``r*(mu) = max_{0<=e<=K} lam min_p e_p/(K w_p) + mu^T e = (lam + K sum_p w_p mu_p) / w_max`` on
``M = {mu <= 0, -K sum_p w_p mu_p <= lam}`` (mu_p > 0 only raises the dual: its slope K - c_p >= 0).
The paper's online algorithm takes, for user t,

    x_t = top-K of s_t,i - mu_p(i)                    (a boost -mu_p >= 0 per provider)
    g_t = grad r*(mu_t) - A^T x_t = K w / w_max - c_t      (c_t: x_t's items per provider)
    mu_{t+1} = argmin_{mu in M} g_t^T mu + (1/eta) V_h(mu, mu_t),  h(mu) = 1/2 sum_p (K w_p mu_p)^2

In ``nu_p = -K w_p mu_p`` (the boost budget spent on provider p) the step is a Euclidean
projection onto the capped simplex (``project_budget``):

    nu <- Proj_{nu >= 0, sum nu <= lam}(nu + eta (1 / w_max - c_t / (K w_p))),   boost_p = nu_p / (K w_p)

With items as providers the budget goes to the items recommended least so far (an online
exposure penalty); with the three groups it moves exposure between the groups only, which on
ml-100k left Gini@10 above 0.94 for any lam (the boosted tail's exposure stays on its few
best-scored items), hence items by default. Choices the paper leaves open or sets otherwise:

- the paper's weight vector also caps each provider's exposure; here the cap is the trivial K
  per list, so lam (with eta) is the only pull away from the base ranking: lam = 0 or eta = 0 is
  the model's own top-k exactly (a cap at the fair share would cut the head to it for every lam);
- x_t is a set (the paper's 0/1 decision); the list is ordered by the model's own score;
- nu starts at 0 on each split and carries over from user to user (and across the user batches of
  ``rerank_split``: ``stateful``), so a user's list depends on the users before it, not on batching;
- ties at the K-th place of ``s + boost`` fall as numpy's ``argpartition`` puts them (deterministic).
"""

from __future__ import annotations

import numpy as np
import torch

from popsteer.baselines.common import Baseline, RerankContext, finite_topk
from popsteer.baselines.extension import grow
from popsteer.errors import PopSteerError

GRID = tuple({"lam": lam, "eta": eta} for lam in (1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0, 10.0) for eta in (1e-4, 1e-3, 1e-2))
"""The reference's ranges (lam 1e-3..10, eta 1e-4..1e-2), lam outer: the last point is the strongest."""
CAP = 1e4
"""Largest lam a grid extension reaches (doubling from 10, at the grid's largest eta)."""


def project_budget(v: np.ndarray, lam: float) -> np.ndarray:
    """Euclidean projection of v (P,) onto ``{nu >= 0, sum nu <= lam}``: ``max(v - theta, 0)``, theta >= 0."""
    pos = np.maximum(v, 0.0)
    if lam <= 0:
        return np.zeros_like(pos)
    if pos.sum() <= lam:
        return pos
    srt = np.sort(v)[::-1]  # (P,) descending
    css = np.cumsum(srt) - lam
    j = np.flatnonzero(srt - css / np.arange(1, len(v) + 1) > 0)[-1]  # the support's size - 1
    return np.maximum(v - css[j] / (j + 1), 0.0)


def provider_weights(ctx: RerankContext, providers: str) -> tuple[np.ndarray, np.ndarray]:
    """(provider of each item (n_items,) in 0..P-1, -1 for padding; weights w (P,), summing to 1)."""
    label = ctx.groups.label()  # (n_items,) 1 head, 2 mid, 3 tail, 0 padding
    if providers == "items":
        n = len(label) - 1
        return np.r_[-1, np.arange(n)].astype(np.int64), np.full(n, 1.0 / n)
    if providers != "groups":
        raise PopSteerError(f"P-MMF providers must be 'items' or 'groups', got {providers!r}")
    sizes = np.bincount(label, minlength=4)[1:].astype(np.float64)  # (3,)
    kept = np.flatnonzero(sizes > 0)
    remap = np.full(4, -1, dtype=np.int64)
    remap[kept + 1] = np.arange(len(kept))
    return remap[label], sizes[kept] / sizes[kept].sum()


def group_candidates(scores: torch.Tensor, provider: np.ndarray, n_providers: int,
                     k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each provider's top-k items by score, side by side: every top-k of ``s + boost[provider]``
    lies among them. Returns (values, item ids, provider) each (U, C); a provider with fewer
    than k items pads with provider -1 (never picked before a real candidate)."""
    prov = torch.as_tensor(provider)
    vals, ids, owner = [], [], []
    for p in range(n_providers):
        v, i = finite_topk(scores.masked_fill(prov[None, :] != p, -torch.inf), k)  # (U, k')
        vals.append(v)
        ids.append(i)
        owner.append(torch.where(prov[i] == p, p, -1))
    return torch.cat(vals, 1).numpy(), torch.cat(ids, 1).numpy(), torch.cat(owner, 1).numpy()


def pmmf_rerank(scores: torch.Tensor, ctx: RerankContext, k: int, lam: float, eta: float,
                state: np.ndarray | None = None, providers: str = "items") -> tuple[torch.Tensor, np.ndarray]:
    """P-MMF over the batch's users in row order. scores (U, n_items), padding at -inf.

    ``state``: the budget nu (P,) left by the previous batch (None: start at 0).
    Returns ((U, k) item ids, nu after the batch's last user).
    """
    if not (lam >= 0 and np.isfinite(lam) and eta >= 0 and np.isfinite(eta)):
        raise PopSteerError(f"P-MMF needs finite lambda >= 0 and eta >= 0, got lambda={lam}, eta={eta}")
    provider, w = provider_weights(ctx, providers)
    P = len(w)
    nu = np.zeros(P) if state is None else np.asarray(state, dtype=np.float64).copy()
    if providers == "groups":
        vals, ids, owner = group_candidates(scores, provider, P, k)  # (U, C) each, C = P k
    else:  # every item a candidate: one row of ids / owners for all users
        vals, ids, owner = scores.numpy(), np.arange(len(provider))[None, :], provider[None, :]
    out = np.empty((len(vals), min(k, vals.shape[1])), dtype=np.int64)
    target = 1.0 / w.max()  # the gradient's constant term, relative to K w_p
    scale = k * w  # (P,) boost_p = nu_p / (K w_p)
    for t in range(len(vals)):
        v, i, o = vals[t].astype(np.float64), ids[min(t, len(ids) - 1)], owner[min(t, len(owner) - 1)]  # (C,)
        boost = np.append(nu / scale, 0.0)[o]  # (C,): provider -1 (padding) gets the appended 0
        key = np.where(o >= 0, -(v + boost), np.nan)  # NaN sorts after everything, -inf scores included
        pick = np.argpartition(key, k - 1)[:k] if len(key) > k else np.arange(len(key))  # the top-k set
        order = pick[np.lexsort((i[pick], -v[pick]))]  # listed by the model's score, ties by item id
        out[t] = i[order]
        picked = o[pick]
        counts = np.bincount(picked[picked >= 0], minlength=P)  # (P,) c_t
        nu = project_budget(nu + eta * (target - counts / scale), lam)
    return torch.as_tensor(out), nu


PMMF = Baseline("pmmf", "P-MMF", pmmf_rerank, GRID, {"lam": "λ", "eta": "η"}, extend=grow("lam", 2.0, CAP),
                stateful=True)
