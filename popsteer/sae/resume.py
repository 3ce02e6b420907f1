"""The SAE trainer's state between two epochs, on disk: a killed training run continues where it stopped.

``popsteer.sae.train.fit_sae`` writes it after an epoch (at most every ``every_s`` seconds) when
given a path, and reads it back on start: the weights, Adam's moments and step counts, the
plateau scheduler, the batch generator's state, the dead-latent mask, the best epoch's weights,
the early-stopping counters, the history so far and the training seconds spent. Every source of
randomness after the initialisation flows through that generator at epoch boundaries, so the
continued run is the uninterrupted one, bit for bit (tested on the in-memory rows; the streamed
rows draw their windows from the same generator).

safetensors for the tensors and JSON in its header for the rest: no pickle (torch.save would pickle
the optimizer's dicts). Written to a temporary file and renamed (``atomic_path``). A state whose ``fingerprint`` (the
SAE config and the input's shape) differs from the run's is ignored, with a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from popsteer.util.atomic import atomic_path
from popsteer.util.filelock import file_lock, lock_file

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    epoch: int
    """The last finished epoch."""
    sae: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor] | None
    opt: dict
    sched: dict
    gen: torch.Tensor
    dead: torch.Tensor
    best_score: float
    best_epoch: int
    stale: int
    history: list[dict]
    elapsed_s: float


def save_state(path: Path, state: TrainState, fingerprint: dict) -> None:
    """Write ``state`` atomically (``popsteer.util.atomic.atomic_path``)."""
    tensors = {f"sae.{k}": v for k, v in state.sae.items()}
    tensors |= {f"best.{k}": v for k, v in (state.best or {}).items()}
    opt_state = {}
    for idx, slots in state.opt["state"].items():
        opt_state[str(idx)] = sorted(slots)
        tensors |= {f"opt.{idx}.{name}": torch.as_tensor(v) for name, v in slots.items()}
    tensors |= {"gen": state.gen, "dead": state.dead}
    header = {"fingerprint": fingerprint, "epoch": state.epoch, "best_score": state.best_score,
              "best_epoch": state.best_epoch, "stale": state.stale, "history": state.history,
              "elapsed_s": state.elapsed_s, "has_best": state.best is not None, "opt_slots": opt_state,
              "param_groups": state.opt["param_groups"], "sched": state.sched}
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"popsteer_sae_state": json.dumps(header)})


def load_state(path: Path, fingerprint: dict, device: torch.device) -> TrainState | None:
    """The state at ``path`` when it exists and was written for the same ``fingerprint``, else None."""
    if not path.exists():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            header = json.loads(f.metadata()["popsteer_sae_state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        log.warning("SAE: ignoring the unreadable training state %s (%s)", path, exc)
        return None
    if header["fingerprint"] != fingerprint:
        log.warning("SAE: ignoring the training state %s: written for another config or input", path)
        return None

    def group(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v.to(device) for k, v in tensors.items() if k.startswith(prefix)}

    opt = {"state": {int(idx): {name: tensors[f"opt.{idx}.{name}"].to(device) if name != "step"
                                else tensors[f"opt.{idx}.{name}"] for name in names}
                     for idx, names in header["opt_slots"].items()},
           "param_groups": header["param_groups"]}
    return TrainState(epoch=header["epoch"], sae=group("sae."), best=group("best.") if header["has_best"] else None,
                      opt=opt, sched=header["sched"], gen=tensors["gen"], dead=tensors["dead"].to(device),
                      best_score=header["best_score"], best_epoch=header["best_epoch"], stale=header["stale"],
                      history=header["history"], elapsed_s=header["elapsed_s"])


def discard_state(path: Path) -> None:
    """Remove the state at ``path`` and the temp files of writers killed while writing it
    (``atomic_path``'s ``.<name>.*.tmp``, which a SIGKILL leaves behind); other files stay."""
    path.unlink(missing_ok=True)
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def claim_state(path: Path) -> Iterator[Path | None]:
    """``path`` for this run alone while the block runs (an exclusive lock on its sidecar ``.lock``), or None,
    with a warning, when another run of the same settings holds it: that run trains without a resumable
    state rather than share one (the two would resume from and remove each other's files)."""
    with file_lock(lock_file(path), blocking=False, remove=True) as held:
        if not held:
            log.warning("SAE: another run with the same settings is training from %s; this run keeps no "
                        "resumable state", path)
        yield path if held else None
