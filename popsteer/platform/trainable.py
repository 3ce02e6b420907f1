"""The Ray Tune function trainable of an SAE sweep: one TopK SAE per trial, from the shared encoding.

A trial reads x from the encoded folder (never re-encodes), runs ``train_sae`` and reports
every epoch through ``ray.tune.report``; its last report carries the best epoch's metrics,
the SAE's quality (``sae_report``, valid NDCG@10 of SASRec and of the reconstruction) and a
checkpoint folder holding ``sae.safetensors`` (a regular PopSteer SAE checkpoint: ``popsteer
analyze -p`` accepts it) and ``summary.json``.

``train_sae`` has no resume hook, so a trial retried after its worker died trains again
from the start; training is seeded and deterministic on CPU, and the tracker logs each
epoch once. A trial restored with its final checkpoint only reports it again.

Each start appends ``<pid> <trial_id>`` to ``<experiment>/trial_pids/<trial_key>.pid`` so an
operator (or a test) can find the process that runs a trial.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from popsteer.platform.spec import EPOCH_METRICS, SearchSpec

SAE_FILE = "sae.safetensors"
SUMMARY_FILE = "summary.json"


@dataclass
class TrialContext:
    """What every trial needs besides its config; shipped once through the object store."""

    encoded_dir: str
    base_checkpoint: str
    base_sha256: str
    dataset: str
    search: SearchSpec
    experiment_dir: str
    sasrec_train_mode: bool
    valid_evaluator: object  # popsteer.eval.evaluator.Evaluator of the valid split
    item_emb: np.ndarray  # (n_items, d) SASRec's item table


def trial_key(config: dict) -> str:
    """A trial's stable name from its searched values (the same across restores and restarts)."""
    return f"k{int(config['k'])}-s{int(config['scale'])}-r{int(config.get('repeat', 0))}"


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
    import torch
    from ray import tune

    from popsteer.util import checkpoint
    from popsteer.platform.cluster import torch_device
    from popsteer.platform.encode import EncodedData
    from popsteer.sae.train import sae_report, train_sae

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
    cfg = ctx.search.sae_config(config["k"], config["scale"], config.get("repeat", 0))
    encoded = EncodedData.open(ctx.encoded_dir)
    device = torch_device()
    x_train = torch.from_numpy(encoded.read("train")).to(device)  # (P, d)
    x_valid = torch.from_numpy(encoded.read("valid")).to(device)  # (U, d)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()

    def on_epoch(epoch: int, record: dict) -> None:
        tune.report({**record, "final": False})

    sae, history = train_sae(x_train, x_valid, cfg, on_epoch)
    minutes = (time.perf_counter() - t0) / 60
    quality = sae_report(sae, x_valid)
    # scoring on CPU (Evaluator.topk returns numpy); a copy, the object store's array is read-only
    item_emb = torch.tensor(ctx.item_emb)
    with torch.no_grad():
        ndcg_sasrec = ctx.valid_evaluator(x_valid.cpu(), item_emb)["ndcg@10"]
        ndcg_sae = ctx.valid_evaluator(sae(x_valid)[0].cpu(), item_emb)["ndcg@10"]
    best = min(history, key=lambda r: r["valid_loss"])  # train_sae's criterion: the first best epoch
    final = {m: best[m] for m in EPOCH_METRICS}
    final.update({"epoch": history[-1]["epoch"], "best_epoch": best["epoch"], "epochs_trained": len(history),
                  "final": True, "sae_fvu": quality["fvu"], "sae_dead_fraction": quality["dead_fraction"],
                  "sae_cosine": quality["cosine"], metric_name("valid_ndcg@10_sasrec"): ndcg_sasrec,
                  metric_name("valid_ndcg@10_sae"): ndcg_sae, "train_minutes": minutes})
    d = int(x_train.shape[1])
    meta = {"kind": "sae", "dataset": ctx.dataset, "d": d, "n_latents": cfg.hidden(d), "sae": asdict(cfg),
            "base_checkpoint": ctx.base_checkpoint, "base_sha256": ctx.base_sha256,
            "sasrec_train_mode_quirk": ctx.sasrec_train_mode,
            "report": {**quality, "valid_ndcg@10_sasrec": ndcg_sasrec, "valid_ndcg@10_sae": ndcg_sae},
            "history": history, "train_minutes": minutes, "created": _dt.datetime.now().isoformat(timespec="seconds"),
            "sweep": {"trial_key": key, "trial_id": trial_id, "encoded_dir": ctx.encoded_dir}}
    with tempfile.TemporaryDirectory(prefix=f"popsteer-{key}-") as tmp:
        checkpoint.save(Path(tmp) / SAE_FILE, sae.state_dict(), meta)
        (Path(tmp) / SUMMARY_FILE).write_text(json.dumps({"trial_key": key, "config": dict(config), "final": final}))
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(tmp))
