"""Stage 5, steering grid: every (N, alpha) point of an SAE on every user of each split, and the pick.

The work is cut by users: ``popsteer.steering.grid.score_users`` gives a shard of users'
top-k lists for the recommender, the unsteered SAE and every point at once (all points of a
chunk share their TopK candidates). An executor runs it over shards: ``LocalGrid`` on all
users in this process, or the platform's evaluator actors (``popsteer.platform.evaluators``)
over user shards. The lists are put back in user order and only then turned into metrics,
so both give the same rows. With ``write`` the SAE's results folder gets
``steering_grid.csv``, ``steering_pick.json``, ``tradeoff.png`` and ``steering_grid.json``
(what the grid was; written last, so ``reuse`` can trust it).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch

from popsteer.data import SequenceData
from popsteer.errors import PopSteerError

from popsteer.eval.tradeoff import pick_index, tradeoff
from popsteer.report.plots import grid_tradeoff
from popsteer.sae.model import TopKSAE
from popsteer.stages.config import GridStageConfig
from popsteer.stages.context import SAEContext, load_sae_context
from popsteer.stages.encode import Encoder
from popsteer.stages.encoded import Encodings, Part
from popsteer.stages.learned import Fitter, learned_deltas
from popsteer.stages.learned import identity as learned_identity
from popsteer.steering.grid import GridPoint, grid_points, point_deltas, score_users
from popsteer.steering.learned import LearnedPoint
from popsteer.util import checkpoint, memory
from popsteer.util.atomic import write_csv, write_text

log = logging.getLogger(__name__)

K = 10
POINT_KEYS = ("num_neurons", "alpha", "alpha_unpop", "lam")
"""The columns that name a grid point (the rest of a row are metrics)."""
METRICS = 2
"""Version of the metric set in a grid's rows (2: the field's bias metrics); a cached grid of another is redone."""


@dataclass
class GridJob:
    """Everything a shard of the grid needs."""

    sae_path: str
    sae: TopKSAE
    deltas: torch.Tensor  # (P, n)
    item_emb: torch.Tensor  # (n_items, d)
    x: dict[str, np.ndarray]  # split -> (U, d) user representations
    k: int = K
    bias: torch.Tensor | None = None  # (n_items,) the model's item bias
    exclude: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """split -> CSR of each user's items never ranked (a general model's history)."""
    preserve: bool = False
    """The error-preserving variant: x + (decode(steer(h)) - decode(h))."""


class GridExecutor(Protocol):
    def topk_lists(self, job: GridJob) -> dict[str, dict[str, np.ndarray]]:
        """split -> {"sasrec": (U, k), "sae": (U, k), "points": (P, U, k)}, users in order."""


class LocalGrid:
    """All users of each split in this process (threads over user chunks)."""

    def topk_lists(self, job: GridJob) -> dict[str, dict[str, np.ndarray]]:
        return {split: score_users(job.sae, torch.from_numpy(x), job.item_emb, job.k, job.deltas,
                                   bias=job.bias, exclude=job.exclude.get(split), preserve=job.preserve)
                for split, x in job.x.items()}


@dataclass
class GridResult:
    dataset: str
    points: list[GridPoint | LearnedPoint]
    rows: dict[str, list[dict]]
    """split -> one row per point: num_neurons, alpha (alpha_unpop on a two-strength grid) and every metric."""
    baselines: dict[str, dict]
    """split -> {"sasrec": metrics, "sae": metrics} (the recommender, the unsteered reconstruction)."""
    pick: dict | None
    """The validation pick: num_neurons, alpha, valid_gini_drop, valid_ndcg_drop; None when no point qualifies."""
    files: list[str]
    lists: dict[str, dict[str, np.ndarray]] | None = None
    """split -> the executor's top-k lists ({"sasrec", "sae": (U, k), "points": (P, U, k)}); None when reused."""

    def row(self, split: str, num_neurons: int, alpha: float, alpha_unpop: float | None = None) -> dict:
        return next(r for r in self.rows[split] if r["num_neurons"] == num_neurons and r["alpha"] == alpha
                    and (alpha_unpop is None or r["alpha_unpop"] == alpha_unpop))

    def row_of(self, split: str, params: dict) -> dict:
        """The split's row of the point with these parameters (any grid's columns)."""
        return next(r for r in self.rows[split] if all(r[k] == v for k, v in params.items()))

    def picked(self, split: str) -> dict | None:
        if self.pick is None:
            return None
        return self.row_of(split, {k: v for k, v in self.pick.items() if k in POINT_KEYS})


def _identity(ctx: SAEContext, cfg: GridStageConfig, points: list[GridPoint]) -> dict:
    out = {"sae_checkpoint": str(ctx.path.resolve()), "sae_sha256": checkpoint.file_sha256(ctx.path),
           "dataset": ctx.data.name,
           "points": [list(p.params().values()) for p in points], "splits": list(cfg.grid.splits),
           "swap_sigma": cfg.grid.swap_sigma, "max_ndcg_drop": cfg.grid.max_ndcg_drop, "metrics": METRICS}
    if cfg.grid.variant != "replace":  # the paper's grid keeps the identity it always had
        out["variant"] = cfg.grid.variant
    if cfg.grid.variant == "learned":
        out["learned"] = learned_identity(ctx, cfg.grid.learned)
        out["points"] = {"lambdas": sorted(cfg.grid.learned.lambdas), "refine": cfg.grid.learned.refine}
    return out


def grid_files(tag: str = "") -> tuple[str, str, str, str]:
    """The grid's files in the SAE's results folder: table, pick, plot, identity (``tag``: ``GridConfig.tag``)."""
    return (f"steering_grid{tag}.csv", f"steering_pick{tag}.json", f"tradeoff{tag}.png", f"steering_grid{tag}.json")


def _reused(folder: Path, identity: dict, points: list[GridPoint], tag: str) -> GridResult | None:
    table_f, pick_f, _, ident_f = names = grid_files(tag)
    try:
        if json.loads((folder / ident_f).read_text()) != identity:
            return None
        table = pd.read_csv(folder / table_f)
        saved = json.loads((folder / pick_f).read_text())
    except (OSError, ValueError, KeyError):
        return None
    rows = {s: table[table["split"] == s].drop(columns="split").to_dict("records") for s in identity["splits"]}
    if not points:  # the learned grid: its points are the lams of its rows
        points = [LearnedPoint(float(r["lam"])) for r in rows[identity["splits"][0]]]
    baselines = {s: saved[f"{s}_baselines"] for s in identity["splits"]}
    log.info("steering grid reused from %s", folder / table_f)
    return GridResult(identity["dataset"], points, rows, baselines, saved["pick"], [str(folder / f) for f in names])


def _write(folder: Path, result: GridResult, identity: dict, title: str, tag: str) -> list[str]:
    table_f, pick_f, plot_f, ident_f = grid_files(tag)
    table = pd.DataFrame([{"split": s, **r} for s in result.rows for r in result.rows[s]])
    write_csv(folder / table_f, table, index=False)
    picks = {"pick": result.pick, **{s: result.picked(s) for s in result.rows},
             **{f"{s}_baselines": b for s, b in result.baselines.items()}}
    write_text(folder / pick_f, json.dumps(picks, indent=2, default=float))
    files = [folder / table_f, folder / pick_f]
    if "valid" in result.rows:
        files.append(grid_tradeoff(result.rows["valid"], folder / plot_f, result.baselines["valid"],
                                   result.picked("valid"), title=f"{title}{tag}: NDCG@10 vs Gini@10 (valid)"))
    write_text(folder / ident_f, json.dumps(identity, indent=2))
    return [str(f) for f in (*files, folder / ident_f)]


def steering_grid(cfg: GridStageConfig, *, write: bool = True, reuse: bool = False, strict_n: bool = False,
                  executor: GridExecutor | None = None, data: SequenceData | None = None,
                  encodings: Encodings | None = None, encoder: Encoder | None = None,
                  fitter: Fitter | None = None) -> GridResult:
    """Score the grid of ``cfg`` (valid and/or test), pick on validation; see the module docstring.

    ``strict_n``: an N above the SAE's width is an error instead of being capped. The learned
    variant's deltas come from ``popsteer.stages.learned.learned_deltas`` (fitted by ``fitter``
    where the SAE's folder does not hold them yet); its points are its lams.
    """
    ctx = load_sae_context(cfg.ref, data)
    n_latents = ctx.meta["n_latents"]
    if strict_n and max(cfg.grid.ns) > n_latents:
        raise PopSteerError(f"num_neurons must be in [0, {n_latents}] (the SAE's hidden size), got {max(cfg.grid.ns)}")
    learned = cfg.grid.variant == "learned"
    scores = None if learned else ctx.scores()  # before any encoding: an unanalysed SAE writes nothing
    points = [] if learned else grid_points(n_latents, cfg.grid.ns, cfg.grid.alphas, cfg.grid.alpha_unpops)
    # (the learned grid's points are its fits' lams, known once they are fitted: learned_deltas)
    identity, tag = _identity(ctx, cfg, points), cfg.grid.tag
    if reuse and (found := _reused(ctx.results_dir, identity, points, tag)) is not None:
        return found
    splits = list(cfg.grid.splits)
    encodings = encodings or ctx.base.encodings([Part(s) for s in splits], encoder)
    x = {s: encodings.read(s) for s in splits}
    for s in splits:
        memory.check_fits(f"the steering grid of {len(points)} points on {len(x[s]):,} {s} users",
                          memory.grid_bytes(len(x[s]), ctx.sae.n, len(points), K, ctx.data.n_items))
    table = ctx.base.table
    exclude = {s: ctx.data.history_csr(s) for s in splits} if table.general else {}
    if learned:
        deltas, fits = learned_deltas(ctx, cfg.grid.learned, encodings, fitter, write=write)
        points = [LearnedPoint(f["lam"]) for f in fits]
    else:
        deltas = point_deltas(scores, points, cfg.grid.swap_sigma)
    job = GridJob(str(ctx.path), ctx.sae, deltas, table.emb, x, bias=table.bias, exclude=exclude,
                  preserve=cfg.grid.variant in ("preserve", "learned"))
    lists = (executor or LocalGrid()).topk_lists(job)
    rows, baselines = {}, {}
    for s in splits:
        ev = ctx.base.evaluator(s, k=K)  # the model's popularity counts (metrics of lists only)
        baselines[s] = {name: ev.metrics_of_topk(lists[s][name]) for name in ("sasrec", "sae")}
        rows[s] = [{**p.params(), **ev.metrics_of_topk(lists[s]["points"][i])} for i, p in enumerate(points)]
    pick = None
    if "valid" in rows and (i := pick_index(rows["valid"], baselines["valid"]["sasrec"], cfg.grid.max_ndcg_drop)) is not None:
        gini_drop, ndcg_drop = tradeoff(rows["valid"][i], baselines["valid"]["sasrec"])
        pick = {**points[i].params(), "valid_gini_drop": gini_drop, "valid_ndcg_drop": ndcg_drop}
    result = GridResult(ctx.data.name, points, rows, baselines, pick, [], lists)
    if write:
        result.files = _write(ctx.results_dir, result, identity, ctx.path.stem, tag)
    log.info("steering grid: %d points x %d split(s); pick %s", len(points), len(splits),
             "none (no validation split)" if "valid" not in rows else "none within the NDCG limit" if pick is None
             else " ".join(f"{k}={v:g}" for k, v in pick.items() if k in POINT_KEYS))
    return result
