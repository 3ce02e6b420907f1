"""The generic sweep runner: ``python -m popsteer.sweep sweeps/<name>.yaml``.

Five stages; each writes ``<storage>/<name>/stages/<stage>.json`` and the next one reads it:
  1. recommender: the given checkpoint, or one trained by a Ray task (cached);
  2. encode: Ray Data, once per checkpoint (``<storage>/encoded/...``, manifest-checked);
  3. sweep: a Ray Tune ``Tuner`` over k x scale (x seeds), one child MLflow run per trial;
     an existing experiment folder is resumed with ``Tuner.restore``;
  4. analysis: Cohen's d of the best (or every) trial's SAE from the encoded synthetic profiles;
  5. steering: the grid on evaluator actors: one table, the validation pick, a trade-off plot.
``--only STAGE`` / ``--from STAGE`` rerun part of the chain from the files already there.
The summary is ``<storage>/<name>/sweep_summary.json``; everything is also on the MLflow parent run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from popsteer.errors import PopSteerError
from popsteer.platform.spec import SweepSpec, load_spec
from popsteer.util.redact import redact_text

log = logging.getLogger(__name__)

STAGES = ("recommender", "encode", "sweep", "analysis", "steering")


class SweepInterrupted(PopSteerError):
    """Tune stopped before every trial finished (SIGINT): the experiment folder can be resumed."""


# ------------------------------------------------------------------ stage result files


def stage_file(spec: SweepSpec, stage: str) -> Path:
    return spec.experiment_dir / "stages" / f"{stage}.json"


def write_stage(spec: SweepSpec, stage: str, result: dict) -> dict:
    from popsteer.util.atomic import write_text

    write_text(stage_file(spec, stage), json.dumps(result, indent=2, default=_json_default))
    return result


def read_stage(spec: SweepSpec, stage: str) -> dict:
    path = stage_file(spec, stage)
    if not path.exists():
        raise PopSteerError(f"stage '{stage}' has no result file {path}: run it first")
    return json.loads(path.read_text())


def _json_default(value):
    return value.item() if hasattr(value, "item") else str(value)


def tracker_of(spec: SweepSpec):
    """The sweep's MLflow tracker with its parent run (created once, found again by tag), or None.

    While the server cannot be reached it logs to ``<experiment>/mlflow_journal/`` (``popsteer mlflow sync``)."""
    if not spec.mlflow.enabled:
        return None
    from popsteer.platform.journal import JOURNAL_DIR, JournaledTracker
    from popsteer.platform.tracking import Tracker, resolve_tracking_uri

    tracker = JournaledTracker(Tracker(resolve_tracking_uri(spec.mlflow.tracking_uri), spec.experiment_name,
                                       str(spec.experiment_dir)), spec.experiment_dir / JOURNAL_DIR)
    tracker.start_parent(spec.name, spec.to_dict())
    return tracker


# ------------------------------------------------------------------ stages


def stage_recommender(spec: SweepSpec) -> dict:
    from popsteer.util import checkpoint
    from popsteer.platform import stages

    path = stages.recommender_stage(spec).resolve()
    meta = checkpoint.read_meta(path)
    return write_stage(spec, "recommender", {"checkpoint": str(path), "sha256": checkpoint.file_sha256(path),
                                             "max_len": meta["sasrec"]["max_len"], "d": meta["sasrec"]["hidden_size"]})


def _load(spec: SweepSpec, rec: dict):
    """The dataset (at the checkpoint's max length), SASRec and its item table (n_items, d)."""
    from popsteer.data import load_dataset
    from popsteer.models.io import load_recommender

    data = load_dataset(spec.dataset, spec.data_dir, max_len=rec["max_len"])
    sasrec, _ = load_recommender(rec["checkpoint"], data)
    return data, sasrec.item_embedding.weight.detach().numpy().copy()


def stage_encode(spec: SweepSpec, rec: dict) -> dict:
    from popsteer.platform.encode import ensure_encoded

    data, _ = _load(spec, rec)
    e = spec.encode
    encoded = ensure_encoded(rec["checkpoint"], data, spec.encoded_root, profile_seed=e.profile_seed,
                             sasrec_train_mode=e.sasrec_train_mode, actors=e.actors, cpus_per_actor=e.cpus_per_actor,
                             gpus_per_actor=e.gpus_per_actor, batch_size=e.batch_size, block_rows=e.block_rows,
                             prefix_stride=e.prefix_stride)
    return write_stage(spec, "encode", {"encoded_dir": str(encoded.folder), "manifest": encoded.manifest})


def param_space(spec: SweepSpec) -> dict:
    from ray import tune

    return {"k": tune.grid_search(list(spec.search.k)), "scale": tune.grid_search(list(spec.search.scale)),
            "repeat": tune.grid_search(list(range(spec.num_samples)))}


def scheduler(spec: SweepSpec):
    if spec.scheduler.type == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler

    max_t = spec.scheduler.max_t or spec.search.sae_config(spec.search.k[0], spec.search.scale[0], 0).max_epochs + 1
    return ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=spec.scheduler.grace_period,
                         reduction_factor=spec.scheduler.reduction_factor)


def make_tuner(spec: SweepSpec, ctx, callbacks: list, resume: bool = False):
    """A new Tuner, or ``Tuner.restore`` when the experiment folder holds a restorable run."""
    from ray import tune

    from popsteer.platform.trainable import train_trial

    trainable = tune.with_resources(tune.with_parameters(train_trial, ctx=ctx),
                                    {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    exp_dir = str(spec.experiment_dir)
    if tune.Tuner.can_restore(exp_dir):
        log.info("resuming the sweep in %s (Tuner.restore)", exp_dir)
        return tune.Tuner.restore(exp_dir, trainable, resume_unfinished=True, resume_errored=True), True
    if resume:
        raise PopSteerError(f"--resume: no restorable sweep in {exp_dir}")
    return tune.Tuner(
        trainable,
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=scheduler(spec), num_samples=1,
                                    max_concurrent_trials=spec.max_concurrent_trials),
        run_config=tune.RunConfig(name=spec.name, storage_path=spec.storage,
                                  failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1), callbacks=callbacks,
                                  verbose=1),
    ), False


def trial_rows(results) -> list[dict]:
    from popsteer.platform.trainable import SAE_FILE, trial_key

    rows = []
    for r in results:
        ckpt = Path(r.checkpoint.path) / SAE_FILE if r.checkpoint is not None else None
        metrics = {k: v for k, v in (r.metrics or {}).items() if isinstance(v, (int, float, str, bool))}
        rows.append({"trial_key": trial_key(r.config), "trial_id": metrics.get("trial_id"),
                     "config": {k: r.config[k] for k in ("k", "scale", "repeat")},
                     "finished": bool(metrics.get("final")), "error": repr(r.error) if r.error else None,
                     "sae_checkpoint": str(ckpt) if ckpt is not None and ckpt.exists() else None, "metrics": metrics})
    return sorted(rows, key=lambda t: t["trial_key"])


def select_trials(rows: list[dict], spec: SweepSpec) -> list[dict]:
    done = [t for t in rows if t["finished"] and t["sae_checkpoint"]]
    if spec.stages.trials == "none" or not done:
        return []
    if spec.stages.trials == "all":
        return done
    sign = 1 if spec.mode == "min" else -1
    return [min(done, key=lambda t: sign * t["metrics"][spec.metric])]


def stage_sweep(spec: SweepSpec, rec: dict, enc: dict, tracker, resume: bool = False) -> dict:
    from popsteer.eval.evaluator import Evaluator
    from popsteer.platform.tracking import MlflowTrialCallback
    from popsteer.platform.trainable import TrialContext

    data, item_emb = _load(spec, rec)
    callbacks = []
    if tracker is not None:
        tracker.set_tag(tracker.parent_run_id, "popsteer.base_sha256", rec["sha256"])
        tracker.set_tag(tracker.parent_run_id, "popsteer.encoded_dir", enc["encoded_dir"])

        def trial_params(config: dict, search=spec.search) -> dict:
            cfg = search.sae_config(config["k"], config["scale"], config.get("repeat", 0))
            return {"trial": {k: config[k] for k in ("k", "scale", "repeat")}, "sae": asdict(cfg)}

        callbacks.append(MlflowTrialCallback(tracker, spec.to_dict(), trial_params))
    ctx = TrialContext(encoded_dir=enc["encoded_dir"], base_checkpoint=rec["checkpoint"], base_sha256=rec["sha256"],
                       dataset=data.name, search=spec.search, experiment_dir=str(spec.experiment_dir),
                       sasrec_train_mode=spec.encode.sasrec_train_mode,
                       valid_evaluator=Evaluator.for_split(data, "valid"), item_emb=item_emb)
    tuner, restored = make_tuner(spec, ctx, callbacks, resume)
    results = tuner.fit()
    unfinished = len(results) - results.num_errors - results.num_terminated
    if unfinished:
        raise SweepInterrupted(f"the sweep was interrupted with {unfinished} trial(s) unfinished: "
                               f"run the same command again to resume it from {spec.experiment_dir}")
    rows = trial_rows(results)
    selected = [t["trial_key"] for t in select_trials(rows, spec)]
    return write_stage(spec, "sweep", {"restored": restored, "trials": rows, "errors": results.num_errors,
                                       "selected": selected, "metric": spec.metric, "mode": spec.mode})


def stage_analysis(spec: SweepSpec, enc: dict, sweep: dict, tracker) -> dict:
    from popsteer.platform import stages

    trials = {t["trial_key"]: t for t in sweep["trials"]}
    saes = {key: trials[key]["sae_checkpoint"] for key in sweep["selected"]}
    out = stages.analysis_stage(saes, enc["encoded_dir"], spec.experiment_dir / "stages" / "analysis",
                                spec.resources.cpu, spec.resources.gpu)
    result = {key: {"sae_checkpoint": saes[key], "n_positive": v["n_positive"], "median_abs_d": v["median_abs_d"],
                    "files": [str(f) for f in v["files"]]} for key, v in out.items()}
    if tracker is not None:
        for key, v in result.items():
            tracker.log_artifacts(tracker.child_run(key, {}), v["files"], "analysis")
            if len(result) == 1:
                tracker.log_artifacts(tracker.parent_run_id, v["files"], f"analysis/{key}")
    return write_stage(spec, "analysis", result)


def stage_steering(spec: SweepSpec, rec: dict, enc: dict, analysis: dict, tracker) -> dict:
    import pandas as pd

    from popsteer.eval.evaluator import Evaluator
    from popsteer.platform import stages
    from popsteer.platform.encode import EncodedData
    from popsteer.platform.evaluators import SAEEntry
    from popsteer.steering.steer import NeuronScores

    data, item_emb = _load(spec, rec)
    entries, n_hidden = [], {}
    for key, v in analysis.items():
        folder = Path(v["files"][0]).parent
        d = pd.read_csv(folder / "cohens_d.csv", index_col=0)["cohen_d"].to_numpy()
        sp = pd.read_csv(folder / "row_stats_popular.csv", index_col=0)["std"].to_numpy()
        su = pd.read_csv(folder / "row_stats_unpopular.csv", index_col=0)["std"].to_numpy()
        entries.append(SAEEntry(key, v["sae_checkpoint"], NeuronScores(d=d, sigma_pop=sp, sigma_unpop=su)))
        n_hidden[key] = len(d)
    encoded = EncodedData.open(enc["encoded_dir"])
    evaluators = {s: Evaluator.for_split(data, s) for s in ("valid", "test")}
    out = stages.steering_stage(entries, n_hidden, spec.stages.steering, item_emb, encoded.read("valid"),
                                encoded.read("test"), evaluators, spec.experiment_dir / "stages" / "steering")
    result = {"rows": out["rows"], "points": out["points"], "picks": out["picks"], "files": [str(f) for f in out["files"]]}
    if tracker is not None:
        tracker.log_artifacts(tracker.parent_run_id, out["files"], "steering")
    return write_stage(spec, "steering", result)


# ------------------------------------------------------------------ the chain


def run_sweep(spec: SweepSpec, resume: bool = False, first: str = "recommender", last: str = "steering") -> dict:
    """Run the stages from ``first`` to ``last`` (earlier ones are read from their files); returns the summary."""
    from popsteer.platform.cluster import connect
    from popsteer.platform.preflight import preflight_spec

    run = STAGES[STAGES.index(first) : STAGES.index(last) + 1]
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    preflight_spec(spec)  # an unreachable MLflow server or Ray head: one error line now, not minutes later
    connect()
    tracker = tracker_of(spec)
    results: dict[str, dict] = {}

    def stage(name: str, fn, *args) -> dict | None:
        if name not in run:
            return read_stage(spec, name) if stage_file(spec, name).exists() else None
        t0 = time.perf_counter()
        results[name] = fn(*args)
        seconds[name] = round(time.perf_counter() - t0, 2)
        log.info("stage %s done in %.1fs", name, seconds[name])
        return results[name]

    rec = stage("recommender", stage_recommender, spec)
    enc = stage("encode", stage_encode, spec, rec)
    sweep = stage("sweep", stage_sweep, spec, rec, enc, tracker, resume)
    analysis = steering = None
    if sweep and sweep["selected"] and spec.stages.analysis:
        analysis = stage("analysis", stage_analysis, spec, enc, sweep, tracker)
        if analysis and spec.stages.steering is not None:
            steering = stage("steering", stage_steering, spec, rec, enc, analysis, tracker)
    seconds["total"] = round(time.perf_counter() - t_start, 2)
    summary = {"name": spec.name, "experiment_dir": str(spec.experiment_dir),
               "tracking_uri": redact_text(tracker.tracking_uri) if tracker else None,
               "parent_run_id": tracker.parent_run_id if tracker else None, "seconds": seconds,
               "recommender": rec, "encoded_dir": enc and enc["encoded_dir"], "sweep": sweep,
               "analysis": analysis, "steering": steering}
    path = spec.experiment_dir / "sweep_summary.json"
    from popsteer.util.atomic import write_text

    write_text(path, json.dumps(summary, indent=2, default=_json_default))
    if tracker is not None:
        _log_headline(tracker, summary, path)
    log.info("sweep %s: %s", spec.name, seconds)
    return summary


def _log_headline(tracker, summary: dict, summary_path: Path) -> None:
    """Headline metrics and the summary on the parent run; the run is closed."""
    from popsteer.platform.trainable import metric_name

    parent = tracker.parent_run_id
    sweep = summary["sweep"] or {"trials": [], "errors": 0, "selected": []}
    headline = {"trials": len(sweep["trials"]), "trials_errored": sweep["errors"], "wall_seconds": summary["seconds"]["total"]}
    if len(sweep["selected"]) == 1:
        best = next(t for t in sweep["trials"] if t["trial_key"] == sweep["selected"][0])
        headline[f"best_{sweep['metric']}"] = best["metrics"][sweep["metric"]]
        tracker.set_tag(parent, "popsteer.best_trial", best["trial_key"])
        pick = ((summary["steering"] or {}).get("picks") or {}).get(best["trial_key"]) or {}
        if pick.get("pick"):
            for split in ("valid", "test"):
                headline.update({f"pick_{split}_{metric_name(m)}": v for m, v in pick[split].items()
                                 if m not in ("num_neurons", "alpha", "sae", "split")})
            headline.update(pick_num_neurons=pick["pick"]["num_neurons"], pick_alpha=pick["pick"]["alpha"])
    tracker.log_metrics(parent, headline)
    tracker.log_artifacts(parent, [summary_path])
    tracker.finish(parent, "FAILED" if sweep["errors"] else "FINISHED")


# ------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    from popsteer.app.cli import _Parser

    p = _Parser(prog="python -m popsteer.sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="the sweep file, e.g. sweeps/smoke.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the sweep file (dotted path, YAML value), e.g. --set storage=/data/sweeps")
    p.add_argument("--resume", action="store_true",
                   help="require an interrupted sweep to resume (without it, one is resumed when it exists)")
    p.add_argument("--from", dest="first", choices=STAGES, default=STAGES[0], help="first stage to run")
    p.add_argument("--to", dest="last", choices=STAGES, default=STAGES[-1], help="last stage to run")
    p.add_argument("--only", choices=STAGES, default=None, help="run one stage (from the files of the earlier ones)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved sweep file as JSON and exit")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from popsteer.app.cli import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    # a snapshot per finished trial is what resuming wants; Tune would warn about it on short trials
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    try:
        spec = load_spec(args.spec, args.overrides)
        if args.dry_run:
            print(json.dumps(spec.to_dict(), indent=2))
            return 0
        first, last = (args.only, args.only) if args.only else (args.first, args.last)
        summary = run_sweep(spec, args.resume, first, last)
    except PopSteerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 130 if isinstance(exc, SweepInterrupted) else 2
    except KeyboardInterrupt:
        print("error: interrupted (run the same command again to resume)", file=sys.stderr)
        return 130
    sweep = summary["sweep"] or {}
    brief = {"name": summary["name"], "experiment_dir": summary["experiment_dir"],
             "parent_run_id": summary["parent_run_id"], "seconds": summary["seconds"],
             "errors": sweep.get("errors"), "selected": sweep.get("selected"),
             "picks": {k: v.get("pick") for k, v in ((summary["steering"] or {}).get("picks") or {}).items()}}
    print(json.dumps(brief, indent=2, default=_json_default))
    return 1 if sweep.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
