"""Import a foreign RecBole ``.pth`` (a pickle) of a registered model as a PopSteer safetensors checkpoint.

RecBole numbers items in order of first appearance in the ``.inter`` file it loaded; ours
follow our own data file. The rows of ``item_embedding.weight`` are therefore permuted from
the authors' ids to ours. How their ids are recovered, best first:

1. their own ``.inter`` file, when ``reference_dir`` holds it (``<dataset>.inter[.gz]`` or
   ``popsteer_<dataset>.inter[.gz]``): first appearance, exactly as RecBole numbers them;
2. their item labels ``popsteer_item_popularity_labels_with_titles.csv`` (internal id +
   title/name columns) joined to an item file (``popsteer_<dataset>.item`` or
   ``<dataset>.item``: token + the same columns) on the shared descriptive columns.
   Mojibake in the labels (UTF-8 read as latin-1) is repaired; keys shared by several
   items are paired by training-target count (their ``interaction_count`` vs ours).

Their training-target counts are compared with ours as a check and stored in the metadata.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
from dataclasses import asdict
from pathlib import Path

import torch

from popsteer.util import checkpoint
from popsteer.data import load_dataset
from popsteer.errors import PopSteerError
from popsteer.models.item_ids import default_reference_dir, map_item_ids, permute_rows
from popsteer.models.recbole_adapter import build_model, load_foreign_checkpoint
from popsteer.models.registry import ModelSpec, of_recbole_class

log = logging.getLogger(__name__)

EMBEDDING = "item_embedding.weight"


def import_recbole_checkpoint(pth: Path, dataset: str, data_dir: Path | None, out: Path | None,
                              trust_pickle: bool, reference_dir: Path | None = None,
                              out_dir: Path | None = None, model: str | None = None) -> Path:
    """Convert the authors' RecBole SASRec checkpoint to ours, item rows in our id order.

    Args:
        pth: RecBole ``.pth`` (unpickled only when ``trust_pickle``).
        dataset: our dataset name; ``data_dir`` as for ``load_dataset``.
        out: output path; default ``<out_dir>/SASRec-imported-<stem>-<dataset>.safetensors`` (``out_dir``
            default ``saved``).
        reference_dir: the authors' item files (see the module docstring); default the
            ``reference/`` folder beside the dataset file, else the shared datasets folder's.
    Returns:
        the path of the written PopSteer checkpoint.
    """
    pth = Path(pth)
    if not pth.is_file():
        raise PopSteerError(f"checkpoint {pth} not found")
    raw = load_foreign_checkpoint(pth, trust_pickle)  # refuses before unpickling without trust
    state, cfg = _state_and_config(raw, pth)
    if cfg.get("dataset") not in (None, dataset):
        raise PopSteerError(f"{pth} was trained on '{cfg['dataset']}', not '{dataset}'")
    spec = of_recbole_class(cfg.get("model"))
    if model is not None and model != spec.name:
        raise PopSteerError(f"{pth} holds a {spec.recbole_class} model, not --model {model}")
    hp = arch_from_recbole(spec, cfg, pth)
    data = load_dataset(dataset, data_dir, max_len=hp.max_len)
    ref = reference_dir or default_reference_dir(dataset, data_dir)
    theirs_n = state[EMBEDDING].shape[0]
    their_of_ours, mapping = map_item_ids(data, ref, theirs_n)

    state = dict(state)
    state[EMBEDDING] = permute_rows(state[EMBEDDING], their_of_ours)
    _check_fits(spec, state, data.n_items, hp, pth)
    meta = {
        "kind": "sasrec", "model": spec.name, "dataset": dataset, "n_items": data.n_items,
        "item_tokens": data.item_tokens.tolist(), "arch": asdict(hp), "data": asdict(data.config),
        **({"sasrec": asdict(hp)} if spec.name == "sasrec" else {}),
        "train": None, "metrics": {},
        "imported_from": {
            "path": str(pth.resolve()), "sha256": checkpoint.file_sha256(pth),
            "epoch": _plain(raw.get("epoch")), "best_valid_score": _plain(raw.get("best_valid_score")),
            "recbole_dataset": cfg.get("dataset"), "loss_type": cfg.get("loss_type"),
        },
        "id_mapping": mapping,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    target = Path(out) if out else checkpoint.NewName(
        Path(out_dir or "saved"), lambda tag: f"{spec.recbole_class}-imported-{pth.stem}{tag}-{dataset}")
    out = checkpoint.save(target, state, meta)
    log.info("imported %s -> %s (%d of %d items matched by %s)", pth, out, mapping["matched"],
             data.n_items - 1, mapping["method"])
    return out


# ------------------------------------------------------------------ reading the .pth


def _state_and_config(raw, pth: Path) -> tuple[dict[str, torch.Tensor], dict]:
    if not isinstance(raw, dict) or not isinstance(raw.get("state_dict"), dict):
        raise PopSteerError(f"{pth} is not a RecBole checkpoint (no 'state_dict')")
    config = raw.get("config")
    cfg = getattr(config, "final_config_dict", config)
    if not isinstance(cfg, dict):
        raise PopSteerError(f"{pth} is not a RecBole checkpoint (no 'config')")
    state = raw["state_dict"]
    if EMBEDDING not in state:
        raise PopSteerError(f"{pth}: state_dict lacks {EMBEDDING}")
    return state, cfg


def arch_from_recbole(spec: ModelSpec, cfg: dict, pth: Path):
    """The model's architecture from a RecBole config dict; missing keys keep our (= RecBole's) defaults."""
    keys = {f.name: "MAX_ITEM_LIST_LENGTH" if f.name == "max_len" else f.name for f in dataclasses.fields(spec.arch)}
    values = {ours: cfg[theirs] for ours, theirs in keys.items() if cfg.get(theirs) is not None}
    missing = sorted(set(keys) - set(values))
    if missing:
        log.warning("%s: config lacks %s; using the defaults", pth, ", ".join(missing))
    try:
        return spec.arch(**values)
    except TypeError as exc:
        raise PopSteerError(f"{pth}: unusable {spec.recbole_class} config ({exc})") from None


def _check_fits(spec: ModelSpec, state: dict[str, torch.Tensor], n_items: int, hp, pth: Path) -> None:
    """Load the converted weights into RecBole's class: every key and shape must fit."""
    try:
        build_model(spec, n_items, hp).load_state_dict(state)
    except RuntimeError as exc:
        raise PopSteerError(f"{pth}: weights do not fit {spec.recbole_class} ({str(exc).splitlines()[0]})") from None


def _plain(x):
    """JSON-safe scalars (numpy floats and ints included)."""
    return x.item() if hasattr(x, "item") else x
