"""Stage 7, report: the results report (docs/RESULTS.md) of one or more analysed SAEs.

For each SAE (one section per dataset and base-recommender origin), on the test split:
SASRec, the unsteered SAE, PopSteer at the paper's defaults and tuned on validation, and
every re-ranker tuned on validation with the same rule. The numbers come from the steering
grid stage and the baselines stage (their files are reused when they match, so a report
after a sweep or a ``tune-steering`` only renders); the markdown, plots and per-point grids
are written atomically beside ``cfg.out``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

from popsteer.errors import PopSteerError
from popsteer.baselines.tuning import rerank_split
from popsteer.eval.popularity import PopularityGroups
from popsteer.report.fidelity import fidelity, shared_dir
from popsteer.report.findings import findings
from popsteer.report.neurons import top_neurons
from popsteer.report.plots import methods_tradeoff
from popsteer.report.render import METRIC_KEYS, closing_note, grid_frame, main_rows, method_label, render_dataset
from popsteer.report.render_eval import BIAS_COLUMNS
from popsteer.stages.baselines import scored_splits, seeded_baseline, tune_baselines
from popsteer.stages.config import SPLITS, BaselinesConfig, SAERef
from popsteer.stages.config_report import ReportConfig
from popsteer.stages.context import load_sae_context
from popsteer.stages.encoded import Part
from popsteer.stages.oracle import oracle_bound
from popsteer.stages.section import (DEFAULT_ALPHA, DEFAULT_N, VARIANTS, best_form, hypervolumes, learned_config,
                                     moved_neurons, point_lists, popsteer_methods, serving_record, statistics)
from popsteer.stages.sections import assemble, write_section
from popsteer.stages.serving import serving_methods

ORACLE_MAX_CELLS = 3e7
"""``ReportConfig.oracle="auto"``: the oracle runs where test users x items is at most this."""
from popsteer.util.atomic import write_csv, write_text

log = logging.getLogger(__name__)

def evaluate_section(sae_path: str, cfg: ReportConfig) -> dict:
    """Every number of one section (``popsteer.stages.section``)."""
    ref = SAERef(path=sae_path, where=cfg.where, encode=cfg.encode)
    ctx = load_sae_context(ref)
    n_latents, data = ctx.meta["n_latents"], ctx.data
    n0, a0 = min(DEFAULT_N, n_latents), DEFAULT_ALPHA.get(data.name, 1.5)
    grid, methods = popsteer_methods(ref, ctx, cfg, a0)
    base_valid, base_test = grid.baselines["valid"], grid.baselines["test"]
    span = min(r["gini@10"] for name in VARIANTS for r in methods[name]["valid_rows"])  # any steering form's lowest
    encodings = ctx.base.encodings([Part(s) for s in SPLITS])
    methods.update(tune_baselines(ctx.base, BaselinesConfig(seed=cfg.seed, tiny=cfg.tiny), base_valid["sasrec"],
                                  encodings=encodings, span_gini=span))
    imported = ctx.base.meta.get("imported_from") is not None
    model = ctx.base.model.recbole_class
    shared = shared_dir(cfg.shared_dir)
    scores = ctx.scores()
    groups = PopularityGroups.from_counts(data.train_target_counts())
    sweep = (ctx.meta.get("sweep") or {}).get("name")
    title = f"{data.name}, " + (f"the authors' {model} (imported)" if imported else "imported vectors"
                                if ctx.base.model.imported else f"{model} trained by PopSteer")
    res = {"dataset": data.name, "checkpoint": str(sae_path), "meta": ctx.meta, "n_latents": n_latents,
           "sasrec_origin": "authors" if imported else "popsteer", "model": model,
           "title": title + (f", the best SAE of sweep {sweep}" if sweep else ""),
           "slug": data.name + ("" if model == "SASRec" else f"-{model.lower()}") + ("-authors" if imported else "")
           + (f"-sweep-{sweep}" if sweep else ""),
           "defaults": {"num_neurons": n0, "alpha": a0}, "base_valid": base_valid, "base_test": base_test,
           "default_test": grid.row("test", n0, a0), "methods": methods, "d": scores.d,
           "neurons": top_neurons(data, cfg.where.data_dir, groups, scores.d, shared, sae_path),
           "fidelity": fidelity(data.name, scores.d, shared, base_valid["sasrec"]),
           "hv": hypervolumes(methods, grid.baselines)}
    res["serving"] = serving_record(serving_methods(ctx, methods, learned_config(cfg.tiny), base_valid["sasrec"], span,
                                                    encodings, cfg.seed, cfg.tiny), grid.baselines)
    res["oracle"] = None
    if cfg.oracle == "on" or (cfg.oracle == "auto" and data.n_users * data.n_items <= ORACLE_MAX_CELLS):
        test_split = scored_splits(ctx.base, encodings, ("test",))["test"]
        res["oracle"] = oracle_bound(methods["pmmf"], test_split, base_test["sasrec"], steps=30 if cfg.tiny else 200)
    res["learned"] = moved_neurons(ctx, learned_config(cfg.tiny), methods["popsteer_learned"]["params"]["lam"],
                                   groups, shared, cfg.where.data_dir)
    res["stats"] = section_statistics(ref, ctx, cfg, methods, encodings, (n0, a0), best_form(res))
    return res


def section_statistics(ref: SAERef, ctx, cfg: ReportConfig, methods: dict, encodings, defaults,
                       best: str = "popsteer") -> dict:
    """Every method's test lists at its pick, then intervals and paired tests (``section.statistics``)."""
    n0, a0 = defaults
    first = point_lists(ref, ctx, cfg, "popsteer", {"num_neurons": n0, "alpha": a0})
    lists = {"sasrec": first["sasrec"], "sae": first["sae"], "popsteer_defaults": first["point"]}
    labels = {"sasrec": ctx.base.model.recbole_class, "sae": "SAE (unsteered)", "popsteer_defaults": "PopSteer (defaults)"}
    split = None
    for name, m in methods.items():
        labels[name] = method_label(m)
        if name in VARIANTS:
            lists[name] = point_lists(ref, ctx, cfg, name, m["params"])["point"]
        else:
            split = split or scored_splits(ctx.base, encodings, ("test",))["test"]
            lists[name] = rerank_split(seeded_baseline(name, cfg.seed), m["params"], split)
    return statistics(lists, labels, ctx.base.evaluator("test"), cfg.resamples, cfg.seed, best)


def section_metrics(res: dict) -> dict[str, dict[str, float]]:
    """Each table row's finite test metrics (MLflow keys: ``@`` as ``_at_``), by row label."""
    out = {}
    for label, _, values, _ in main_rows(res):
        out[label] = {key.replace("@", "_at_"): float(values[key]) for key in (*METRIC_KEYS, *(k for k, _ in BIAS_COLUMNS))
                      if math.isfinite(values.get(key, math.nan))}
    return out


def log_to_mlflow(out: Path, sections: list[tuple[dict, list[Path]]]) -> list[str]:
    """One MLflow parent run per section (the report, the section's plot and grids, its SAE's facts and
    every method's hypervolume), with one child run per table row holding that method's test metrics;
    returns the parent runs' ids."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        log.warning("--mlflow: MLFLOW_TRACKING_URI is not set, nothing logged")
        return []
    import mlflow

    ids = []
    try:
        for res, files in sections:
            report_ = res["meta"].get("report", {})
            params = {"dataset": res["dataset"], "model": res["model"], "origin": res["sasrec_origin"],
                      "sae_checkpoint": Path(res["checkpoint"]).name, "sae_epochs": len(res["meta"].get("history") or []),
                      "sae_k": res["meta"]["sae"]["k"], "sae_scale": res["meta"]["sae"]["scale"]}
            with mlflow.start_run(run_name=f"report/{res['slug']}",
                                  tags={"popsteer.kind": "report_section", "popsteer.section": res["slug"]}) as run:
                mlflow.log_params(params)
                for path in (out, *files):
                    mlflow.log_artifact(str(path))
                mlflow.log_metrics({f"hypervolume_{split}/{name}": v for name, hv in res["hv"]["methods"].items()
                                    for split, v in hv.items()} |
                                   {f"sae_{k}": float(report_[k]) for k in ("fvu", "dead_fraction") if k in report_})
                for label, metrics in section_metrics(res).items():
                    with mlflow.start_run(run_name=label, nested=True, tags={"popsteer.kind": "report_method"}):
                        mlflow.log_param("method", label)
                        mlflow.log_metrics(metrics)
                ids.append(run.info.run_id)
    except (mlflow.exceptions.MlflowException, OSError) as exc:
        raise PopSteerError(f"MLflow logging failed (the report is written): {str(exc).splitlines()[0]}") from None
    return ids


BY_HAND = "<!-- by hand: everything below this line is kept when popsteer report rewrites the file -->"


def kept_by_hand(out: Path) -> str:
    """The hand-written tail of an existing report (from the ``BY_HAND`` marker on), or ''."""
    try:
        text = Path(out).read_text()
    except OSError:
        return ""
    i = text.find(BY_HAND)
    return "" if i < 0 else "\n\n" + text[i:]


def head_lines(seed: int, tiny: bool, command: str) -> list[str]:
    """The report's title and what it holds."""
    return ["# PopSteer results", "",
            f"Generated by `{command}`. Metrics at k=10 on the test split (docs/METHOD.md §5); "
            "every hyper-parameter chosen on validation only. PopSteer in four forms (docs/METHOD.md §4): the paper's "
            "(the steered reconstruction replaces x), error-preserving (x + decode(steer(h)) − decode(h)), separate "
            "strengths for popular and unpopular neurons, and learned steering (delta fitted on the training prefixes "
            "against an exposure-concentration penalty, §4b). Post-hoc baselines on the frozen recommender "
            "(docs/METHOD.md §6): IPR (the reference's weight on the raw scores), FA\\*IR (protected group: mid + tail "
            "items), PCT (greedy popularity calibration over the top-100), random re-ranking of the top-m (seed "
            f"{seed}), P-MMF, PPD (projecting the popularity direction out of x) and SPREE-like steering along it "
            "with a per-user strength; every re-ranker's grid extended toward the lowest Gini any steering form "
            "reaches. Each section also gives the serving setting (retrieval returns the top-m) and, where it is "
            "affordable, the oracle bound of query shifts." + (
                " **Tiny settings** (trimmed grids): a structural check, not the paper's numbers." if tiny else ""), ""]


def report(cfg: ReportConfig) -> dict:
    """Build the report of every SAE of ``cfg`` (one section each) and write it with its plots; with
    ``cfg.sections`` each section also on its own (``popsteer.stages.sections``); with ``cfg.assemble``
    the report is built from section folders instead."""
    out = Path(cfg.out)
    if cfg.assemble is not None:
        return assemble(cfg.assemble, out, head_lines(cfg.seed, cfg.tiny, f"popsteer report --assemble "
                                                      f"{Path(cfg.assemble).name} --out {out.name}"))
    results, files = [], [out]
    for path in cfg.saes:
        t0 = time.perf_counter()
        res = evaluate_section(path, cfg)
        res["seconds"] = time.perf_counter() - t0
        if any(r["slug"] == res["slug"] for r in results):
            raise PopSteerError(f"two SAE checkpoints for '{res['title']}': give one per dataset, model and origin")
        results.append(res)
    sections, logged = [], []
    for res in results:
        figure = methods_tradeoff(res, out.parent / f"{out.stem}_{res['slug']}_tradeoff.png")
        grids = out.parent / f"{out.stem}_{res['slug']}_grids.csv"
        write_csv(grids, grid_frame(res), index=False)
        files += [figure, grids]
        logged.append((res, [figure, grids]))
        sections.append(render_dataset(res, figure, grids))
        if cfg.sections is not None:
            one = f"popsteer report -p {Path(res['checkpoint']).name}" + (" --tiny" if cfg.tiny else "")
            files.append(write_section(res, cfg.sections, one, cfg.walltimes, res["seconds"]))
    command = "popsteer report " + " ".join(f"-p {Path(p).name}" for p in cfg.saes) + f" --out {out.name}" + \
        (" --tiny" if cfg.tiny else "")
    head = head_lines(cfg.seed, cfg.tiny, command)
    write_text(out, "\n".join(head + findings(results) + sections + closing_note(results)) + kept_by_hand(out))
    log.info("wrote %s and %d figure(s)", out, len(results))
    run_ids = log_to_mlflow(out, logged) if cfg.mlflow else []
    return {"report": str(out), "files": [str(f) for f in files[1:]], "mlflow_runs": run_ids,
            "datasets": {r["slug"]: {label: {k: v[k] for k in ("ndcg@10", "gini@10")}
                                     for label, _, v, _ in main_rows(r)} for r in results}}
