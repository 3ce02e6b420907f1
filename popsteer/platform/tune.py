"""The SAE sweep's Ray Tune pieces: the search space, the scheduler, the Tuner (new or restored),
and the trials read back from its results."""

from __future__ import annotations

import logging
from pathlib import Path

from popsteer.errors import PopSteerError
from popsteer.platform.spec import SweepSpec

log = logging.getLogger(__name__)


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
    """One row per trial: key, config, whether it finished, its error, its SAE checkpoint and metrics."""
    from popsteer.platform.trainable import trial_key

    rows = []
    for r in results:
        metrics = {k: v for k, v in (r.metrics or {}).items() if isinstance(v, (int, float, str, bool))}
        sae = metrics.get("sae_checkpoint")
        rows.append({"trial_key": trial_key(r.config), "trial_id": metrics.get("trial_id"),
                     "config": {k: r.config[k] for k in ("k", "scale", "repeat")},
                     "finished": bool(metrics.get("final")), "error": repr(r.error) if r.error else None,
                     "sae_checkpoint": sae if sae and Path(sae).exists() else None, "metrics": metrics})
    return sorted(rows, key=lambda t: t["trial_key"])


def select_trials(rows: list[dict], spec: SweepSpec) -> list[dict]:
    """The trials whose SAEs go on: the best by ``metric`` / ``mode``, every finished one, or none."""
    done = [t for t in rows if t["finished"] and t["sae_checkpoint"]]
    if spec.stages.trials == "none" or not done:
        return []
    if spec.stages.trials == "all":
        return done
    sign = 1 if spec.mode == "min" else -1
    return [min(done, key=lambda t: sign * t["metrics"][spec.metric])]
