"""The sweep runner: one YAML file, every stage in order, in one driver (``python -m popsteer.sweep``).

Six stages (``popsteer.platform.steps``); each writes ``<storage>/<name>/stages/<stage>.json``
and the next reads it:
  1. recommender: the given checkpoint, or one trained by a Ray task (cached);
  2. encode: Ray Data, once per checkpoint and part (``<storage>/encoded/...``, manifest-checked);
  3. sweep: a Ray Tune ``Tuner`` over k x scale (x seeds), one child MLflow run per trial;
     an existing experiment folder is resumed with ``Tuner.restore``;
  4. analysis: Cohen's d of the best (or every) trial's SAE from the encoded synthetic profiles;
  5. steering: the grid on evaluator actors over user shards: the table, the pick, a trade-off plot;
  6. baselines: the re-rankers tuned on validation (when ``stages.baselines`` is set).
``first`` / ``last`` rerun part of the chain from the files already there. One preflight,
one Ray connection and one MLflow parent run per sweep; the summary is
``<storage>/<name>/sweep_summary.json``, also on the parent run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from popsteer.errors import PopSteerError
from popsteer.models.registry import get_model
from popsteer.platform import steps
from popsteer.platform.lock import sweep_lock
from popsteer.platform.spec import SweepSpec
from popsteer.util.atomic import write_text
from popsteer.util.redact import redact_text

log = logging.getLogger(__name__)

STAGES = ("recommender", "encode", "sweep", "analysis", "steering", "baselines")


class SweepInterrupted(PopSteerError):
    """Tune stopped before every trial finished (SIGINT): the experiment folder can be resumed."""


def _json_default(value):
    return value.item() if hasattr(value, "item") else str(value)


def stage_file(spec: SweepSpec, stage: str) -> Path:
    return spec.experiment_dir / "stages" / f"{stage}.json"


def read_stage(spec: SweepSpec, stage: str) -> dict:
    path = stage_file(spec, stage)
    if not path.exists():
        raise PopSteerError(f"stage '{stage}' has no result file {path}: run it first")
    return json.loads(path.read_text())


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


def sweep_stage(spec: SweepSpec, rec: dict, enc: dict, data, tracker, resume: bool) -> dict:
    """Stage 3: the Tune sweep, one trial per (k, scale, repeat)."""
    from dataclasses import asdict

    from popsteer.platform.tracking import MlflowTrialCallback
    from popsteer.platform.trainable import TrialContext
    from popsteer.platform.tune import make_tuner, select_trials, trial_rows

    callbacks = []
    if tracker is not None:
        tracker.set_tag(tracker.parent_run_id, "popsteer.base_sha256", rec["sha256"])
        tracker.set_tag(tracker.parent_run_id, "popsteer.encoded_dir", enc["encoded_dir"])

        def trial_params(config: dict, search=spec.search) -> dict:
            cfg = search.sae_config(config["k"], config["scale"], config.get("repeat", 0))
            return {"trial": {k: config[k] for k in ("k", "scale", "repeat")}, "sae": asdict(cfg)}

        callbacks.append(MlflowTrialCallback(tracker, spec.to_dict(), trial_params))
    ctx = TrialContext(encoded_dir=enc["encoded_dir"], base_checkpoint=rec["checkpoint"], name=spec.name,
                       search=spec.search, experiment_dir=str(spec.experiment_dir), encode=spec.encode,
                       where=steps.workspace(spec), data=data,
                       model_class=get_model(rec.get("model", "sasrec")).recbole_class)
    tuner, restored = make_tuner(spec, ctx, callbacks, resume)
    results = tuner.fit()
    unfinished = len(results) - results.num_errors - results.num_terminated
    if unfinished:
        raise SweepInterrupted(f"the sweep was interrupted with {unfinished} trial(s) unfinished: "
                               f"run the same command again to resume it from {spec.experiment_dir}")
    rows = trial_rows(results)
    return {"restored": restored, "trials": rows, "errors": results.num_errors,
            "selected": [t["trial_key"] for t in select_trials(rows, spec)], "metric": spec.metric, "mode": spec.mode}


def run_sweep(spec: SweepSpec, resume: bool = False, first: str = "recommender", last: str = "baselines") -> dict:
    """Run the stages from ``first`` to ``last`` (earlier ones are read from their files); returns the summary."""
    from popsteer.platform.cluster import connect
    from popsteer.platform.preflight import preflight_spec

    run = STAGES[STAGES.index(first) : STAGES.index(last) + 1]
    preflight_spec(spec)  # an unreachable MLflow server or Ray head: one error line now, not minutes later
    with sweep_lock(spec.experiment_dir):  # a second driver of this sweep: one line, nothing written
        connect()
        return _run_stages(spec, resume, run)


def _run_stages(spec: SweepSpec, resume: bool, run: tuple[str, ...]) -> dict:
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    tracker = tracker_of(spec)
    results: dict[str, dict | None] = {}

    def stage(name: str, fn, *args) -> dict | None:
        if name not in run:
            results[name] = read_stage(spec, name) if stage_file(spec, name).exists() else None
            return results[name]
        t0 = time.perf_counter()
        results[name] = fn(*args)
        write_text(stage_file(spec, name), json.dumps(results[name], indent=2, default=_json_default))
        seconds[name] = round(time.perf_counter() - t0, 2)
        log.info("stage %s done in %.1fs", name, seconds[name])
        return results[name]

    rec = stage("recommender", steps.recommender_step, spec)
    data = steps.load_data(spec, rec) if rec and any(s in run for s in STAGES[1:]) else None
    enc = stage("encode", steps.encode_step, spec, rec, data)
    sweep = stage("sweep", sweep_stage, spec, rec, enc, data, tracker, resume)
    analysis = steering = None
    if sweep and sweep["selected"] and spec.stages.analysis:
        # the analysis and the grid share one pool of evaluator actors when both run here (one start-up)
        pool = steps.evaluator_pool(spec) if spec.stages.steering is not None and {"analysis", "steering"} <= set(run) \
            else None
        try:
            analysis = stage("analysis", steps.analysis_step, spec, enc, sweep, data, tracker, pool)
            if analysis and spec.stages.steering is not None:
                steering = stage("steering", steps.steering_step, spec, enc, analysis, data, tracker, pool)
        finally:
            if pool is not None:
                pool.shutdown()  # after steering's own shutdown: a no-op
    if spec.stages.baselines is not None and enc:
        stage("baselines", steps.baselines_step, spec, rec, enc, data, tracker, steering)
    seconds["total"] = round(time.perf_counter() - t_start, 2)
    import ray

    summary = {"name": spec.name, "experiment_dir": str(spec.experiment_dir),
               "ray_job_id": ray.get_runtime_context().get_job_id(),  # its actors and tasks in the state API
               "tracking_uri": redact_text(tracker.tracking_uri) if tracker else None,
               "parent_run_id": tracker.parent_run_id if tracker else None, "seconds": seconds,
               "recommender": rec, "encoded_dir": enc and enc["encoded_dir"], "sweep": sweep,
               "analysis": analysis, "steering": steering, "baselines": results.get("baselines")}
    path = spec.experiment_dir / "sweep_summary.json"
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
                                 if m not in ("num_neurons", "alpha")})
            headline.update(pick_num_neurons=pick["pick"]["num_neurons"], pick_alpha=pick["pick"]["alpha"])
    tracker.log_metrics(parent, headline)
    tracker.log_artifacts(parent, [summary_path])
    tracker.finish(parent, "FAILED" if sweep["errors"] else "FINISHED")
