"""``popsteer browse``: the neuron browser of an analysed SAE, a static site that opens with no network.

Reads the SAE's analysis (Cohen's d, the probe groups' means and SDs, each neuron's top items), labels
the neurons from the dataset's item metadata (``popsteer.browse.labels``; ``neuron_labels.csv`` beside
the analysis CSVs), recomputes the probe groups' pre-activations from their encoded parts (as the
analysis read them: ``probe_parts`` / ``probe_groups``), steers a seeded sample of test users with the
library's steering at the validation pick (``steering_pick.json``; else N=4096 capped, alpha=1.5) and
at alpha 1, 2 and 4, draws every steering grid of the SAE and the recommender's baselines, and writes
the site whole (``popsteer.browse.site``); ``--mlflow`` logs it as the artifact folder ``neuron_browser``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from popsteer.browse.content import SiteData
from popsteer.browse.labels import enrichment, label_neurons, write_labels
from popsteer.browse.metadata import item_metadata
from popsteer.browse.neurons import page_neurons, probe_histograms, user_activations
from popsteer.browse.site import check_out, plotly_js, write_site
from popsteer.browse.tracking import check_tracking, log_site
from popsteer.browse.tradeoff import tradeoff_figures, validation_pick
from popsteer.browse.users import Setting, sample_users, subset_csr, user_cases
from popsteer.errors import PopSteerError
from popsteer.models.item_ids import shared_datasets_dir
from popsteer.stages.analysis import probe_groups, probe_parts
from popsteer.stages.baselines import baselines_dir
from popsteer.stages.config_browse import BrowseConfig
from popsteer.stages.context import SAEContext, load_sae_context
from popsteer.stages.encoded import Part
from popsteer.steering import results
from popsteer.steering.steer import DEFAULT_ALPHA, DEFAULT_NUM_NEURONS, NeuronScores
from popsteer.util import checkpoint

log = logging.getLogger(__name__)

DEFAULT_POINT = (DEFAULT_NUM_NEURONS, DEFAULT_ALPHA)
"""The paper's defaults (N capped at the SAE's width), used when the SAE has no validation pick."""
STRENGTHS = (1.0, 2.0, 4.0)


def _analysis(folder: Path, n: int) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """(analysis.json, per-neuron means of both probe groups, neuron_top_items.csv) of the analysis in ``folder``."""
    try:
        summary = json.loads((folder / "analysis.json").read_text())
        mu = pd.DataFrame({"mu_pop": pd.read_csv(folder / "row_stats_popular.csv", index_col=0)["mean"].to_numpy(),
                           "mu_unpop": pd.read_csv(folder / "row_stats_unpopular.csv", index_col=0)["mean"].to_numpy()})
        top = pd.read_csv(folder / "neuron_top_items.csv", dtype={"item_token": str})
    except (OSError, ValueError, KeyError) as exc:
        raise PopSteerError(f"cannot read the analysis in {folder}: {exc} (run `popsteer analyze` first)") from None
    if len(mu) != n or not {"neuron", "rank", "item_id", "preactivation"} <= set(top.columns):
        raise PopSteerError(f"the analysis in {folder} does not match the SAE ({len(mu)} neurons, SAE {n})")
    return summary, mu, top


def _settings(ctx: SAEContext, sha: str) -> tuple[list[Setting], bool, str]:
    """(the strengths shown, swap_sigma of the pick's grid, a sentence saying where they come from)."""
    n = ctx.sae.W_enc.shape[0]
    pick, swap, grid = validation_pick(ctx.results_dir, sha)
    if pick:
        N, alpha, unpop = pick["num_neurons"], pick["alpha"], pick["alpha_unpop"]
        note = f"Steered at the validation-tuned point N={N}, α={alpha:g} (steering_pick.json)"
    else:
        N, alpha, unpop = min(DEFAULT_POINT[0], n), DEFAULT_POINT[1], None
        why = ("no point of its steering grid keeps the NDCG@10 drop within the limit on validation" if grid
               else "no steering grid of this SAE (popsteer tune-steering)")
        note = f"No validation pick ({why}): steered at the paper's defaults N={N}, α={alpha:g}"
    name = f"steered N={N} α={alpha:g}" + ("" if unpop is None else f" α_unpop={unpop:g}")
    settings = [Setting(name, N, alpha, unpop)] + [Setting(f"α={a:g} (N={N})", N, a) for a in STRENGTHS]
    return settings, swap, note + f", and at α = {', '.join(f'{a:g}' for a in STRENGTHS)} with the same N."


def _neuron_table(scores: NeuronScores, mu: pd.DataFrame, freq: np.ndarray, labels: pd.DataFrame) -> pd.DataFrame:
    table = pd.DataFrame({"d": scores.d, "sigma_pop": scores.sigma_pop, "sigma_unpop": scores.sigma_unpop,
                          "mu_pop": mu["mu_pop"], "mu_unpop": mu["mu_unpop"], "freq": freq})
    return table.join(labels.set_index("neuron")[["label", "best_q"]])


def _labels(cfg: BrowseConfig, ctx: SAEContext, folder: Path, top: pd.DataFrame, meta, sha: str):
    """(labels table, significant tests or None); writes neuron_labels.csv when there is metadata."""
    n = ctx.sae.W_enc.shape[0]
    if meta.tags is None:
        log.warning("neuron labels: %s; the neurons stay unlabelled", meta.source)
        no_tags = pd.DataFrame({"item_id": pd.Series(dtype=np.int64), "tag": pd.Series(dtype=str)})
        return label_neurons(enrichment(top, no_tags, ctx.data.n_items - 1, n), n, cfg.fdr), None
    tests = enrichment(top, meta.tags, ctx.data.n_items - 1, n, cfg.min_tag_items)
    labels = label_neurons(tests, n, cfg.fdr)
    files = write_labels(folder, labels, {"sae_checkpoint": str(ctx.path.resolve()), "sae_sha256": sha,
                                          "source": meta.source, "fdr": cfg.fdr, "min_tag_items": cfg.min_tag_items,
                                          "tags_tested": int(tests["tag"].nunique()) if len(tests) else 0,
                                          "labelled_neurons": int((labels["label"] != "").sum())})
    log.info("neuron labels: %d of %d neurons labelled at q < %g (tags: %s) -> %s",
             int((labels["label"] != "").sum()), n, cfg.fdr, meta.source, files[0])
    return labels, tests[tests["q"] < cfg.fdr]


def _probe_activity(ctx: SAEContext, summary: dict, pages: np.ndarray):
    """(the users' activations, the probe histograms of ``pages``, the test users' x (U, d)), from the
    encoded parts the analysis read (computed where missing)."""
    probe = summary.get("probe", "synthetic")
    parts = probe_parts(probe, ctx.base.model.transductive, int(summary.get("seed", ctx.base.encode.profile_seed)))
    encodings = ctx.base.encodings([*parts, Part("test")])
    x_pop, x_unpop = probe_groups(probe, parts, encodings, ctx.data, summary.get("user_share"))
    x_test = encodings.read(Part("test"))
    return user_activations(ctx.sae, x_test, pages), probe_histograms(ctx.sae, x_pop, x_unpop, pages), x_test


def browse(cfg: BrowseConfig) -> dict:
    """Write the neuron browser of ``cfg.ref``'s SAE to the folder ``cfg.site``; returns a summary."""
    if cfg.mlflow:
        check_tracking()
    out = Path(cfg.site)
    check_out(out.absolute())
    plotly_js()
    ctx = load_sae_context(cfg.ref)
    data, sae, sha = ctx.data, ctx.sae, checkpoint.file_sha256(ctx.path)
    folder = results.analysis_dir(cfg.ref.where.data_dir, data.name, ctx.path)
    summary, mu, top = _analysis(folder, sae.W_enc.shape[0])
    shared = Path(cfg.shared_dir) if cfg.shared_dir else shared_datasets_dir()
    meta = item_metadata(data, cfg.ref.where.data_dir, shared, cfg.tags)
    labels, tests = _labels(cfg, ctx, folder, top, meta, sha)
    scores = ctx.scores()
    pages = page_neurons(scores.d, (labels["label"] != "").to_numpy(), cfg.pages)
    acts, histograms, x_test = _probe_activity(ctx, summary, pages)

    settings, swap, note = _settings(ctx, sha)
    evaluator = ctx.base.evaluator("test")
    users = sample_users(data.n_users, cfg.users, cfg.seed)
    cases = user_cases(sae, scores, x_test, users, ctx.base.item_emb, settings, evaluator.k, swap,
                       evaluator.bias, subset_csr(evaluator.exclude, users))
    shown = set(users.tolist()) | {u for lst in acts.top_users.values() for u, _ in lst}
    figures, sources = tradeoff_figures(ctx.results_dir, baselines_dir(ctx.base) / "baselines_grid.csv", sha)
    site = SiteData(
        dataset=data.name, sae_name=ctx.path.stem, neurons=_neuron_table(scores, mu, acts.frequency, labels),
        top_items=top, meta=meta, popularity=evaluator.groups.counts,
        group=np.array(["", "H", "M", "T"])[evaluator.groups.label()], pages=pages,
        n_pages_top=min(cfg.pages, len(scores.d)), histograms=histograms, top_users=acts.top_users,
        histories={u: data.sequence(u)[:-1].tolist() for u in shown}, targets=evaluator.targets,
        user_tokens=data.user_tokens, cases=cases, settings=settings, setting_note=note, figures=figures,
        figure_sources=sources, tests=tests, fdr=cfg.fdr,
        facts={"model": ctx.base.model.name, "K": sae.k, "probe": summary.get("probe", "synthetic"),
               "width": len(scores.d)})
    record = {"sae_checkpoint": str(ctx.path.resolve()), "sae_sha256": sha, "dataset": data.name,
              "metadata": meta.source, "settings": [s.__dict__ for s in settings]}
    written = write_site(out, site, record)
    result = {"site": str(written / "index.html"), "neuron_pages": len(pages), "user_pages": len(cases),
              "labelled_neurons": int((labels["label"] != "").sum()), "metadata": meta.source,
              "labels": str(folder / "neuron_labels.csv") if tests is not None else None,
              "tradeoff_sources": sources}
    if cfg.mlflow:
        result["mlflow_run"] = log_site(written, run_name=f"browse/{ctx.path.stem}",
                                        tags={"popsteer.sae": ctx.path.name, "popsteer.dataset": data.name})
    return result
