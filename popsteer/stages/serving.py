"""The serving setting: what each method can do when a retrieval stage returns only the top-m items.

In production a re-ranker sees the m candidates that retrieval returns for the base model's query;
steering changes the query itself, so it retrieves with the steered vector (its lists are its
full-ranking lists). Here, for ``m`` in ``SERVING_M``:

- every re-ranker re-ranks only the base model's top-m (``tune_baselines(top_m=m)``); the query-side
  methods (PPD, SPREE) retrieve with their own query, so their full-ranking results stand;
- every steering form keeps its full-ranking grid;
- ``steered_pmmf``: learned steering, then P-MMF on the **steered** top-m. Its grid is a few learned
  deltas (``PAIR_LAMS`` of the learned grid: the validation pick and its neighbours) times P-MMF's
  strength at its largest eta, at most 56 points, tuned on validation with the usual rule.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from popsteer.baselines.pmmf import PMMF
from popsteer.baselines.tuning import ScoredSplit, evaluate_baseline_grid
from popsteer.eval.tradeoff import pick_with_fallback
from popsteer.stages.config import LearnedConfig
from popsteer.stages.context import SAEContext
from popsteer.stages.encoded import Encodings
from popsteer.stages.learned import learned_deltas
from popsteer.steering.steer import steered_reconstruction

log = logging.getLogger(__name__)

SERVING_M = (100, 500)
PMMF_LAMS = (0.0, 0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4)
"""P-MMF's strengths after steering (at eta = 1e-2, P-MMF's largest); 0 is the steered lists themselves."""
PAIR_LAMS = 4
"""Learned deltas paired with P-MMF: 4 x 13 = 52 points, within the 56 every method gets."""


def pair_lams(lams: list[float], valid_rows: list[dict], base_valid: dict) -> list[float]:
    """The learned lams paired with P-MMF: the validation pick (usual rule) and the ones beside it in
    the grid's order, ``PAIR_LAMS`` in all (fewer when the grid is smaller)."""
    idx = pick_with_fallback(valid_rows, base_valid)[0]
    n = min(PAIR_LAMS, len(lams))
    lo = max(0, min(idx - n // 2, len(lams) - n))
    return [float(v) for v in lams[lo : lo + n]]


def steered_split(ctx: SAEContext, split: ScoredSplit, delta: torch.Tensor, top_m: int) -> ScoredSplit:
    """The split with each user's x replaced by the learned-steered x' (error-preserving form), its
    candidates the steered query's own top-m."""
    with torch.no_grad():
        x = steered_reconstruction(ctx.sae, ctx.sae.preact(split.x), delta, x=split.x)  # (U, d)
    return dataclasses.replace(split, x=x, top_m=top_m)


def steered_pmmf(ctx: SAEContext, cfg: LearnedConfig, lams: list[float], splits: dict[str, ScoredSplit],
                 base_valid: dict, top_m: int, encodings: Encodings | None = None, tiny: bool = False,
                 max_ndcg_drop: float = 0.05) -> dict:
    """Learned steering then P-MMF on the steered top-m: a method record as ``tune_baseline`` gives it
    (grid, rows on valid and test, the validation pick and its test metrics)."""
    deltas, _ = learned_deltas(ctx, dataclasses.replace(cfg, lambdas=list(lams), refine=0), encodings)
    pmmf = (0.0, 10.0, 1e4) if tiny else PMMF_LAMS
    grid = [{"steer_lam": lam, "lam": p, "eta": 1e-2} for lam in lams for p in pmmf]
    rows = {s: [] for s in ("valid", "test")}
    for lam, delta in zip(lams, deltas):
        for s in rows:
            split = steered_split(ctx, splits[s], delta, top_m)
            rows[s] += [{"steer_lam": lam, **r} for r in
                        evaluate_baseline_grid(PMMF, split, tuple({"lam": p, "eta": 1e-2} for p in pmmf))]
    idx, within = pick_with_fallback(rows["valid"], base_valid, max_ndcg_drop)
    params = grid[idx]
    log.info("learned steering + P-MMF on the steered top-%d: pick %s", top_m, params)
    return {"name": "learned_pmmf", "label": "PopSteer learned + P-MMF (steered top-m)", "top_m": top_m,
            "grid": grid, "valid_rows": rows["valid"], "test_rows": rows["test"], "pick": idx, "params": params,
            "within_limit": within, "test": {k: v for k, v in rows["test"][idx].items() if k not in params},
            "describe": f"λ_steer={params['steer_lam']:g}, λ_P-MMF={params['lam']:g}, η=0.01",
            "n_base_points": len(grid), "span_gini": None, "spans": None, "stop": None}


def steered_lists(ctx: SAEContext, split: ScoredSplit, params: dict, cfg: LearnedConfig, top_m: int) -> np.ndarray:
    """The test lists of one ``steered_pmmf`` point (for the paired statistics)."""
    from popsteer.baselines.tuning import rerank_split

    deltas, _ = learned_deltas(ctx, dataclasses.replace(cfg, lambdas=[params["steer_lam"]], refine=0))
    return rerank_split(PMMF, {"lam": params["lam"], "eta": params["eta"]}, steered_split(ctx, split, deltas[0], top_m))


def serving_methods(ctx: SAEContext, methods: dict[str, dict], learned_cfg: LearnedConfig, base_valid: dict,
                    span_gini: float, encodings: Encodings, seed: int, tiny: bool) -> dict[int, dict[str, dict]]:
    """m -> every method as it runs when retrieval returns m candidates (module docstring): the steering
    forms' and the query-side baselines' full-ranking records, the other re-rankers tuned on the base top-m,
    and learned steering + P-MMF on the steered top-m. ``methods``: the section's full-ranking methods."""
    from popsteer.baselines import BASELINES
    from popsteer.stages.baselines import scored_splits, tune_baselines
    from popsteer.stages.config import BaselinesConfig

    splits = scored_splits(ctx.base, encodings)
    learned = methods["popsteer_learned"]
    lams = pair_lams([p["lam"] for p in learned["grid"]], learned["valid_rows"], base_valid)
    out = {}
    for m in SERVING_M:
        kept = {name: rec for name, rec in methods.items() if name not in BASELINES or BASELINES[name].query_side}
        steered = steered_pmmf(ctx, learned_cfg, lams, splits, base_valid, m, encodings, tiny)
        span = min(span_gini, min(r["gini@10"] for r in steered["valid_rows"]))  # every steering form's lowest
        restricted = tune_baselines(ctx.base, BaselinesConfig(seed=seed, tiny=tiny), base_valid, encodings=encodings,
                                    span_gini=span, top_m=m)
        out[m] = {**kept, **restricted, steered["name"]: steered}
    return out
