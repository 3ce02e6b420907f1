"""Stage 6, baselines: each post-processing re-ranker's grid on the base recommender's scores,
tuned on validation with PopSteer's rule and reported on test (docs/METHOD.md §6).

They depend on the recommender only, so their results live with it:
``<data-dir>/<dataset>/baselines/<recommender stem>/baselines_grid.csv`` and
``baselines.json`` (what was run; written last, so ``reuse`` can trust it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from pathlib import Path

import pandas as pd
import torch

from popsteer.baselines import BASELINES, Baseline
from popsteer.baselines.random_topm import random_rerank
from popsteer.baselines.tuning import ScoredSplit, tune_baseline
from popsteer.stages.config import SPLITS, BaselinesConfig
from popsteer.stages.context import BaseContext
from popsteer.stages.encoded import Encodings, Part
from popsteer.steering.results import seed_dir
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
    return seed_dir(base.where.data_dir, base.data.name) / "baselines" / base.path.stem


def _identity(base: BaseContext, cfg: BaselinesConfig, grids: dict[str, tuple]) -> dict:
    return {"base_checkpoint": str(base.path.resolve()), "base_sha256": checkpoint.file_sha256(base.path),
            "seed": cfg.seed, "max_ndcg_drop": cfg.max_ndcg_drop,
            "grids": {name: [dict(p) for p in grid] for name, grid in grids.items()}}


def _reused(folder: Path, identity: dict) -> dict | None:
    try:
        if json.loads((folder / "baselines.json").read_text())["identity"] != identity:
            return None
        return json.loads((folder / "baselines.json").read_text())["methods"]
    except (OSError, ValueError, KeyError):
        return None


def tune_baselines(base: BaseContext, cfg: BaselinesConfig, base_valid: dict, *, reuse: bool = True,
                   encodings: Encodings | None = None) -> dict[str, dict]:
    """name -> ``tune_baseline``'s result (grids on valid and test, the pick, its test metrics, a description).

    ``base_valid``: the recommender's own validation metrics (the reference of the pick rule).
    """
    methods = seeded_baselines(cfg.seed)
    grids = {b.name: b.tiny_grid() if cfg.tiny else b.grid for b in methods}
    folder = baselines_dir(base)
    identity = _identity(base, cfg, grids)
    if reuse and (found := _reused(folder, identity)) is not None:
        log.info("baselines reused from %s", folder)
        return found
    encodings = encodings or base.encodings([Part(s) for s in SPLITS])
    split = {s: ScoredSplit.of(torch.from_numpy(encodings.read(s)), base.item_emb, base.evaluator(s),
                               base.data, s) for s in SPLITS}
    out = {}
    for b in methods:
        out[b.name] = tune_baseline(b, split["valid"], split["test"], base_valid, grids[b.name], cfg.max_ndcg_drop)
        out[b.name]["describe"] = b.describe(out[b.name]["params"])
    rows = [{"method": name, "split": s, **r} for name, m in out.items() for s in SPLITS for r in m[f"{s}_rows"]]
    write_csv(folder / "baselines_grid.csv", pd.DataFrame(rows), index=False)
    write_text(folder / "baselines.json", json.dumps({"identity": identity, "methods": out}, indent=2, default=float))
    return out
