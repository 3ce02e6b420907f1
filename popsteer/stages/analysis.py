"""Stage 4, analysis: Cohen's d of every SAE neuron from the encoded popular / unpopular profiles,
or (``--probe users``) from the real users with the most and the least popular histories.

Writes the SAE's results folder (``popsteer.steering.results``) and, as the seed does, the
same CSVs to ``<data-dir>/<dataset>/``. The CLI calls ``analyze`` in this process; a sweep
calls it in a Ray task per selected SAE, with the sweep's encodings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from popsteer.data import SequenceData
from popsteer.stages.config import AnalysisConfig
from popsteer.stages.context import load_sae_context
from popsteer.errors import PopSteerError
from popsteer.stages.encode import Encoder, analysis_parts
from popsteer.stages.encoded import Encodings, Part
from popsteer.steering import results
from popsteer.steering.analysis import neuron_analysis, top_items_per_neuron, user_groups
from popsteer.util import checkpoint

log = logging.getLogger(__name__)


def probe_parts(probe: str, general: bool, seed: int) -> list[Part]:
    """The encoded parts an analysis reads: synthetic profiles and one-item profiles, or the users."""
    if probe == "synthetic":
        return analysis_parts(seed)
    return [Part("valid")] + ([] if general else [Part("items")])


def probe_groups(probe: str, parts: list[Part], encodings: Encodings, data: SequenceData | None,
                 user_share: float | None, x_users: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The popular and the unpopular probe group's x: the synthetic profiles (``parts[:2]``), or the
    users with the most / the least popular histories (``user_groups``), by their valid-part x
    (``x_users`` when the caller holds it)."""
    if probe == "users":  # the users' own x (their history before the validation target)
        x_users = encodings.read(Part("valid")) if x_users is None else x_users
        top, bottom = user_groups(data, user_share)
        return x_users[top], x_users[bottom]
    return encodings.read(parts[0]), encodings.read(parts[1])


@dataclass
class AnalysisResult:
    folder: str
    """The SAE's results folder."""
    files: list[str]
    summary: dict
    """sae_checkpoint, sae_sha256, n_neurons, n_positive, median_abs_d, profiles_per_group, seed."""


def analyze(cfg: AnalysisConfig, *, data: SequenceData | None = None, encodings: Encodings | None = None,
            encoder: Encoder | None = None) -> AnalysisResult:
    """Analyse the SAE of ``cfg.ref``; ``data`` / ``encodings`` skip loading and encoding when given."""
    ctx = load_sae_context(cfg.ref, data)
    spec = ctx.base.model
    probe = spec.default_probe if cfg.probe == "auto" else cfg.probe
    if probe == "synthetic" and spec.transductive:
        what = "imported vectors: there is no model to run" if spec.imported else "a transductive model"
        raise PopSteerError(f"{spec.recbole_class} cannot encode synthetic profiles ({what}): use --probe users")
    parts = probe_parts(probe, spec.transductive, cfg.seed)
    encodings = encodings or ctx.base.encodings(parts, encoder)
    sae = ctx.sae
    d, pop, unpop = neuron_analysis(sae, *probe_groups(probe, parts, encodings, ctx.data, cfg.user_share))
    # the items that activate a neuron most: one-item profiles; a general model's item rows of E instead
    x_items = ctx.base.item_emb[1:].numpy() if spec.transductive else encodings.read(Part("items"))
    top = top_items_per_neuron(sae, x_items, ctx.data.item_tokens, cfg.top_items)
    summary = {"sae_checkpoint": str(ctx.path.resolve()), "sae_sha256": checkpoint.file_sha256(ctx.path),
               "n_neurons": int(len(d)), "n_positive": int((d > 0).sum()),
               "median_abs_d": float(np.median(np.abs(d))), "profiles_per_group": pop.count, "seed": cfg.seed,
               "probe": probe, **({"user_share": cfg.user_share} if probe == "users" else {})}
    files = results.write_analysis(ctx.results_dir, d, pop, unpop, top, summary)
    if cfg.dataset_copy:
        results.write_analysis(results.dataset_dir(ctx.base.where.data_dir, ctx.data.name), d, pop, unpop, top, summary)
    log.info("Cohen's d: %d of %d neurons > 0, median |d| %.3f; reports in %s",
             summary["n_positive"], len(d), summary["median_abs_d"], ctx.results_dir)
    return AnalysisResult(str(ctx.results_dir), [str(f) for f in files], summary)
