"""Score a re-ranker's grid on a split and tune it on validation with PopSteer's rule
(``popsteer.steering.grid.pick_point``: max relative Gini drop minus relative NDCG drop, NDCG drop
<= 5% against SASRec on validation); the pick is reported on test.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from popsteer.baselines.common import Baseline, RerankContext, split_context
from popsteer.data import SequenceData
from popsteer.eval.evaluator import Evaluator, full_scores
from popsteer.eval.tradeoff import pick_with_fallback, tradeoff
from popsteer.util.progress import progress

log = logging.getLogger(__name__)


@dataclass
class ScoredSplit:
    """What re-ranking one split needs: SASRec's user representations and item table, the
    split's evaluator and the re-rankers' context."""

    x: torch.Tensor  # (U, d) SASRec user representations
    item_emb: torch.Tensor  # (n_items, d), row 0 = padding
    evaluator: Evaluator
    ctx: RerankContext

    @classmethod
    def of(cls, x: torch.Tensor, item_emb: torch.Tensor, evaluator: Evaluator, data: SequenceData,
           split: str) -> "ScoredSplit":
        return cls(x, item_emb, evaluator, split_context(data, split, evaluator.groups))


def rerank_split(baseline: Baseline, params: dict, split: ScoredSplit, batch_size: int = 1024) -> np.ndarray:
    """Re-ranked top-k of every user of the split, (U, k) int64, scored in user batches."""
    out = []
    k = split.evaluator.k
    with torch.no_grad():
        for s in range(0, split.x.shape[0], batch_size):
            ev = split.evaluator
            scores = full_scores(split.x[s : s + batch_size], split.item_emb, ev.bias, ev.exclude, s)  # (B, n_items)
            out.append(baseline.rerank(scores, split.ctx.rows(slice(s, s + batch_size)), k, **params))
    return torch.cat(out).numpy()


def evaluate_baseline_grid(baseline: Baseline, split: ScoredSplit, grid: tuple[dict, ...] | None = None) -> list[dict]:
    """One metric row per grid point: ``{**params, **metrics}``."""
    return [{**params, **split.evaluator.metrics_of_topk(rerank_split(baseline, params, split))}
            for params in progress(baseline.grid if grid is None else grid, desc=f"{baseline.name} grid", unit="point",
                                   leave=False)]


def tune_baseline(baseline: Baseline, valid: ScoredSplit, test: ScoredSplit, base_valid: dict,
                  grid: tuple[dict, ...] | None = None, max_ndcg_drop: float = 0.05) -> dict:
    """Every grid point on validation and test; the validation pick and its test metrics.

    Returns ``{"name", "label", "grid", "valid_rows", "test_rows", "pick", "params",
    "within_limit", "test"}``.
    """
    grid = baseline.grid if grid is None else grid
    valid_rows = evaluate_baseline_grid(baseline, valid, grid)
    test_rows = evaluate_baseline_grid(baseline, test, grid)
    idx, within = pick_with_fallback(valid_rows, base_valid, max_ndcg_drop)
    gini_drop, ndcg_drop = tradeoff(valid_rows[idx], base_valid)
    log.info("%s tuned on valid: %s (Gini drop %.1f%%, NDCG drop %.1f%%%s)", baseline.label,
             baseline.describe(grid[idx]), 100 * gini_drop, 100 * ndcg_drop,
             "" if within else f"; no point within {100 * max_ndcg_drop:g}%")
    return {"name": baseline.name, "label": baseline.label, "grid": list(grid), "valid_rows": valid_rows,
            "test_rows": test_rows, "pick": idx, "params": dict(grid[idx]), "within_limit": within,
            "test": {k: v for k, v in test_rows[idx].items() if k not in grid[idx]}}
