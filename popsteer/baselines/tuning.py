"""Score a re-ranker's grid on a split and tune it on validation with PopSteer's rule
(``popsteer.steering.grid.pick_point``: max relative Gini drop minus relative NDCG drop, NDCG drop
<= 5% against SASRec on validation); the pick is reported on test.

Fair grids (``span_gini``): after its own grid, a method's grid is extended with stronger points
(``Baseline.extend``) until its validation Gini@10 reaches ``span_gini`` (PopSteer's lowest), its
validation NDCG@10 has fallen by ``MAX_SPAN_NDCG_DROP`` (50%) against the base, or the parameter's
bound is reached. Extended points are scored on both splits and are ordinary grid points.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from popsteer.baselines.common import Baseline, RerankContext, split_context
from popsteer.baselines.direction import with_direction
from popsteer.data import SequenceData
from popsteer.eval.evaluator import Evaluator, full_scores
from popsteer.kernels.native import row_topk
from popsteer.eval.tradeoff import MAX_NDCG_DROP, pick_with_fallback, tradeoff
from popsteer.util.progress import progress

log = logging.getLogger(__name__)


MAX_SPAN_NDCG_DROP = 0.5
"""A grid extension stops once a point's validation NDCG@10 is this much (relative) below the base's."""
MAX_EXTRA_POINTS = 32
"""A guard: no extension adds more points than this."""


@dataclass
class ScoredSplit:
    """What re-ranking one split needs: the model's user representations and item table, the
    split's evaluator and the re-rankers' context."""

    x: torch.Tensor  # (U, d) user representations
    item_emb: torch.Tensor  # (n_items, d), row 0 = padding
    evaluator: Evaluator
    ctx: RerankContext
    top_m: int | None = None
    """The serving setting: a re-ranker sees only the top-m items of x's own scores (the candidates a
    retrieval stage returns); every other item is -inf to it. None: the full ranking."""

    @classmethod
    def of(cls, x: torch.Tensor, item_emb: torch.Tensor, evaluator: Evaluator, data: SequenceData,
           split: str, direction: np.ndarray | None = None) -> "ScoredSplit":
        """``direction``: the unit popularity direction u (d,) the x-space methods need (PPD, SPREE)."""
        ctx = split_context(data, split, evaluator.groups)
        if direction is not None:
            ctx = with_direction(ctx, x, item_emb, direction)
        return cls(x, item_emb, evaluator, ctx)


def only_top_m(scores: torch.Tensor, m: int) -> torch.Tensor:
    """scores (B, n_items) with every item outside each row's top-m set to -inf (the row's candidates).

    Ties at the m-th place fall as ``rank_topk`` orders them (``torch.topk``), so the candidates are the
    base model's own top-m list."""
    if m >= scores.shape[1]:
        return scores
    idx = row_topk(scores, m)[1]  # (B, m), exactly torch.topk's
    out = torch.full_like(scores, -torch.inf)
    return out.scatter_(1, idx, scores.gather(1, idx))


def rerank_split(baseline: Baseline, params: dict, split: ScoredSplit, batch_size: int = 1024) -> np.ndarray:
    """Re-ranked top-k of every user of the split, (U, k) int64, scored in user batches (in row
    order; a stateful re-ranker's state is carried from one batch to the next)."""
    out = []
    k = split.evaluator.k
    state = None
    with torch.no_grad():
        for s in range(0, split.x.shape[0], batch_size):
            ev = split.evaluator
            scores = full_scores(split.x[s : s + batch_size], split.item_emb, ev.bias, ev.exclude, s)  # (B, n_items)
            if split.top_m is not None and not baseline.query_side:
                scores = only_top_m(scores, split.top_m)
            ctx = split.ctx.rows(slice(s, s + batch_size))
            if baseline.stateful:
                ids, state = baseline.rerank(scores, ctx, k, state=state, **params)
            else:
                ids = baseline.rerank(scores, ctx, k, **params)
            out.append(ids)
    return torch.cat(out).numpy()


def evaluate_baseline_grid(baseline: Baseline, split: ScoredSplit, grid: tuple[dict, ...] | None = None) -> list[dict]:
    """One metric row per grid point: ``{**params, **metrics}``."""
    return [{**params, **split.evaluator.metrics_of_topk(rerank_split(baseline, params, split))}
            for params in progress(baseline.grid if grid is None else grid, desc=f"{baseline.name} grid", unit="point",
                                   leave=False)]


def extend_grid(baseline: Baseline, valid: ScoredSplit, base_valid: dict, grid: list[dict], valid_rows: list[dict],
                span_gini: float) -> tuple[str, list[dict], list[dict]]:
    """Stronger points after ``grid`` until the span, the NDCG limit or the bound (module doc).

    Returns (why it stopped: "span", "ndcg", "bound" or "max_points"; the new points; their valid rows).
    """
    n_items = int(valid.item_emb.shape[0])
    points, rows = [], []
    while True:
        every = valid_rows + rows
        if min(r["gini@10"] for r in every) <= span_gini:
            return "span", points, rows
        if max(tradeoff(r, base_valid)[1] for r in every) >= MAX_SPAN_NDCG_DROP:
            return "ndcg", points, rows
        if len(points) >= MAX_EXTRA_POINTS:
            return "max_points", points, rows
        nxt = baseline.extend((points or grid)[-1], n_items) if baseline.extend is not None else None
        if nxt is None:
            return "bound", points, rows
        points.append(nxt)
        rows += evaluate_baseline_grid(baseline, valid, (nxt,))
        log.info("%s grid extended: %s (valid Gini@10 %.4f, NDCG@10 %.4f)", baseline.label, baseline.describe(nxt),
                 rows[-1]["gini@10"], rows[-1]["ndcg@10"])


def tune_baseline(baseline: Baseline, valid: ScoredSplit, test: ScoredSplit, base_valid: dict,
                  grid: tuple[dict, ...] | None = None, max_ndcg_drop: float = MAX_NDCG_DROP,
                  span_gini: float | None = None) -> dict:
    """Every grid point on validation and test; the validation pick and its test metrics.

    ``span_gini``: extend the grid (``extend_grid``) toward this validation Gini@10; None keeps
    the grid as given.

    Returns ``{"name", "label", "grid", "valid_rows", "test_rows", "pick", "params",
    "within_limit", "test", "n_base_points", "span_gini", "spans", "stop"}``: ``grid`` and the rows
    hold the extended points after the first ``n_base_points``; ``spans`` whether some point's
    validation Gini@10 <= ``span_gini`` (None without one); ``stop`` why the extension stopped
    ("span", "ndcg", "bound", "max_points"; None without ``span_gini``).
    """
    grid = list(baseline.grid if grid is None else grid)
    n_base = len(grid)
    valid_rows = evaluate_baseline_grid(baseline, valid, tuple(grid))
    stop = spans = None
    if span_gini is not None:
        stop, extra, extra_rows = extend_grid(baseline, valid, base_valid, grid, valid_rows, float(span_gini))
        grid, valid_rows = grid + extra, valid_rows + extra_rows
        spans = bool(min(r["gini@10"] for r in valid_rows) <= span_gini)
        log.info("%s: %d extra grid points, stopped at %s (%s Gini@10 %.4f)", baseline.label, len(extra), stop,
                 "spans" if spans else "does not span", span_gini)
    test_rows = evaluate_baseline_grid(baseline, test, tuple(grid))
    idx, within = pick_with_fallback(valid_rows, base_valid, max_ndcg_drop)
    gini_drop, ndcg_drop = tradeoff(valid_rows[idx], base_valid)
    log.info("%s tuned on valid: %s (Gini drop %.1f%%, NDCG drop %.1f%%%s)", baseline.label,
             baseline.describe(grid[idx]), 100 * gini_drop, 100 * ndcg_drop,
             "" if within else f"; no point within {100 * max_ndcg_drop:g}%")
    return {"name": baseline.name, "label": baseline.label, "grid": list(grid), "valid_rows": valid_rows,
            "test_rows": test_rows, "pick": idx, "params": dict(grid[idx]), "within_limit": within,
            "test": {k: v for k, v in test_rows[idx].items() if k not in grid[idx]},
            "n_base_points": n_base, "span_gini": span_gini, "spans": spans, "stop": stop}
