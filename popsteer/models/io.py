"""Recommender checkpoints: a safetensors file with the resolved config and item tokens in its header."""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict
from pathlib import Path

import torch

from popsteer.data import DataConfig, SequenceData
from popsteer.errors import PopSteerError
from popsteer.models.config import TrainConfig
from popsteer.models.outputs import UserTable
from popsteer.models.recbole_adapter import build_model
from popsteer.models.registry import model_of, spec_for
from popsteer.util import checkpoint
from popsteer.util.configs import validate


def save_recommender(path: Path | checkpoint.NewName, model: torch.nn.Module, data: SequenceData, hp,
                     train: TrainConfig | None, metrics: dict | None = None, extra: dict | None = None) -> Path:
    """A recommender checkpoint (``kind: sasrec``, the historical name of every recommender checkpoint)."""
    spec = spec_for(model)
    meta = {
        "kind": "sasrec", "model": spec.name, "dataset": data.name, "n_items": data.n_items,
        "item_tokens": data.item_tokens.tolist(), "arch": asdict(hp), "data": asdict(data.config),
        **({"sasrec": asdict(hp)} if spec.name == "sasrec" else {}),
        "train": asdict(train) if train else None, "metrics": metrics or {},
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    meta.update(extra or {})
    return checkpoint.save(path, model.state_dict(), meta)


def data_config(meta: dict, source: str = "") -> DataConfig:
    """How the checkpoint's dataset was read (checkpoints from before this key: RecBole's defaults)."""
    return validate(DataConfig, meta.get("data") or {}, source, "data")


def load_recommender(path: str | Path, data: SequenceData | None = None) -> tuple[torch.nn.Module, dict]:
    """Load a PopSteer recommender checkpoint; with ``data``, check it belongs to that dataset."""
    tensors, meta = checkpoint.load(path, kind="sasrec")
    if data is not None:
        if meta["dataset"] != data.name:
            raise PopSteerError(f"{path} was trained on '{meta['dataset']}', not '{data.name}'")
        if meta["item_tokens"] != data.item_tokens.tolist():
            raise PopSteerError(f"{path}: its item ids do not match dataset '{data.name}' as loaded now")
    spec, hp = model_of(meta, str(path))
    if spec.imported:
        raise PopSteerError(f"{path} holds imported vectors (popsteer import-vectors), not a model that can run: "
                            "its user vectors are in the encoded store")
    if spec.general:  # a transductive model is its propagated tables
        missing = {"user_table", "item_table"} - set(tensors)
        if missing:
            raise PopSteerError(f"{path}: no tensor {sorted(missing)[0]!r} ({spec.recbole_class}'s tables)")
        return UserTable(spec.recbole_class, tensors["user_table"], tensors["item_table"]).eval(), meta
    model = build_model(spec, meta["n_items"], hp)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    checkpoint.check_tensors(path, tensors, expected, f"{spec.recbole_class} of the header "
                                                      f"(n_items={meta['n_items']}, {type(hp).__name__})")
    model.load_state_dict(tensors)
    model.eval()
    return model, meta
