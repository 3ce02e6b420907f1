"""The oracle bound in a report section: P-MMF's lists as far as a free per-user query shift reproduces them.

For the points of P-MMF's test grid on its Pareto front (NDCG@10 against 1 - Gini@10, at most
``MAX_POINTS``, spread along it), the query of every test user is fitted to P-MMF's list
(``popsteer.steering.oracle.fit_shifts``); the set each fitted query ranks, ordered by the model's own
score as P-MMF orders its set, is scored like any method (a recovered set is P-MMF's list exactly). Their test hypervolume, beside P-MMF's over the same points, says how much of P-MMF's lead
any query-side method could take: the oracle knows each user's P-MMF list, which no steering does.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from popsteer.baselines.pmmf import PMMF
from popsteer.baselines.tuning import ScoredSplit, rerank_split
from popsteer.eval.tradeoff import hv_reference, hypervolume
from popsteer.steering.oracle import fit_shifts, recovered

log = logging.getLogger(__name__)

MAX_POINTS = 8


def by_model_score(lists: np.ndarray, x: torch.Tensor, item_emb: torch.Tensor, bias: torch.Tensor | None) -> np.ndarray:
    """Each row's items (U, k) ordered by the model's own score ``x E^T (+ b)``, best first: how P-MMF lists
    its set, so a recovered set is P-MMF's list exactly."""
    idx = torch.from_numpy(np.ascontiguousarray(lists)).long()  # (U, k)
    scores = torch.einsum("ud,ukd->uk", x.float(), item_emb.float()[idx])  # (U, k)
    if bias is not None:
        scores = scores + bias.float()[idx]
    order = torch.argsort(-scores, dim=1, stable=True)
    return np.take_along_axis(lists, order.numpy(), axis=1)


def front(rows: list[dict], limit: int = MAX_POINTS) -> list[int]:
    """Indices of the rows on the (NDCG@10 up, Gini@10 down) Pareto front, at most ``limit``, spread evenly."""
    idx = [i for i, r in enumerate(rows) if not any(
        o["ndcg@10"] >= r["ndcg@10"] and o["gini@10"] <= r["gini@10"] and
        (o["ndcg@10"] > r["ndcg@10"] or o["gini@10"] < r["gini@10"]) for o in rows)]
    idx.sort(key=lambda i: rows[i]["gini@10"])
    if len(idx) > limit:
        idx = [idx[j] for j in np.linspace(0, len(idx) - 1, limit).round().astype(int)]
    return idx


def oracle_bound(pmmf: dict, test: ScoredSplit, base_test: dict, steps: int = 200) -> dict:
    """{"points": [{params, P-MMF's metrics, the oracle's metrics, recovered}], "hv_oracle", "hv_pmmf_points",
    "hv_pmmf", "recovered"} on test; ``pmmf``: P-MMF's method record in full ranking."""
    ref = hv_reference(base_test)
    ev = test.evaluator
    points = []
    for i in front(pmmf["test_rows"]):
        params = pmmf["grid"][i]
        target = rerank_split(PMMF, params, test)  # (U, k)
        _, found = fit_shifts(test.x, test.item_emb, target, ev.bias, steps=steps, exclude=ev.exclude)
        ranked = by_model_score(found, test.x, test.item_emb, ev.bias)  # the set in P-MMF's own order
        points.append({"params": dict(params), "pmmf": pmmf["test_rows"][i], "oracle": ev.metrics_of_topk(ranked),
                       "recovered": recovered(ranked, target)})
    out = {"points": points, "hv_oracle": hypervolume([p["oracle"] for p in points], ref),
           "hv_pmmf_points": hypervolume([p["pmmf"] for p in points], ref),
           "hv_pmmf": hypervolume(pmmf["test_rows"], ref),
           "recovered": float(np.mean([p["recovered"] for p in points])) if points else float("nan")}
    log.info("oracle query shifts: test HV %.3fe-3 against P-MMF's %.3fe-3 on the same %d points (%.1f%% of its items)",
             1e3 * out["hv_oracle"], 1e3 * out["hv_pmmf_points"], len(points), 100 * out["recovered"])
    return out
