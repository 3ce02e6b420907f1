"""Stage 2, encode: a frozen recommender's user representations, once per checkpoint and part.

``ensure_encoded`` builds each missing part's inputs from the dataset, cuts them into blocks
(``input_blocks``) and hands them to an executor that runs ``encode_block`` on every block:
``LocalEncoder`` in this process (the CLI), or Ray Data's actor pool
(``popsteer.platform.encode.RayDataEncoder``) over shards of blocks. Both write
``<staging>/part=<name>/*.parquet``; the parts are then published to the store
(``popsteer.stages.encoded``) with their manifests.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import shutil
import uuid
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from popsteer.data import SequenceData
from popsteer.errors import PopSteerError
from popsteer.eval.popularity import PopularityGroups
from popsteer.models.registry import model_of
from popsteer.stages.config import EncodeConfig
from popsteer.stages.encoded import FORMAT, Encodings, Part, fixed_list, fixed_list_to_numpy
from popsteer.steering.analysis import profile_lengths, synthetic_profiles
from popsteer.util import checkpoint, memory
from popsteer.util.atomic import disk_full_error, made_folder
from popsteer.util.progress import progress
from popsteer.util.writable import MIN_FREE_BYTES, Output, check_output

log = logging.getLogger(__name__)

WINDOW_BATCH_CPU = 512
"""Windows per all-position forward pass on a CPU (as ``encode_prefixes``)."""


def part_inputs(part: Part, data: SequenceData, all_positions: bool = True,
                general: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A part's inputs, exactly as the single-process code builds them.

    train: ``(windows (W, L), take (W, L) bool)`` from ``data.train_windows(stride)``: one output
    row per taken position, in (user, position) order; for a model without causal all-position
    outputs (BERT4Rec), RecBole's training prefixes one by one (same rows, same order, exact).
    Others: ``(item_seq (N, L), seq_len (N,))``, one output row per sequence. A general model
    (``general``: x is one vector per user) encodes train, valid and test as every user, by index
    (``(users (U, 1), ones)``), and no profile.
    """
    if general:
        if part.kind not in ("train", "valid", "test"):
            raise PopSteerError(f"a general (transductive) model cannot encode {part.kind} profiles: "
                                "probe with real user groups (--probe users)")
        return np.arange(data.n_users, dtype=np.int64)[:, None], np.ones(data.n_users, dtype=np.int64)
    if part.kind == "train" and not all_positions:
        seq, ln, _ = data.train_prefix_pairs()
        return seq, ln
    if part.kind == "train":
        windows, targets = data.train_windows(part.stride)
        return windows, targets > 0
    if part.kind in ("valid", "test"):
        return data.split(part.kind)[:2]
    if part.kind in ("popular", "unpopular"):
        groups = PopularityGroups.from_counts(data.train_target_counts())
        items = np.flatnonzero(groups.head if part.kind == "popular" else groups.tail)
        lengths = profile_lengths(data)
        return synthetic_profiles(lengths, items, data.max_len, part.seed), lengths
    if part.kind == "items":
        seqs = np.zeros((data.n_items - 1, data.max_len), dtype=np.int64)
        seqs[:, 0] = np.arange(1, data.n_items)
        return seqs, np.ones(data.n_items - 1, dtype=np.int64)
    raise ValueError(f"unknown part kind {part.kind!r}")


def output_rows(inputs: tuple[np.ndarray, np.ndarray]) -> int:
    """Rows a part's inputs encode to: its taken window positions, or one per sequence."""
    seq, second = inputs
    return int(second.sum()) if second.ndim == 2 else len(seq)


def inputs_digest(inputs: tuple[np.ndarray, np.ndarray]) -> str:
    """SHA-256 of a part's inputs: a changed dataset or profile rule invalidates the part."""
    h = hashlib.sha256()
    for arr in inputs:
        h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    return h.hexdigest()


def input_blocks(inputs: dict[str, tuple[np.ndarray, np.ndarray]], block_rows: int) -> list[pa.Table]:
    """Blocks of at most ``block_rows`` input rows: part (string), row (first output row), seq, len, take."""
    blocks = []
    for name, (seq, second) in inputs.items():
        if second.ndim == 2:  # windows: take (W, L) bool, each numbered from its first output row
            take = second
            ln = take.sum(1)
            first = np.cumsum(ln) - ln
        else:
            take = np.zeros(seq.shape, dtype=bool)
            ln, first = second, np.arange(len(seq))
        for s in range(0, len(seq), block_rows):
            chunk = seq[s : s + block_rows]
            blocks.append(pa.table({
                "part": pa.array([name] * len(chunk), pa.string()),
                "row": pa.array(first[s : s + block_rows].astype(np.int64)),
                "seq": fixed_list(chunk.astype(np.int32)),
                "len": pa.array(ln[s : s + block_rows].astype(np.int32)),
                "take": fixed_list(take[s : s + block_rows]),
            }))
    return blocks


def encode_block(model, batch: pa.Table, d: int, batch_size: int = 4096, window_batch: int = WINDOW_BATCH_CPU,
                 train_mode_parts: tuple[str, ...] = (), seed: int = 0) -> pa.Table:
    """Encode one batch of input rows (any mix of parts) -> part, row, x (fixed_size_list<float32>[d]).

    A row with a ``take`` is an all-position window: one output row per taken position,
    numbered from its ``row``; any other row gives one output row. Rows of a part in
    ``train_mode_parts`` are encoded with dropout on, seeded by their group's first row.
    """
    import torch

    from popsteer.models.encode import encode_users, encode_windows

    if batch.num_rows == 0:
        return pa.table({"part": batch["part"], "row": batch["row"], "x": pa.array([], pa.list_(pa.float32(), d))})
    seq = fixed_list_to_numpy(batch["seq"], np.int64)  # (B, L)
    ln = batch["len"].to_numpy().astype(np.int64)  # (B,)
    take = fixed_list_to_numpy(batch["take"], bool)  # (B, L)
    rows = batch["row"].to_numpy()
    part = np.asarray(batch["part"].to_pylist())
    windowed = take.any(1)  # (B,)
    dropout = np.isin(part, train_mode_parts)  # QUIRK rows: the recommender's dropout on
    out_part, out_row, out_x = [], [], []
    for win in (False, True):
        for train_mode in (False, True):
            mask = (windowed == win) & (dropout == train_mode)
            if not mask.any():
                continue
            if train_mode:  # reproducible dropout: seeded by the group's first row
                torch.manual_seed(seed + int(rows[mask][0]))
            if win:
                x = encode_windows(model, seq[mask], take[mask], window_batch, train_mode).numpy()  # (P_b, d)
                counts = take[mask].sum(1)  # (W_b,)
                first = np.repeat(rows[mask] - np.cumsum(counts) + counts, counts)
                out_row.append(first + np.arange(len(x)))  # window's row + place among its taken
                out_part.append(np.repeat(part[mask], counts))
            else:
                x = encode_users(model, seq[mask], ln[mask], batch_size, train_mode=train_mode).numpy()
                out_row.append(rows[mask])
                out_part.append(part[mask])
            out_x.append(x.astype(np.float32))
    return pa.table({"part": pa.array(np.concatenate(out_part).tolist(), pa.string()),
                     "row": pa.array(np.concatenate(out_row).astype(np.int64)),
                     "x": fixed_list(np.concatenate(out_x))})


class Encoder(Protocol):
    """An executor of the encode stage: runs ``encode_block`` over every block, writes ``out/part=<name>/``."""

    def run(self, checkpoint_path: str, blocks: list[pa.Table], out: Path, cfg: EncodeConfig,
            train_mode_parts: tuple[str, ...]) -> None: ...


class LocalEncoder:
    """The in-process executor: one model, the blocks in order, one parquet file per part (streamed)."""

    def run(self, checkpoint_path: str, blocks: list[pa.Table], out: Path, cfg: EncodeConfig,
            train_mode_parts: tuple[str, ...]) -> None:
        from popsteer.models.io import load_recommender

        model, meta = load_recommender(checkpoint_path)
        spec, arch = model_of(meta, checkpoint_path)
        d = spec.d(arch)
        writers: dict[str, pq.ParquetWriter] = {}
        try:
            for block in progress(blocks, desc="encode", unit="block"):
                table = encode_block(model, block, d, cfg.batch_size, WINDOW_BATCH_CPU, train_mode_parts,
                                     cfg.profile_seed)
                name = table["part"][0].as_py() if table.num_rows else block["part"][0].as_py()
                table = table.drop_columns(["part"])
                if name not in writers:
                    (out / f"part={name}").mkdir(parents=True, exist_ok=True)
                    writers[name] = pq.ParquetWriter(out / f"part={name}" / "part-0.parquet", table.schema)
                writers[name].write_table(table)
        finally:
            for w in writers.values():
                w.close()


def ensure_encoded(checkpoint_path: str | Path, data: SequenceData, parts: list[Part], root: str | Path,
                   cfg: EncodeConfig | None = None, executor: Encoder | None = None) -> Encodings:
    """The checkpoint's encodings with every part of ``parts``: present ones reused, missing ones encoded."""
    cfg = cfg or EncodeConfig()
    checkpoint_path = Path(checkpoint_path).resolve()
    spec, arch = model_of(checkpoint.read_meta(checkpoint_path), str(checkpoint_path))
    sha = checkpoint.file_sha256(checkpoint_path)
    d = spec.d(arch)
    store = Encodings.of(root, data.name, sha)
    if spec.imported:  # written at import; nothing to encode
        return imported_parts(store, parts, sha)
    todo = {}
    for part in dict.fromkeys(parts):
        inputs = part_inputs(part, data, spec.all_positions, spec.general)
        expected = {"format": FORMAT, "checkpoint_sha256": sha, "inputs_sha256": inputs_digest(inputs),
                    "dataset": data.name, "max_len": data.max_len, "d": d, "part": part.name,
                    "rows": output_rows(inputs)}
        if store.has(part, expected):
            continue
        todo[part] = (inputs, expected)
    if not todo:
        return store
    rows = sum(e["rows"] for _, e in todo.values())
    memory.check_fits(f"encoding {rows:,} rows of d={d}",
                      memory.encoding_bytes(rows, d, sum(len(i[0]) for i, _ in todo.values()), data.max_len))
    check_output(Output("the encoded store", Path(root), need=MIN_FREE_BYTES + memory.F32 * rows * (d + 2)))
    log.info("encoding %s with %s (%s rows) into %s", ", ".join(p.name for p in todo),
             checkpoint_path.name, f"{rows:,}", store.folder)
    try:
        with made_folder(store.folder / f".staging-{uuid.uuid4().hex[:12]}") as staging:
            _encode_parts(checkpoint_path, todo, staging, store, cfg, executor)
    except OSError as exc:
        full = disk_full_error(store.folder, exc)
        if full is None:
            raise
        raise full from None
    return store


def _encode_parts(checkpoint_path: Path, todo: dict, staging: Path, store: Encodings, cfg: EncodeConfig,
                  executor: Encoder | None) -> None:
    """Run the executor on the parts' blocks in ``staging``, then publish each part (staging removed after)."""
    try:
        blocks = input_blocks({p.name: inputs for p, (inputs, _) in todo.items()}, cfg.block_rows)
        train_mode_parts = tuple(p.name for p in todo if p.train_mode)
        (executor or LocalEncoder()).run(str(checkpoint_path), blocks, staging, cfg, train_mode_parts)
        for part, (_, expected) in todo.items():
            folder = staging / f"part={part.name}"
            folder.mkdir(exist_ok=True)  # a part of 0 rows writes no file
            created = _dt.datetime.now().isoformat(timespec="seconds")
            store.publish(folder, part, {**expected, "checkpoint": str(checkpoint_path), "created": created})
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def imported_parts(store: Encodings, parts: list[Part], sha: str) -> Encodings:
    """The store of imported vectors (``popsteer.stages.vectors``), checked to hold every part asked for."""
    for part in parts:
        if part.kind not in ("train", "valid", "test"):
            raise PopSteerError(f"imported vectors cannot encode {part.kind} profiles (there is no model to run): "
                                "probe with real user groups (--probe users)")
        found = store.manifest(part)
        if found is None or found.get("checkpoint_sha256") != sha:
            raise PopSteerError(f"{store.folder}: the imported vectors' part '{part.name}' is missing; run "
                                "popsteer import-vectors again (with the same --out-dir or --encoded-dir)")
    return store


def training_parts(cfg: EncodeConfig, max_len: int, imported: bool = False) -> list[Part]:
    """The SAE's inputs: every training prefix (imported vectors: their training rows, as given), and the
    validation users."""
    if imported:
        if cfg.sasrec_train_mode:
            raise PopSteerError("--sasrec-train-mode: imported vectors have no dropout to switch on")
        return [Part("train", stride=1), Part("valid")]
    return [Part("train", stride=min(cfg.prefix_stride, max_len), train_mode=cfg.sasrec_train_mode), Part("valid")]


def analysis_parts(seed: int) -> list[Part]:
    """The analysis' inputs: popular-only (seed) and unpopular-only (seed + 1) profiles, and one-item profiles."""
    return [Part("popular", seed=seed), Part("unpopular", seed=seed + 1), Part("items")]


def encoded_root(cfg: EncodeConfig, out_dir: str | Path) -> Path:
    return Path(cfg.dir) if cfg.dir else Path(out_dir) / "encoded"
