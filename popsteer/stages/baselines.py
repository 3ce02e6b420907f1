"""Stage 6, baselines: each post-processing re-ranker's grid on the base recommender's scores,
tuned on validation with PopSteer's rule and reported on test (docs/METHOD.md §6).

They depend on the recommender only, so their results live with it:
``<data-dir>/<dataset>/baselines/<recommender stem>/baselines_grid.csv`` and
``baselines.json`` (what was run; written last, so ``reuse`` can trust it).

The x-space methods (PPD, SPREE) steer along a popularity direction estimated with the model's
default probe, read as the analysis stage reads it (``probe_parts``, ``probe_groups``): a
sequential model's encoded popular-only vs unpopular-only synthetic profiles (seed
``EncodeConfig.profile_seed``, so a sweep's encodings serve), a general model's (LightGCN) top vs
bottom ``user_share`` of real users by mean history popularity, on their representations before
the validation target (the ``valid`` part).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from popsteer.baselines import BASELINES, Baseline
from popsteer.baselines.direction import popularity_direction
from popsteer.baselines.random_topm import random_rerank
from popsteer.baselines.tuning import ScoredSplit, tune_baseline
from popsteer.stages.analysis import probe_groups, probe_parts
from popsteer.stages.config import SPLITS, AnalysisConfig, BaselinesConfig
from popsteer.stages.context import BaseContext
from popsteer.stages.encoded import Encodings, Part
from popsteer.steering.results import dataset_dir
from popsteer.util import checkpoint
from popsteer.util.atomic import write_csv, write_text

log = logging.getLogger(__name__)


def seeded_baselines(seed: int) -> list[Baseline]:
    """The registry, the random re-ranker bound to ``seed``."""
    out = []
    for b in BASELINES.values():
        if b.rerank is random_rerank:
            b = dataclasses.replace(b, rerank=functools.partial(random_rerank, seed=seed))
        out.append(b)
    return out


def baselines_dir(base: BaseContext) -> Path:
    return dataset_dir(base.where.data_dir, base.data.name) / "baselines" / base.path.stem


USER_SHARE = AnalysisConfig.__dataclass_fields__["user_share"].default
"""The real-user probe's group share: the analysis stage's default."""


def probe_spec(base: BaseContext) -> dict:
    """How the popularity direction is estimated for this model: its default probe and that probe's parameter."""
    probe = base.model.default_probe
    if probe == "users":
        return {"probe": "users", "user_share": USER_SHARE}
    return {"probe": probe, "seed": base.encode.profile_seed}


def probe_direction(base: BaseContext, spec: dict, encodings: Encodings, x_valid: np.ndarray) -> np.ndarray:
    """The unit popularity direction u (d,) from the probe ``spec`` (``probe_spec``).

    ``encodings``: a store to read the synthetic profiles from where it holds them (else they are
    encoded, or read from this base's cache); ``x_valid``: (U, d) the valid part (the real users).
    """
    if spec["probe"] == "users":
        return popularity_direction(*probe_groups("users", [], encodings, base.data, spec["user_share"], x_valid))
    parts = probe_parts(spec["probe"], base.model.general, spec["seed"])[:2]
    if any(encodings.manifest(p) is None for p in parts):
        encodings = base.encodings(parts)
    return popularity_direction(*probe_groups(spec["probe"], parts, encodings, None, None))


def scored_splits(base: BaseContext, encodings: Encodings | None = None,
                  splits: tuple[str, ...] = SPLITS, top_m: int | None = None) -> dict[str, ScoredSplit]:
    """What the re-rankers score on each split: the base's x, item table, evaluator, context and the
    popularity direction (estimated once, from ``probe_spec``'s probe); ``top_m``: the serving setting
    (``ScoredSplit.top_m``)."""
    encodings = encodings or base.encodings([Part(s) for s in SPLITS])
    x = {s: torch.from_numpy(encodings.read(s)) for s in SPLITS}
    direction = probe_direction(base, probe_spec(base), encodings, x["valid"].numpy())
    return {s: dataclasses.replace(ScoredSplit.of(x[s], base.item_emb, base.evaluator(s), base.data, s, direction),
                                   top_m=top_m) for s in splits}


def seeded_baseline(name: str, seed: int) -> Baseline:
    """One registered re-ranker, bound to ``seed`` where it draws."""
    return next(b for b in seeded_baselines(seed) if b.name == name)


def _identity(base: BaseContext, cfg: BaselinesConfig, grids: dict[str, tuple], span_gini: float | None,
              top_m: int | None = None) -> dict:
    return {**({"top_m": top_m} if top_m is not None else {}),"base_checkpoint": str(base.path.resolve()), "base_sha256": checkpoint.file_sha256(base.path),
            "seed": cfg.seed, "max_ndcg_drop": cfg.max_ndcg_drop, "span_gini": span_gini,
            "direction": probe_spec(base), "grids": {name: [dict(p) for p in grid] for name, grid in grids.items()}}


def baselines_files(top_m: int | None = None) -> tuple[str, str]:
    """The stage's table and record in the recommender's folder (``top_m``: the serving setting's own)."""
    tag = "" if top_m is None else f"_top{top_m}"
    return f"baselines_grid{tag}.csv", f"baselines{tag}.json"


def _reused(folder: Path, identity: dict, top_m: int | None = None) -> dict | None:
    record = folder / baselines_files(top_m)[1]
    try:
        saved = json.loads(record.read_text())
        if saved["identity"] != identity:
            return None
        return saved["methods"]
    except (OSError, ValueError, KeyError):
        return None


def tune_baselines(base: BaseContext, cfg: BaselinesConfig, base_valid: dict, *, reuse: bool = True,
                   encodings: Encodings | None = None, span_gini: float | None = None,
                   top_m: int | None = None) -> dict[str, dict]:
    """name -> ``tune_baseline``'s result (grids on valid and test, the pick, its test metrics, a
    description; ``spans`` / ``stop`` of the grid extension).

    ``base_valid``: the recommender's own validation metrics (the reference of the pick rule).
    ``span_gini``: the lowest validation Gini@10 of PopSteer's grid; every re-ranker's grid is then
    extended toward it (``popsteer.baselines.tuning``); None keeps the registered grids.
    ``top_m``: the serving setting: each re-ranker re-ranks only the base model's top-m; the query-side
    methods (PPD, SPREE), which retrieve with their own query there, are left out (their full-ranking
    results stand for them).
    """
    methods = [b for b in seeded_baselines(cfg.seed) if top_m is None or not b.query_side]
    grids = {b.name: b.tiny_grid() if cfg.tiny else b.grid for b in methods}
    folder = baselines_dir(base)
    span_gini = None if span_gini is None else float(span_gini)
    identity = _identity(base, cfg, grids, span_gini, top_m)
    if reuse and (found := _reused(folder, identity, top_m)) is not None:
        log.info("baselines reused from %s", folder)
        return found
    split = scored_splits(base, encodings, top_m=top_m)
    out = {}
    for b in methods:
        out[b.name] = tune_baseline(b, split["valid"], split["test"], base_valid, grids[b.name], cfg.max_ndcg_drop,
                                    span_gini)
        out[b.name]["describe"] = b.describe(out[b.name]["params"])
    rows = [{"method": name, "split": s, "extended": i >= m["n_base_points"], **r}
            for name, m in out.items() for s in SPLITS for i, r in enumerate(m[f"{s}_rows"])]
    table_f, record_f = baselines_files(top_m)
    write_csv(folder / table_f, pd.DataFrame(rows), index=False)
    write_text(folder / record_f, json.dumps({"identity": identity, "methods": out}, indent=2, default=float))
    return out
