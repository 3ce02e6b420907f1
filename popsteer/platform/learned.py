"""Learned steering's fits on the platform: one Ray Tune trial per lam, each a call of the stage's ``fit_one``.

``TuneFitter`` is the platform's ``popsteer.stages.learned.Fitter``: the grid stage hands it the lams
its SAE's folder does not hold yet, and it runs them as a Tune experiment
``<storage>/<sweep>-learned-<SAE stem>-<hash of the lams>`` (``param_space = {"lam": grid_search(lams)}``). A trial loads
the SAE's context on its worker, reads the training pairs from the sweep's encodings, fits one delta
(single-threaded and seeded, so the same bits as in the CLI's process) and writes it to
``<experiment>/learned/<SAE stem>/lam-<lam>.safetensors`` with its record beside it; the driver reads
the files back in lam order. A failed trial is one error line naming its lam.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from popsteer.errors import PopSteerError
from popsteer.stages.config import LearnedConfig, SAERef
from popsteer.util.atomic import atomic_path, write_text

log = logging.getLogger(__name__)


def delta_file(folder: str | Path, lam: float) -> Path:
    return Path(folder) / f"lam-{float(lam)!r}.safetensors"


def fit_trial(config: dict, ref: SAERef, cfg: LearnedConfig, encoded_dir: str | None, out_dir: str) -> None:
    """One trial: ``fit_one`` at ``config["lam"]``; the delta and its record to ``out_dir``."""
    from ray import tune

    from popsteer.stages.context import load_sae_context
    from popsteer.stages.encoded import Encodings
    from popsteer.stages.learned import fit_one, training_pairs

    ctx = load_sae_context(ref)
    lam = float(config["lam"])
    fit = fit_one(ctx, cfg, lam, training_pairs(ctx, Encodings(encoded_dir) if encoded_dir else None))
    path = delta_file(out_dir, lam)
    with atomic_path(path) as tmp:
        save_file({"delta": torch.as_tensor(fit["delta"]).contiguous()}, str(tmp))
    write_text(path.with_suffix(".json"), json.dumps({"lam": lam, "history": fit["history"], "seconds": fit["seconds"]}))
    tune.report({"lam": lam, "ce": fit["history"][-1]["ce"], "concentration": fit["history"][-1]["concentration"],
                 "seconds": fit["seconds"]})


def _key(lams: list[float]) -> str:
    """A short name for one set of lams (a refinement's fits are an experiment of their own)."""
    return hashlib.sha256(json.dumps([float(v) for v in lams]).encode()).hexdigest()[:8]


class TuneFitter:
    """The platform's fitter: one Tune trial per lam (module docstring)."""

    def __init__(self, ref: SAERef, storage: str | Path, name: str, experiment_dir: str | Path, cpus: float = 1.0,
                 max_concurrent: int | None = None) -> None:
        self.ref, self.storage, self.name = ref, str(storage), name
        self.experiment_dir, self.cpus, self.max_concurrent = Path(experiment_dir), cpus, max_concurrent

    def fit(self, ctx, cfg: LearnedConfig, lams: list[float], encodings) -> list[dict]:
        from ray import tune

        out_dir = self.experiment_dir / "learned" / ctx.path.stem
        encoded_dir = str(encodings.folder) if encodings is not None else None
        trainable = tune.with_resources(
            tune.with_parameters(fit_trial, ref=self.ref, cfg=cfg, encoded_dir=encoded_dir, out_dir=str(out_dir)),
            {"cpu": self.cpus})
        tuner = tune.Tuner(trainable, param_space={"lam": tune.grid_search([float(v) for v in lams])},
                           tune_config=tune.TuneConfig(max_concurrent_trials=self.max_concurrent),
                           run_config=tune.RunConfig(name=f"{self.name}-learned-{ctx.path.stem}-{_key(lams)}",
                                                     storage_path=self.storage, verbose=0))
        results = tuner.fit()
        failed = [r for r in results if r.error is not None]
        if failed:
            raise PopSteerError(f"learned steering: the fit at lam={failed[0].config['lam']:g} failed on its worker: "
                                f"{str(failed[0].error).splitlines()[0][:300]}")
        log.info("learned steering: %d Tune trial(s) fitted on the cluster", len(lams))
        out = []
        for lam in lams:
            path = delta_file(out_dir, lam)
            record = json.loads(path.with_suffix(".json").read_text())
            out.append({"lam": float(lam), "delta": load_file(path)["delta"].numpy(), "history": record["history"],
                        "seconds": record["seconds"]})
        return out
