"""The oracle bound of query-side methods: how close a per-user shift of the query can get to given lists.

A query-side method (steering, PPD, SPREE) ranks with ``s_u = x'_u E^T + b`` for one vector
``x'_u`` in R^d per user. P-MMF instead boosts each item on its own with a running exposure state.
To tell a limit of our method from a limit of every query-side method, each user's query is fitted
freely (no SAE, no shared parameter, the target lists known) to reproduce a re-ranker's list ``L_u``:

    x'_u = argmin_x  - (1/k) sum_{i in L_u} log softmax(x E^T / T + b / T)_i        (start: x_u)

by Adam over all users at once (``steps`` steps). The lists ranked by the fitted x' are what an
oracle shift reaches; their metrics and the share of ``L_u`` they recover bound what any per-user
query shift can do when it aims at the re-ranker's lists. It is an estimate from one optimiser
run, so it under-states the true bound wherever the fit stops short (the recovered share says by
how much). Hand-written: a per-user least-squares shift would ignore the ranking, and no library
fits queries to target rankings.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.nn.functional as F

from popsteer.eval.evaluator import rank_topk

log = logging.getLogger(__name__)


def fit_shifts(x: torch.Tensor, item_emb: torch.Tensor, lists: np.ndarray, bias: torch.Tensor | None = None,
               steps: int = 200, lr: float = 0.05, temperature: float = 0.1, batch: int = 2048,
               exclude: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Fitted queries x' (U, d) and their top-k lists (U, k) for target lists ``lists`` (U, k).

    x: (U, d) the model's queries; item_emb: (n_items, d), row 0 padding; bias: (n_items,) or None;
    exclude: a general model's CSR of items never ranked (as ``rank_topk``)."""
    t0 = time.perf_counter()
    emb = item_emb.detach().float()
    col_bias = torch.zeros(len(emb)) if bias is None else bias.detach().float().clone()
    col_bias[0] = -float("inf")
    target = torch.from_numpy(np.ascontiguousarray(lists)).long()  # (U, k)
    out = []
    for s in range(0, len(x), batch):
        q = x[s : s + batch].detach().clone().float().requires_grad_(True)  # (B, d)
        opt = torch.optim.Adam([q], lr=lr)
        tb = target[s : s + batch]
        for _ in range(steps):
            logp = F.log_softmax((q @ emb.T + col_bias) / temperature, dim=1)  # (B, n_items)
            loss = -logp.gather(1, tb).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out.append(q.detach())
    fitted = torch.cat(out)
    k = lists.shape[1]
    ranked = rank_topk(fitted, emb, k, bias=None if bias is None else bias, exclude=exclude).numpy()
    log.info("oracle shifts: %d users, %d steps in %.1f s, %.1f%% of the target items recovered", len(x), steps,
             time.perf_counter() - t0, 100 * recovered(ranked, lists))
    return fitted, ranked


def recovered(ranked: np.ndarray, lists: np.ndarray) -> float:
    """Mean share of each target list's items that the ranked list holds (any order)."""
    hits = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ranked, lists)]
    return float(np.mean(hits) / lists.shape[1]) if len(hits) else 0.0
