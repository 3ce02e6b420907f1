"""PopSteer artifacts: one ``.safetensors`` file holding the tensors and, in its header
metadata, the JSON config (``{"kind": ..., "dataset": ..., ...}``). Never pickles.

Kinds: ``sasrec`` (a recommender) and ``sae`` (a sparse autoencoder bound to a sasrec
checkpoint by path and SHA-256).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from popsteer.util.atomic import atomic_path
from popsteer.errors import PopSteerError
from popsteer.util.headers import check_header

FORMAT = "popsteer/1"


def seed_timestamp(now: _dt.datetime | None = None) -> str:
    """RecBole's checkpoint time format, e.g. ``Nov-27-2026_02-50-00``."""
    return (now or _dt.datetime.now()).strftime("%b-%d-%Y_%H-%M-%S")


def default_path(out_dir: str | os.PathLike, stem: str) -> Path:
    return Path(out_dir) / f"{stem}.safetensors"


@dataclass(frozen=True)
class NewName:
    """A default checkpoint name that never replaces a file: ``<folder>/<stem(tag)>.safetensors`` with the
    first free tag of '', '-2', '-3', ... (two runs finishing in the same second get two files)."""

    folder: Path
    stem: Callable[[str], str]

    def candidates(self) -> Iterator[Path]:
        for i in range(1, MAX_TAGS + 1):
            yield default_path(self.folder, self.stem("" if i == 1 else f"-{i}"))


MAX_TAGS = 10_000


def save(path: str | os.PathLike | NewName, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write tensors + JSON metadata atomically; returns the path written.

    A path (the user's ``--out``, a sweep trial's own file) is replaced if it exists; a ``NewName``
    takes its first free name, never replacing a file (checked at the rename, so runs racing
    for one name each get their own).
    """
    meta = dict(meta, format=FORMAT)
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    check_finite(default_path(path.folder, path.stem("")) if isinstance(path, NewName) else path, clean, "not written")
    if not isinstance(path, NewName):
        path = Path(path)
        with atomic_path(path) as tmp:
            save_file(clean, str(tmp), metadata={"popsteer": json.dumps(meta)})
        return path
    for candidate in path.candidates():
        if candidate.exists():
            continue
        try:
            with atomic_path(candidate, replace=False) as tmp:
                save_file(clean, str(tmp), metadata={"popsteer": json.dumps(meta)})
        except FileExistsError:
            continue  # another run took this name meanwhile
        return candidate
    raise PopSteerError(f"{path.folder}: {MAX_TAGS} checkpoints named {path.stem('')} already; clean the folder")


def read_meta(path: str | os.PathLike) -> dict:
    """The JSON metadata of a PopSteer checkpoint, with clear errors for anything else."""
    if not str(path).strip():
        raise PopSteerError("checkpoint path is empty: give a .safetensors file")
    path = Path(path)
    if not path.exists():
        raise PopSteerError(f"checkpoint {path} not found")
    if path.is_dir():
        raise PopSteerError(f"checkpoint {path} is a folder, expected a .safetensors file")
    if not path.is_file():  # a FIFO or a device would block or stream forever
        raise PopSteerError(f"checkpoint {path} is not a regular file, expected a .safetensors file")
    if path.suffix in (".pth", ".pt", ".pkl", ".ckpt"):
        raise PopSteerError(f"{path} is a pickle checkpoint; import it first: "
                            "popsteer import-checkpoint PATH --dataset NAME --trust-pickle")
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get("popsteer")
    except (SafetensorError, OSError, ValueError) as exc:
        raise PopSteerError(f"checkpoint {path} is not a readable safetensors file ({exc})") from None
    if raw is None:
        raise PopSteerError(f"{path} is a safetensors file but not a PopSteer checkpoint (no popsteer metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise PopSteerError(f"checkpoint {path} has corrupt metadata") from None
    return check_header(meta, f"checkpoint {path}")


def load(path: str | os.PathLike, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a checkpoint, checking its kind and that every tensor is finite."""
    meta = read_meta(path)
    if kind is not None and meta.get("kind") != kind:
        expected = {"sasrec": "a recommender (SASRec) checkpoint", "sae": "an SAE checkpoint"}[kind]
        raise PopSteerError(f"{path} is a {meta.get('kind')!r} checkpoint, expected {expected}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PopSteerError(f"checkpoint {path} is corrupt ({exc})") from None
    check_finite(path, tensors)
    return tensors, meta


def check_finite(path, tensors: dict[str, torch.Tensor], then: str = "") -> None:
    """Every floating tensor is finite: a NaN is never loaded, nor written over a good file."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise PopSteerError(f"checkpoint {path}: tensor '{name}' has NaN or infinite values"
                                + (f"; {then}" if then else ""))


def check_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]],
                  what: str) -> None:
    """Every tensor ``what`` needs is there with its shape, and no other: else one line naming the tensor."""
    for name, shape in expected.items():
        if name not in tensors:
            raise PopSteerError(f"checkpoint {path}: no tensor '{name}' (of shape {tuple(shape)}, {what})")
        if tuple(tensors[name].shape) != tuple(shape):
            raise PopSteerError(f"checkpoint {path}: tensor '{name}' has shape {tuple(tensors[name].shape)}, "
                                f"{what} needs {tuple(shape)}")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise PopSteerError(f"checkpoint {path}: unexpected tensor '{extra[0]}' of shape {tuple(tensors[extra[0]].shape)} "
                            f"({what} has no such tensor)")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def finite(x: float) -> float | None:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None
