"""Stage 4, analysis: Cohen's d of every SAE neuron from the encoded popular / unpopular profiles.

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
from popsteer.stages.encode import Encoder, analysis_parts
from popsteer.stages.encoded import Encodings
from popsteer.steering import results
from popsteer.steering.analysis import neuron_analysis, top_items_per_neuron
from popsteer.util import checkpoint

log = logging.getLogger(__name__)


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
    parts = analysis_parts(cfg.seed)
    encodings = encodings or ctx.base.encodings(parts, encoder)
    sae = ctx.sae
    d, pop, unpop = neuron_analysis(sae, encodings.read(parts[0]), encodings.read(parts[1]))
    top = top_items_per_neuron(sae, encodings.read(parts[2]), ctx.data.item_tokens, cfg.top_items)
    summary = {"sae_checkpoint": str(ctx.path.resolve()), "sae_sha256": checkpoint.file_sha256(ctx.path),
               "n_neurons": int(len(d)), "n_positive": int((d > 0).sum()),
               "median_abs_d": float(np.median(np.abs(d))), "profiles_per_group": pop.count, "seed": cfg.seed}
    files = results.write_analysis(ctx.results_dir, d, pop, unpop, top, summary)
    if cfg.seed_copy:
        results.write_analysis(results.seed_dir(ctx.base.where.data_dir, ctx.data.name), d, pop, unpop, top, summary)
    log.info("Cohen's d: %d of %d neurons > 0, median |d| %.3f; reports in %s",
             summary["n_positive"], len(d), summary["median_abs_d"], ctx.results_dir)
    return AnalysisResult(str(ctx.results_dir), [str(f) for f in files], summary)
