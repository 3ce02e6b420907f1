"""SAE checkpoints: one header layout, written by every executor, read back with its config.

A checkpoint is a safetensors file (``popsteer.util.checkpoint``) whose header holds
``kind: sae``, the dataset, d and n, the resolved ``SAEConfig``, the base recommender's path
and SHA-256 (an SAE refuses a changed base), how its inputs were encoded, its quality
report, the per-epoch history and, for a sweep trial, the trial's provenance.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict
from pathlib import Path

from popsteer.errors import PopSteerError
from popsteer.sae.model import SAEConfig, TopKSAE
from popsteer.util import checkpoint
from popsteer.util.configs import validate


def sae_meta(*, dataset: str, d: int, cfg: SAEConfig, base: str | Path, base_sha256: str, prefix_stride: int,
             train_mode_quirk: bool, report: dict, history: list[dict], train_minutes: float,
             extra: dict | None = None, base_model: str = "sasrec") -> dict:
    """The header of an SAE checkpoint (the one place its keys are written)."""
    return {"kind": "sae", "dataset": dataset, "base_model": base_model, "d": d, "n_latents": cfg.hidden(d),
            "sae": asdict(cfg),
            "base_checkpoint": str(Path(base).resolve()), "base_sha256": base_sha256,
            "sasrec_train_mode_quirk": bool(train_mode_quirk), "prefix_stride": int(prefix_stride),
            "report": report, "history": history, "train_minutes": train_minutes,
            "created": _dt.datetime.now().isoformat(timespec="seconds"), **(extra or {})}


def save_sae(path: str | Path | checkpoint.NewName, sae: TopKSAE, meta: dict) -> Path:
    return checkpoint.save(path, sae.state_dict(), meta)


def load_sae(path: str | Path) -> tuple[TopKSAE, dict]:
    """The SAE (eval mode, on the CPU) and its header."""
    tensors, meta = checkpoint.load(path, kind="sae")
    cfg = validate(SAEConfig, meta["sae"], f"checkpoint {path}", "sae")
    d, n = meta["d"], meta["n_latents"]
    try:
        hidden = cfg.hidden(d)
    except PopSteerError as exc:
        raise PopSteerError(f"checkpoint {path}: header: {exc}") from None
    if hidden != n:
        raise PopSteerError(f"checkpoint {path}: header field 'n_latents' is {n}, but scale * d = "
                            f"{cfg.scale} * {d} = {hidden}")
    checkpoint.check_tensors(path, tensors, {"W_enc": (n, d), "b_enc": (n,), "W_dec": (n, d), "b_dec": (d,)},
                             f"the header's SAE (d={d}, n_latents={n})")
    sae = TopKSAE(d, cfg)
    sae.load_state_dict(tensors)
    return sae.eval(), meta
