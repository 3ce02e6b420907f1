"""Stage 3, SAE: train a TopK SAE on a recommender's encoded user representations, write its checkpoint.

The CLI (``popsteer train-sae``, ``pipeline``) calls ``train_sae`` in this process; a sweep
trial (``popsteer.platform.trainable``) calls the same function on a Ray worker with the
sweep's encodings, its own output path and a per-epoch callback.

Both read the training part through ``popsteer.sae.stream.ParquetRows``: held whole when it has at
most ``SAEConfig.stream_buffer_rows`` rows (then bit for bit the in-memory path), streamed from the
encoding's Parquet files in shuffled windows when larger. The validation users are read into memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from popsteer.data import SequenceData
from popsteer.errors import PopSteerError
from popsteer.sae.io import sae_meta, save_sae
from popsteer.sae.resume import claim_state, discard_state
from popsteer.sae.stream import ParquetRows
from popsteer.sae.train import sae_report
from popsteer.sae.train import fit_sae
from popsteer.stages.config import SAEStageConfig
from popsteer.stages.context import load_base
from popsteer.stages.encode import Encoder, training_parts
from popsteer.stages.encoded import Encodings
from popsteer.util import checkpoint, memory
from popsteer.util.env import env_float

log = logging.getLogger(__name__)

STATE_EVERY_ENV = "POPSTEER_SAE_STATE_EVERY_S"
"""Seconds between two writes of a resumable training's state (default 30)."""


@dataclass
class SAEResult:
    """What ``train_sae`` wrote and measured."""

    checkpoint: str
    epochs: int
    train_minutes: float
    report: dict
    """fvu, dead_fraction, cosine on the validation users, valid NDCG@10 of the recommender and of the SAE."""
    history: list[dict]

    def summary(self) -> dict:
        return {"checkpoint": self.checkpoint, "epochs": self.epochs, "train_minutes": round(self.train_minutes, 2),
                **self.report}


def sae_stem(dataset: str, k: int, scale: int, model: str = "SASRec", tag: str = "", when: str | None = None) -> str:
    """The seed's SAE file name: ``SASRec_SAE-<date>-k<K>-<s>-<dataset>`` (``GRU4Rec_SAE-...`` on GRU4Rec);
    ``tag`` ('-2', ...) follows the date when that name is taken (``checkpoint.NewName``)."""
    return f"{model}_SAE-{when or checkpoint.seed_timestamp()}{tag}-k{k}-{scale}-{dataset}"


def default_out(out_dir: str | Path, dataset: str, k: int, scale: int, model: str) -> checkpoint.NewName:
    """The default SAE checkpoint: the seed's name, made unique in ``out_dir`` when saved."""
    when = checkpoint.seed_timestamp()
    return checkpoint.NewName(Path(out_dir), lambda tag: sae_stem(dataset, k, scale, model, tag, when))


def partial_state(cfg: SAEStageConfig, base_sha: str, part: str, model: str) -> Path:
    """Where a resumable training keeps its state: one file per base checkpoint, SAE config and input part."""
    key = json.dumps([base_sha, asdict(cfg.sae), part, cfg.encode.sasrec_train_mode], sort_keys=True, default=str)
    return Path(cfg.where.out_dir) / "partial" / f"{model}_SAE-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"


def train_sae(cfg: SAEStageConfig, *, out: str | Path | None = None, data: SequenceData | None = None,
              encodings: Encodings | None = None, encoder: Encoder | None = None,
              on_epoch: Callable[[int, dict], None] | None = None, extra_meta: dict | None = None,
              resumable: bool = False) -> SAEResult:
    """Train the SAE of ``cfg`` and save it (default: ``<out-dir>/SASRec_SAE-<date>-k<K>-<s>-<dataset>.safetensors``).

    ``data`` and ``encodings`` skip loading and encoding when the caller has them;
    ``extra_meta`` adds keys to the checkpoint header (a sweep trial's provenance). ``resumable``
    (the CLI): the trainer's state is kept in ``<out-dir>/partial/`` while it trains (written every
    ``$POPSTEER_SAE_STATE_EVERY_S`` seconds, default 30), so the same command run again after the
    process died continues from the last saved epoch; the state is removed once the checkpoint is
    written. (A sweep trial is retried by Tune from its start.)
    """
    every_s = env_float(STATE_EVERY_ENV, 30.0, low=0.0)  # a bad value is refused before any work
    base = load_base(cfg.base, cfg.where, cfg.encode, data)
    d, n = base.d, cfg.sae.hidden(base.d)
    parts = training_parts(cfg.encode, base.data.max_len, base.model.imported)
    rows = int(base.data.train_target_counts().sum())
    if base.model.imported:  # its training rows as imported (nothing to encode: the store is only read)
        rows = int(base.encodings(parts).manifest(parts[0])["rows"])
    held = min(rows, cfg.sae.stream_buffer_rows)  # the training rows in memory at once (the rest streamed)
    memory.check_fits(f"an SAE of {n:,} latents on {rows:,} inputs of d={d} ({held:,} held at once)",
                      memory.sae_training_bytes(d, n, cfg.sae.batch_size, held, base.data.n_users),
                      "lower --scale or --batch-size")
    if cfg.device != "cpu" and not torch.cuda.is_available():
        raise PopSteerError(f"device {cfg.device}: no CUDA GPU is available on this machine")
    t0 = time.perf_counter()
    encodings = encodings or base.encodings(parts, encoder)
    device = torch.device(cfg.device)
    files, manifest = encodings.files(parts[0])
    x_train = ParquetRows(files, cfg.sae.stream_buffer_rows, device, rows=manifest["rows"], d=manifest["d"])  # P rows
    x_valid = torch.from_numpy(encodings.read(parts[1])).to(device)  # (U, d)
    torch.manual_seed(cfg.sae.seed)
    base_sha = checkpoint.file_sha256(base.path)
    claim = claim_state(partial_state(cfg, base_sha, parts[0].name, base.model.recbole_class)) if resumable \
        else contextlib.nullcontext(None)
    with claim as state:  # held for the training: another run of the same settings trains without a state
        here: list[int] = []  # the epochs trained by this process (a resumed run trained the others before)

        def epoch_done(epoch: int, record: dict) -> None:
            here.append(epoch)
            if on_epoch is not None:
                on_epoch(epoch, record)

        sae, history = fit_sae(x_train, x_valid, cfg.sae, epoch_done, state_path=state,
                               save_every_s=every_s)
        report = sae_report(sae, x_valid)
        ev = base.evaluator("valid")
        with torch.no_grad():  # scoring on the CPU (Evaluator.topk returns numpy)
            report["valid_ndcg@10_sasrec"] = ev(x_valid.cpu(), base.item_emb)["ndcg@10"]
            report["valid_ndcg@10_sae"] = ev(sae(x_valid)[0].cpu(), base.item_emb)["ndcg@10"]
        earlier = sum(r["seconds"] for r in history if r["epoch"] not in here)  # epochs of the process(es) before
        minutes = (time.perf_counter() - t0 + earlier) / 60
        target = Path(out) if out else default_out(cfg.where.out_dir, base.data.name, cfg.sae.k, cfg.sae.scale,
                                                   base.model.recbole_class)
        meta = sae_meta(dataset=base.data.name, d=d, cfg=cfg.sae, base=base.path, base_sha256=base_sha,
                        prefix_stride=parts[0].stride, train_mode_quirk=cfg.encode.sasrec_train_mode, report=report,
                        history=history, train_minutes=minutes, extra=extra_meta, base_model=base.model.name)
        out = save_sae(target, sae.cpu(), meta)
        if state is not None:
            discard_state(state)
        log.info("SAE: FVU %.4f, dead %.2f%%, cosine %.4f, valid NDCG@10 %.4f (SASRec %.4f); saved %s",
                 report["fvu"], 100 * report["dead_fraction"], report["cosine"], report["valid_ndcg@10_sae"],
                 report["valid_ndcg@10_sasrec"], out)
    return SAEResult(str(out), len(history), minutes, report, history)
