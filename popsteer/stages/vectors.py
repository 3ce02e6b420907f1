"""Stage 1 (alternative): any model's vectors as a base recommender, and their export.

``import_vectors`` reads an item table and user vectors (``popsteer.models.vectors``: every check
first), pairs them with a dataset imported by ``popsteer data import`` (targets, popularity,
history) and writes what a trained recommender leaves behind:

- a recommender checkpoint of model ``vectors`` (kind ``sasrec``, as every recommender's): tensor
  ``item_table`` (n_items, d), row 0 padding, and ``item_bias`` (n_items,) where given; the header's
  ``arch`` holds d, max_len, mask_history and bias;
- its encoded store (``popsteer.stages.encoded``), keyed by the checkpoint's SHA-256 as any
  recommender's: parts ``train-s1`` (the train rows as given), ``valid`` and ``test`` (one row per user).

So the SAE, the analysis (real-user probe), the grid and the report run on it unchanged: scores
are ``x @ E.T (+ b)``, the user's history masked when ``mask_history``. ``export_vectors`` writes a
recommender's own vectors in the files ``import_vectors`` reads.
"""

from __future__ import annotations

import datetime as _dt
import logging
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from popsteer.data import SequenceData, check_catalog, load_dataset
from popsteer.errors import PopSteerError
from popsteer.eval.evaluator import Evaluator, ItemTable
from popsteer.models.registry import VECTORS, VectorsConfig
from popsteer.models.vectors import ImportedVectors, read_vectors
from popsteer.stages.config import EncodeConfig
from popsteer.stages.config_vectors import ExportVectorsConfig, ImportVectorsConfig
from popsteer.stages.context import load_base
from popsteer.stages.encode import encoded_root, training_parts
from popsteer.stages.encoded import FORMAT, Encodings, Part, fixed_list
from popsteer.util import checkpoint
from popsteer.util.atomic import atomic_path, made_folder
from popsteer.util.writable import MIN_FREE_BYTES, Output, check_output

log = logging.getLogger(__name__)


def import_vectors(cfg: ImportVectorsConfig) -> dict:
    """Check the files against the dataset, then write the checkpoint and its encoded parts (see the module)."""
    data = check_catalog(load_dataset(cfg.dataset, cfg.where.data_dir, max_len=cfg.max_len, cfg=cfg.data))
    vec = read_vectors(cfg.items, cfg.users, data)  # every check, before anything is written
    root = encoded_root(cfg.encode, cfg.where.out_dir)
    rows = sum(len(x) for x in vec.x.values())
    check_output(Output("the encoded store", root, need=MIN_FREE_BYTES + 4 * rows * (vec.d + 2)))
    arch = VectorsConfig(d=vec.d, max_len=cfg.max_len, mask_history=cfg.mask_history, bias=vec.bias is not None)
    table = ItemTable(torch.from_numpy(vec.item_table), None if vec.bias is None else torch.from_numpy(vec.bias),
                      general=cfg.mask_history)
    metrics = {s: Evaluator.for_split(data, s, table)(torch.from_numpy(vec.x[s]), table.emb) for s in ("valid", "test")}
    meta = {"kind": "sasrec", "model": VECTORS.name, "dataset": data.name, "n_items": data.n_items,
            "item_tokens": data.item_tokens.tolist(), "arch": asdict(arch), "data": asdict(data.config),
            "train": None, "metrics": metrics, "created": _dt.datetime.now().isoformat(timespec="seconds"),
            "vectors": {"items": str(Path(cfg.items).resolve()), "items_sha256": checkpoint.file_sha256(cfg.items),
                        "users": str(Path(cfg.users).resolve()), "users_sha256": checkpoint.file_sha256(cfg.users)}}
    tensors = {"item_table": table.emb, **({"item_bias": table.bias} if table.bias is not None else {})}
    when = checkpoint.seed_timestamp()
    target = Path(cfg.out) if cfg.out else checkpoint.NewName(Path(cfg.where.out_dir),
                                                                lambda tag: f"Vectors-{when}{tag}-{data.name}")
    path = checkpoint.save(target, tensors, meta)
    try:
        store = write_parts(path, data, vec, root, meta["vectors"]["users_sha256"])
    except BaseException:
        path.unlink(missing_ok=True)  # no checkpoint without its vectors
        raise
    log.info("imported %s vectors (d=%d, %s train rows) as %s; encoded parts in %s", data.name, vec.d,
             f"{len(vec.x['train']):,}", path, store.folder)
    return {"checkpoint": str(path), "encoded": str(store.folder), "d": vec.d, "train_rows": int(len(vec.x["train"])),
            "users": data.n_users, "items": data.n_items - 1, "mask_history": cfg.mask_history,
            "bias": vec.bias is not None, **{f"{s}_ndcg@10": m["ndcg@10"] for s, m in metrics.items()}}


def write_parts(path: Path, data: SequenceData, vec: ImportedVectors, root: Path, users_sha: str) -> Encodings:
    """The user vectors as the checkpoint's encoded parts (``row``, ``x``), each published with its manifest."""
    sha = checkpoint.file_sha256(path)
    store = Encodings.of(root, data.name, sha)
    parts = {training_parts(EncodeConfig(), data.max_len, imported=True)[0]: vec.x["train"],
             Part("valid"): vec.x["valid"], Part("test"): vec.x["test"]}
    with made_folder(store.folder / f".staging-{uuid.uuid4().hex[:12]}") as staging:
        try:
            for part, x in parts.items():
                folder = staging / f"part={part.name}"
                folder.mkdir()
                table = pa.table({"row": pa.array(np.arange(len(x), dtype=np.int64)), "x": fixed_list(x)})
                pq.write_table(table, folder / "part-0.parquet")
                store.publish(folder, part, {
                    "format": FORMAT, "checkpoint_sha256": sha, "inputs_sha256": users_sha, "dataset": data.name,
                    "max_len": data.max_len, "d": vec.d, "part": part.name, "rows": int(len(x)),
                    "checkpoint": str(path.resolve()), "created": _dt.datetime.now().isoformat(timespec="seconds")})
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return store


def train_row_users(base, part: Part) -> np.ndarray:
    """(R,) the user index of each row of a recommender's training part, in its row order."""
    data, spec = base.data, base.model
    if spec.general:  # one row per user
        return np.arange(data.n_users, dtype=np.int64)
    if spec.all_positions:  # (window, taken position) order
        take = data.train_windows(part.stride)[1] > 0
        return np.repeat(data.train_window_users(part.stride), take.sum(1))
    per_user = np.maximum(data.offsets[1:] - 2 - data.offsets[:-1] - 1, 0)  # training prefixes per user
    return np.repeat(np.arange(data.n_users, dtype=np.int64), per_user)


def export_vectors(cfg: ExportVectorsConfig) -> dict:
    """``items.<fmt>`` (item_id, vector[, bias]) and ``users.<fmt>`` (user_id, split, vector) of a recommender:
    its item table and its encoded training rows, valid and test users (encoded where missing)."""
    base = load_base(cfg.base, cfg.where, cfg.encode)
    if base.model.imported:
        raise PopSteerError(f"{cfg.base} holds imported vectors already: their files are {base.meta['vectors']['items']}"
                            f" and {base.meta['vectors']['users']}")
    folder = Path(cfg.folder)
    parts = [training_parts(cfg.encode, base.data.max_len)[0], Part("valid"), Part("test")]
    rows = int(base.data.train_target_counts().sum()) + 2 * base.data.n_users + base.data.n_items
    check_output(Output("--out", folder, need=MIN_FREE_BYTES + 4 * rows * (base.d + 8)))
    encodings = base.encodings(parts)
    x = {p.kind: encodings.read(p) for p in parts}
    users = {"train": train_row_users(base, parts[0]), "valid": np.arange(base.data.n_users),
             "test": np.arange(base.data.n_users)}
    if len(users["train"]) != len(x["train"]):
        raise PopSteerError(f"{encodings.folder}: the training part has {len(x['train'])} rows, its users "
                            f"{len(users['train'])}")
    split = np.concatenate([np.full(len(users[s]), s) for s in ("train", "valid", "test")])
    user_cols = {"user_id": base.data.user_tokens[np.concatenate([users[s] for s in ("train", "valid", "test")])],
                 "split": split, "vector": np.concatenate([x[s] for s in ("train", "valid", "test")])}
    item_cols = {"item_id": base.data.item_tokens[1:], "vector": base.item_emb[1:].numpy()}
    if base.table.bias is not None:
        item_cols["bias"] = base.table.bias[1:].numpy()
    with made_folder(folder):
        files = [write_columns(folder / f"{name}.{cfg.fmt}", cols) for name, cols in (("items", item_cols),
                                                                                      ("users", user_cols))]
    log.info("exported %s's vectors to %s", Path(cfg.base).name, folder)
    return {"items": str(files[0]), "users": str(files[1]), "d": base.d, "train_rows": int(len(x["train"])),
            "mask_history": bool(base.table.general), "bias": base.table.bias is not None,
            "max_len": base.data.max_len}


def write_columns(path: Path, cols: dict[str, np.ndarray]) -> Path:
    """Columns (1-D, or (N, d) vectors) as a Parquet or .npz file, atomically."""
    with atomic_path(path) as tmp:
        if path.suffix == ".npz":
            with open(tmp, "wb") as fh:
                np.savez(fh, **{k: (v.astype(str) if v.dtype.kind in "OU" else v) for k, v in cols.items()})
        else:
            table = pa.table({k: (fixed_list(v.astype(np.float32)) if v.ndim == 2 else pa.array(v.astype(str))
                                  if v.dtype.kind in "OU" else pa.array(v)) for k, v in cols.items()})
            pq.write_table(table, tmp)
    return path
