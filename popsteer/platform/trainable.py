"""The Ray Tune function trainable of an SAE sweep: one trial = one call of the SAE stage.

A trial runs ``popsteer.stages.sae.train_sae`` on the sweep's encodings (never re-encoding),
reports every epoch through ``ray.tune.report`` and writes its SAE where the CLI's layout
puts SAEs of a sweep: ``<experiment>/saes/SASRec_SAE-<sweep>-<trial key>-<dataset>.safetensors``
(a regular PopSteer SAE checkpoint: ``popsteer analyze``/``steer``/``report -p`` accept it).
Its last report carries the best epoch's metrics and the SAE's quality, with a Tune
checkpoint holding ``summary.json``.

Its training inputs are streamed from the sweep's shared Parquet encoding by the stage
(``popsteer.sae.stream.ParquetRows``): at most ``search.sae.stream_buffer_rows`` rows are held at
once, and a part no larger is held whole (the in-memory path, bit for bit); the validation users
are read into memory. The streamed order depends only on the seed, the buffer and the row count,
not on how the encoding's files were cut, so a retried trial sees the same batches.

``train_sae`` has no resume hook, so a trial retried after its worker died trains again
from the start; training is seeded and deterministic on CPU, and the tracker logs each
epoch once. A trial restored with its final checkpoint only reports it again.

Each start appends ``<pid> <trial_id>`` to ``<experiment>/trial_pids/<trial_key>.pid`` so an
operator (or a test) can find the process that runs a trial.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from popsteer.data import SequenceData
from popsteer.platform.spec import EPOCH_METRICS, SearchSpec
from popsteer.stages.config import EncodeConfig, SAEStageConfig, Workspace

SUMMARY_FILE = "summary.json"


@dataclass
class TrialContext:
    """What every trial needs besides its config; shipped once through the object store."""

    encoded_dir: str
    base_checkpoint: str
    name: str
    search: SearchSpec
    experiment_dir: str
    encode: EncodeConfig
    where: Workspace
    data: SequenceData
    model_class: str = "SASRec"
    """The base model's RecBole class (names the trials' SAE files)."""


def trial_key(config: dict) -> str:
    """A trial's stable name from its searched values (the same across restores and restarts)."""
    return f"k{int(config['k'])}-s{int(config['scale'])}-r{int(config.get('repeat', 0))}"


def trial_sae_path(experiment_dir: str | Path, name: str, key: str, dataset: str, model: str = "SASRec") -> Path:
    return Path(experiment_dir) / "saes" / f"{model}_SAE-{name}-{key}-{dataset}.safetensors"


def metric_name(name: str) -> str:
    """A metric name MLflow and Tune both accept ('@' is not allowed by MLflow)."""
    return name.replace("@", "_at_")


def _record_pid(ctx: TrialContext, key: str, trial_id: str) -> None:
    folder = Path(ctx.experiment_dir) / "trial_pids"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{key}.pid", "a") as fh:
        fh.write(f"{os.getpid()} {trial_id}\n")


def train_trial(config: dict, ctx: TrialContext) -> None:
    """Tune function trainable: config holds k, scale and repeat."""
    from ray import tune

    from popsteer.platform.cluster import torch_device
    from popsteer.stages.encoded import Encodings
    from popsteer.stages.sae import train_sae

    key = trial_key(config)
    trial_id = tune.get_context().get_trial_id()
    _record_pid(ctx, key, trial_id)
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            summary_path = Path(folder) / SUMMARY_FILE
            if summary_path.exists():
                tune.report(json.loads(summary_path.read_text())["final"])
                return
    cfg = SAEStageConfig(base=ctx.base_checkpoint, sae=ctx.search.sae_config(config["k"], config["scale"],
                                                                             config.get("repeat", 0)),
                         encode=ctx.encode, where=ctx.where, device=torch_device().type)
    out = trial_sae_path(ctx.experiment_dir, ctx.name, key, ctx.data.name, ctx.model_class)
    result = train_sae(cfg, out=out, data=ctx.data, encodings=Encodings(ctx.encoded_dir),
                       on_epoch=lambda epoch, record: tune.report({**record, "final": False}),
                       extra_meta={"sweep": {"name": ctx.name, "trial_key": key, "trial_id": trial_id,
                                             "encoded_dir": ctx.encoded_dir}})
    best = min(result.history, key=lambda r: r["valid_loss"])  # train_sae's criterion: the first best epoch
    final = {m: best[m] for m in EPOCH_METRICS}
    report = result.report
    final.update({"epoch": result.history[-1]["epoch"], "best_epoch": best["epoch"], "epochs_trained": result.epochs,
                  "final": True, "sae_fvu": report["fvu"], "sae_dead_fraction": report["dead_fraction"],
                  "sae_cosine": report["cosine"], metric_name("valid_ndcg@10_sasrec"): report["valid_ndcg@10_sasrec"],
                  metric_name("valid_ndcg@10_sae"): report["valid_ndcg@10_sae"], "train_minutes": result.train_minutes,
                  "sae_checkpoint": result.checkpoint})
    with tempfile.TemporaryDirectory(prefix=f"popsteer-{key}-") as tmp:
        (Path(tmp) / SUMMARY_FILE).write_text(json.dumps({"trial_key": key, "config": dict(config), "final": final}))
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(tmp))
