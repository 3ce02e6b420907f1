"""One report section's numbers: every method's grid, pick, test lists, hypervolume and statistics.

PopSteer is tuned in three forms, each its own grid on valid and test (the grid stage, reused
when its files match): the paper's (the recommender scores the steered reconstruction), the
error-preserving variant (``x + decode(steer(h)) - decode(h)``) on the same points, and the
extended paper's separate strengths (N x alpha_pop x alpha_unpop). The re-rankers' grids are
extended until they span PopSteer's Gini range (``popsteer.stages.baselines``). Every method's
validation pick is then scored once more on test to keep its top-k lists, which the paired
tests and the bootstrap intervals need (``popsteer.eval.significance``).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from popsteer.eval.significance import TopkMetricFn, bootstrap_difference, bootstrap_intervals, compare
from popsteer.eval.tradeoff import hv_reference, hypervolume, pick_with_fallback
from popsteer.stages.config import GridConfig, GridStageConfig, LearnedConfig, SAERef
from popsteer.stages.context import SAEContext
from popsteer.stages.grid import GridResult, steering_grid
from popsteer.steering.grid import DEFAULT_ALPHAS, DEFAULT_NS

log = logging.getLogger(__name__)

DEFAULT_N = 4096
DEFAULT_ALPHA = {"ml-1m": 1.5, "lastfm": 4.0}  # docs/METHOD.md §4; 1.5 elsewhere
TWO_STRENGTHS = (0.0, 1.0, 2.0, 3.0, 4.0)
TWO_STRENGTH_NS = (2048, 4096)
"""2 x 5 x 5 = 50 points: every method's grid holds at most 56."""
VARIANTS = {  # method name -> (label, how the grid differs from the paper's)
    "popsteer": ("PopSteer (tuned)", {}),
    "popsteer_preserve": ("PopSteer error-preserving (tuned)", {"variant": "preserve"}),
    "popsteer_2d": ("PopSteer α_pop × α_unpop (tuned)", {"alpha_unpops": list(TWO_STRENGTHS)}),
    "popsteer_learned": ("PopSteer learned (tuned)", {"variant": "learned"}),
}
TINY_LEARNED = {"lambdas": [0.1, 1.0, 5.0], "steps": 40, "refine": 1}


def learned_config(tiny: bool) -> LearnedConfig:
    """The learned form's settings in a report (tiny: 3 lams and 1 refined, 40 steps a fit)."""
    return LearnedConfig(**TINY_LEARNED) if tiny else LearnedConfig()


def popsteer_grid(alpha0: float, tiny: bool, name: str = "popsteer") -> GridConfig:
    """The docs/METHOD.md grid plus the default alpha (tiny: N in {512, max}, alpha in {1, default, 4});
    ``popsteer_2d``: N in {1024, 2048, 4096} x alpha_pop x alpha_unpop in {0, ..., 4} (tiny: {0, 2} each)."""
    extra = dict(VARIANTS[name][1])
    if name == "popsteer_learned":
        return GridConfig(variant="learned", learned=learned_config(tiny))
    if name == "popsteer_2d":
        strengths = [0.0, 2.0] if tiny else list(TWO_STRENGTHS)
        ns = [512, DEFAULT_N] if tiny else list(TWO_STRENGTH_NS)
        return GridConfig(ns=ns, alphas=strengths, alpha_unpops=strengths)
    if tiny:
        return GridConfig(ns=[512, DEFAULT_N], alphas=sorted({1.0, alpha0, 4.0}), **extra)
    return GridConfig(ns=list(DEFAULT_NS), alphas=sorted({*DEFAULT_ALPHAS, alpha0}), **extra)


def describe_point(params: dict) -> str:
    if "lam" in params:
        return f"λ={params['lam']:g}"
    if "alpha_unpop" in params:
        return f"N={params['num_neurons']}, α_pop={params['alpha']:g}, α_unpop={params['alpha_unpop']:g}"
    return f"N={params['num_neurons']}, α={params['alpha']:g}"


def grid_method(name: str, grid: GridResult) -> dict:
    """A PopSteer form as a method: its grid rows on both splits, the validation pick, its test row."""
    valid_rows, test_rows = grid.rows["valid"], grid.rows["test"]
    idx, within = pick_with_fallback(valid_rows, grid.baselines["valid"]["sasrec"])
    params = [p.params() for p in grid.points]
    test = {k: v for k, v in test_rows[idx].items() if k not in params[idx]}
    return {"name": name, "label": VARIANTS[name][0], "grid": params, "valid_rows": valid_rows, "test_rows": test_rows,
            "pick": idx, "params": params[idx], "within_limit": within, "test": test,
            "describe": describe_point(params[idx])}


def popsteer_methods(ref: SAERef, ctx: SAEContext, cfg, alpha0: float) -> tuple[GridResult, dict[str, dict]]:
    """The paper's grid (returned, for the baselines and the defaults row) and every PopSteer form as a method."""
    out, first = {}, None
    for name in VARIANTS:
        grid_cfg = popsteer_grid(alpha0, cfg.tiny, name)
        grid_cfg.swap_sigma = cfg.swap_sigma
        grid = steering_grid(GridStageConfig(ref, grid_cfg), reuse=True, data=ctx.data)
        first = first or grid
        out[name] = grid_method(name, grid)
    return first, out


def point_lists(ref: SAERef, ctx: SAEContext, cfg, name: str, params: dict, split: str = "test") -> dict[str, np.ndarray]:
    """The top-k lists of one PopSteer point on a split, with the recommender's and the unsteered SAE's:
    {"sasrec", "sae", "point"}, each (U, k); the grid stage's own executor, so they are the grid's lists."""
    extra = VARIANTS[name][1]
    if "lam" in params:
        grid_cfg = GridConfig(variant="learned", splits=[split],
                              learned=dataclasses.replace(learned_config(cfg.tiny), lambdas=[params["lam"]], refine=0))
    else:
        grid_cfg = GridConfig(ns=[params["num_neurons"]], alphas=[params["alpha"]], splits=[split],
                              swap_sigma=cfg.swap_sigma, variant=extra.get("variant", "replace"),
                              alpha_unpops=[params["alpha_unpop"]] if "alpha_unpop" in params else None)
    lists = steering_grid(GridStageConfig(ref, grid_cfg), write=False, data=ctx.data).lists[split]
    return {"sasrec": lists["sasrec"], "sae": lists["sae"], "point": lists["points"][0]}


def hypervolumes(methods: dict[str, dict], base: dict[str, dict]) -> dict:
    """Each method's hypervolume on valid and test against the split's reference point (``hv_reference``)."""
    refs = {s: hv_reference(base[s]["sasrec"]) for s in ("valid", "test")}
    return {"reference": {s: {"ndcg@10": r[0], "1-gini@10": r[1]} for s, r in refs.items()},
            "methods": {name: {s: hypervolume(m[f"{s}_rows"], refs[s]) for s in ("valid", "test")}
                        for name, m in methods.items()}}


def statistics(lists: dict[str, np.ndarray], labels: dict[str, str], evaluator, resamples: int, seed: int,
               best: str = "popsteer") -> dict:
    """Intervals of every metric of every method, and the paired comparisons against SASRec and PopSteer.

    ``lists``: method -> its test top-k lists (U, k), ``sasrec`` and ``popsteer`` among them.
    Every method is resampled with the same users (one seed), so differences are paired; the
    Gini@10 difference against each reference is its re-centred paired interval. ``best``: the steering
    form with the highest test hypervolume, a third reference (``vs_best``) when it is not the paper's.
    """
    fn = TopkMetricFn.of(evaluator)
    out = {"resamples": resamples, "seed": seed, "labels": labels,
           "intervals": {name: bootstrap_intervals(topk, fn, resamples, seed) for name, topk in lists.items()}}
    out["best"] = best
    for ref in dict.fromkeys(("sasrec", "popsteer", best)):
        key = "best" if ref == best and ref != "popsteer" else ref
        out[f"vs_{key}"] = compare(lists, ref, evaluator.targets, fn, n_resamples=resamples, seed=seed)
        out[f"gini_vs_{key}"] = {name: bootstrap_difference(topk, lists[ref], fn, resamples, seed, centered=True)["gini@10"]
                                 for name, topk in lists.items() if name != ref}
    if best == "popsteer":
        out["vs_best"], out["gini_vs_best"] = out["vs_popsteer"], out["gini_vs_popsteer"]
    return out


def best_form(res: dict) -> str:
    """The steering form (a ``VARIANTS`` name) with the highest test hypervolume of the section."""
    hv = res["hv"]["methods"]
    return max((name for name in VARIANTS if name in hv), key=lambda name: hv[name]["test"])


def serving_record(serving: dict[int, dict[str, dict]], base: dict[str, dict]) -> dict:
    """m -> {"methods": name -> its record, "hv": ``hypervolumes``} of the serving setting."""
    return {m: {"methods": methods, "hv": hypervolumes(methods, base)} for m, methods in serving.items()}


def moved_neurons(ctx: SAEContext, cfg: LearnedConfig, lam: float, groups, shared, data_dir, top: int = 10) -> dict:
    """The learned pick's most-moved neurons (largest |delta|) with their Cohen's d and top items."""
    from popsteer.report.neurons import neuron_items
    from popsteer.stages.learned import learned_deltas
    from popsteer.steering.learned import most_moved

    delta = learned_deltas(ctx, dataclasses.replace(cfg, lambdas=[lam], refine=0))[0][0].numpy()
    moved = most_moved(delta, top)
    d = ctx.scores().d
    items = neuron_items(ctx.data, data_dir, groups, shared, ctx.path, [j for j, _ in moved])
    return {"lam": lam, "l1": float(np.abs(delta).sum()), "nonzero": int((delta != 0).sum()),
            "neurons": [{"neuron": j, "delta": v, "d": float(d[j]), "top items": items[j]} for j, v in moved]}
