"""User representations encoded once with Ray Data, shared by every trial and evaluator.

SASRec is frozen, so its user representation x (d per row) of the training prefixes, the
valid and test users and the synthetic popular / unpopular profiles (METHOD.md section 3)
is computed once: ``map_batches`` over an actor pool whose class UDF loads the checkpoint
once per actor and calls ``encode_users`` (one row per sequence) or, for the training
prefixes, ``encode_windows`` on all-position windows (one row per taken position, as
``recommender.encode_prefixes``; ~max_len / stride fewer forwards). The result is a folder

    <root>/<dataset>-<sha256[:16]>-p<profile_seed>-s<prefix_stride>[-trainmode]/
        split=<split>/*.parquet     columns: row (int64), x (fixed_size_list<float32>[d])
        manifest.json               checkpoint and inputs sha256, dataset, max_len, d, rows per split

written under a temporary name and renamed, the manifest last, so a folder with a manifest
is complete. ``ensure_encoded`` reuses a folder whose manifest matches and recomputes
otherwise. Readers (``EncodedData.read``) need only pyarrow, not Ray. On a multi-node
cluster ``root`` must be shared storage.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from popsteer.util import checkpoint
from popsteer.steering.analysis import profile_lengths, synthetic_profiles
from popsteer.util.atomic import write_text
from popsteer.data import SequenceData
from popsteer.errors import PopSteerError
from popsteer.eval.popularity import PopularityGroups

log = logging.getLogger(__name__)

FORMAT = "popsteer-encoded/2"  # 2: training prefixes from windows (prefix_stride)
SPLITS = ("train", "valid", "test", "popular", "unpopular")
"""train: every training (prefix, target) pair; valid/test: one row per user; popular/unpopular:
the synthetic profiles of ``analyze_neurons`` (seeds profile_seed and profile_seed + 1)."""


def encode_inputs(data: SequenceData, profile_seed: int = 2020,
                  prefix_stride: int = 10) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The inputs of every split, exactly as the single-process steps build them.

    train: (windows (W, max_len), take (W, max_len) bool), ``data.train_windows(prefix_stride)``:
    one output row per taken position, in (user, position) order. Other splits:
    (item_seq (N, max_len), seq_len (N,)), one output row per sequence.
    """
    windows, targets = data.train_windows(min(prefix_stride, data.max_len))
    groups = PopularityGroups.from_counts(data.train_target_counts())
    lengths = profile_lengths(data)
    popular = synthetic_profiles(lengths, np.flatnonzero(groups.head), data.max_len, profile_seed)
    unpopular = synthetic_profiles(lengths, np.flatnonzero(groups.tail), data.max_len, profile_seed + 1)
    return {
        "train": (windows, targets > 0),
        "valid": data.split("valid")[:2],
        "test": data.split("test")[:2],
        "popular": (popular, lengths),
        "unpopular": (unpopular, lengths),
    }


def inputs_digest(data: SequenceData) -> str:
    """SHA-256 of what the inputs are built from: the sequences and the synthetic profiles' lengths.

    A changed dataset, or a changed rule for the profiles (``profile_lengths``), invalidates an
    encoded folder even when the checkpoint is the same.
    """
    h = hashlib.sha256()
    for arr in (data.items, data.offsets, profile_lengths(data), np.asarray([data.max_len])):
        h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------ the Ray Data UDF


def _fixed_list_to_numpy(column: pa.ChunkedArray | pa.Array, dtype) -> np.ndarray:
    """A fixed_size_list column -> (N, width) numpy array."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    width = arr.type.list_size
    return arr.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(-1, width)


def _fixed_list(values: np.ndarray) -> pa.FixedSizeListArray:
    """(N, width) numpy array -> fixed_size_list column."""
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(values).ravel()), values.shape[1])


class SASRecEncoder:
    """Ray Data class UDF: loads the SASRec checkpoint once per actor, encodes batches of sequences.

    Input batch (pyarrow): split (string), row (int64), seq (fixed_size_list<int32>[max_len]),
    len (int32), take (fixed_size_list<bool>[max_len]). A row with a ``take`` is an
    all-position window: it gives one output row per taken position, numbered from its
    ``row``; any other row gives one output row, its sequence's representation. Output:
    split, row, x (fixed_size_list<float32>[d]).
    """

    def __init__(self, checkpoint_path: str, batch_size: int = 4096, train_mode_splits: tuple[str, ...] = (),
                 seed: int = 2020) -> None:
        import torch

        from popsteer.platform.cluster import torch_device
        from popsteer.models.io import load_recommender

        model, _ = load_recommender(checkpoint_path)
        device = torch_device()
        self.model = model.to(device)  # encode_users / encode_windows move inputs to it, outputs back
        self.batch_size = batch_size
        self.window_batch = 512 if device.type == "cpu" else 8192  # windows per forward (as encode_prefixes on CPU)
        self.train_mode_splits = tuple(train_mode_splits)
        self.seed = seed
        self._torch = torch

    def model_d(self) -> int:
        return int(self.model.item_embedding.weight.shape[1])

    def __call__(self, batch: pa.Table) -> pa.Table:
        from popsteer.models.encode import encode_users, encode_windows

        if batch.num_rows == 0:
            return pa.table({"split": batch["split"], "row": batch["row"],
                             "x": pa.array([], pa.list_(pa.float32(), self.model_d()))})
        seq = _fixed_list_to_numpy(batch["seq"], np.int64)  # (B, L)
        ln = batch["len"].to_numpy().astype(np.int64)  # (B,)
        take = _fixed_list_to_numpy(batch["take"], bool)  # (B, L)
        rows = batch["row"].to_numpy()
        split = np.asarray(batch["split"].to_pylist())
        windowed = take.any(1)  # (B,)
        dropout = np.isin(split, self.train_mode_splits)  # QUIRK rows: SASRec's dropout on
        out_split, out_row, out_x = [], [], []
        for win in (False, True):
            for train_mode in (False, True):
                mask = (windowed == win) & (dropout == train_mode)
                if not mask.any():
                    continue
                if train_mode:  # reproducible dropout: seeded by the group's first row
                    self._torch.manual_seed(self.seed + int(rows[mask][0]))
                if win:
                    x = encode_windows(self.model, seq[mask], take[mask], self.window_batch, train_mode).numpy()  # (P_b, d)
                    counts = take[mask].sum(1)  # (W_b,)
                    first = np.repeat(rows[mask] - np.cumsum(counts) + counts, counts)
                    out_row.append(first + np.arange(len(x)))  # window's row + place among its taken
                    out_split.append(np.repeat(split[mask], counts))
                else:
                    x = encode_users(self.model, seq[mask], ln[mask], self.batch_size, train_mode=train_mode).numpy()
                    out_row.append(rows[mask])
                    out_split.append(split[mask])
                out_x.append(x.astype(np.float32))
        return pa.table({"split": pa.array(np.concatenate(out_split).tolist(), pa.string()),
                         "row": pa.array(np.concatenate(out_row).astype(np.int64)),
                         "x": _fixed_list(np.concatenate(out_x))})


# ------------------------------------------------------------------ the shared folder


@dataclass
class EncodedData:
    """A complete encoded folder: its manifest and per-split readers."""

    folder: Path
    manifest: dict

    @property
    def d(self) -> int:
        return int(self.manifest["d"])

    def read(self, split: str) -> np.ndarray:
        """x of one split in row order, (N, d) float32."""
        if split not in self.manifest["splits"]:
            raise PopSteerError(f"{self.folder}: no split '{split}' (has {', '.join(self.manifest['splits'])})")
        table = pq.read_table(self.folder / f"split={split}", columns=["row", "x"])
        rows = table["row"].to_numpy()
        x = _fixed_list_to_numpy(table["x"], np.float32)
        order = np.argsort(rows, kind="stable")
        n = self.manifest["splits"][split]["rows"]
        if len(rows) != n or not np.array_equal(rows[order], np.arange(n)):
            raise PopSteerError(f"{self.folder}: split '{split}' has {len(rows)} rows, not rows 0..{n - 1}")
        return x[order]

    @classmethod
    def open(cls, folder: str | Path) -> "EncodedData":
        folder = Path(folder)
        path = folder / "manifest.json"
        if not path.exists():
            raise PopSteerError(f"{folder} is not a complete encoded folder (no manifest.json)")
        return cls(folder, json.loads(path.read_text()))


def folder_key(dataset: str, sha256: str, profile_seed: int, train_mode: bool, prefix_stride: int) -> str:
    return f"{dataset}-{sha256[:16]}-p{profile_seed}-s{prefix_stride}" + ("-trainmode" if train_mode else "")


def manifest_matches(manifest: dict, expected: dict) -> bool:
    return all(manifest.get(k) == v for k, v in expected.items())


def output_rows(inputs: tuple[np.ndarray, np.ndarray]) -> int:
    """Rows a split's inputs encode to: its taken window positions, or one per sequence."""
    seq, second = inputs
    return int(second.sum()) if second.ndim == 2 else len(seq)


def _input_blocks(inputs: dict[str, tuple[np.ndarray, np.ndarray]], block_rows: int) -> list[pa.Table]:
    blocks = []
    for split, (seq, second) in inputs.items():
        if second.ndim == 2:  # windows: (take (W, L) bool), each numbered from its first output row
            take = second
            ln = take.sum(1)
            first = np.cumsum(ln) - ln
        else:
            take = np.zeros(seq.shape, dtype=bool)
            ln, first = second, np.arange(len(seq))
        for s in range(0, len(seq), block_rows):
            chunk = seq[s : s + block_rows]
            blocks.append(pa.table({
                "split": pa.array([split] * len(chunk), pa.string()),
                "row": pa.array(first[s : s + block_rows].astype(np.int64)),
                "seq": _fixed_list(chunk.astype(np.int32)),
                "len": pa.array(ln[s : s + block_rows].astype(np.int32)),
                "take": _fixed_list(take[s : s + block_rows]),
            }))
    return blocks


def run_encoding(checkpoint_path: str, inputs: dict[str, tuple[np.ndarray, np.ndarray]], out: Path, *,
                 actors: int = 2, cpus_per_actor: float = 0.5, gpus_per_actor: float = 0.0,
                 batch_size: int = 4096, block_rows: int = 8192, train_mode_splits: tuple[str, ...] = (),
                 seed: int = 2020) -> None:
    """Encode ``inputs`` with Ray Data into ``out/split=<split>/*.parquet`` (Ray must be initialised)."""
    import ray
    from ray.data import ActorPoolStrategy

    ds = ray.data.from_arrow(_input_blocks(inputs, block_rows))
    gpu_args = {"num_gpus": gpus_per_actor} if gpus_per_actor > 0 else {}
    encoded = ds.map_batches(
        SASRecEncoder,
        fn_constructor_kwargs={"checkpoint_path": str(checkpoint_path), "batch_size": batch_size,
                               "train_mode_splits": tuple(train_mode_splits), "seed": seed},
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        **gpu_args,
    )
    encoded.write_parquet(str(out), partition_cols=["split"])


def ensure_encoded(checkpoint_path: str | Path, data: SequenceData, root: str | Path, *, profile_seed: int = 2020,
                   sasrec_train_mode: bool = False, actors: int = 2, cpus_per_actor: float = 0.5,
                   gpus_per_actor: float | None = None, batch_size: int = 4096, block_rows: int = 8192,
                   prefix_stride: int = 10) -> EncodedData:
    """The encoded folder of this checkpoint and dataset: reused when its manifest matches, else computed."""
    from popsteer.platform.cluster import cluster_gpus

    checkpoint_path = Path(checkpoint_path).resolve()
    meta = checkpoint.read_meta(checkpoint_path)
    sha = checkpoint.file_sha256(checkpoint_path)
    expected = {"format": FORMAT, "checkpoint_sha256": sha, "dataset": data.name, "max_len": data.max_len,
                "inputs_sha256": inputs_digest(data), "profile_seed": profile_seed,
                "sasrec_train_mode": bool(sasrec_train_mode), "prefix_stride": min(prefix_stride, data.max_len)}
    root = Path(root)
    folder = root / folder_key(data.name, sha, profile_seed, sasrec_train_mode, expected["prefix_stride"])
    if (folder / "manifest.json").exists():
        found = EncodedData.open(folder)
        if manifest_matches(found.manifest, expected):
            log.info("encoded representations reused from %s", folder)
            return found
        log.warning("%s holds another encoding (manifest differs): recomputing", folder)
        shutil.rmtree(folder)
    elif folder.exists():
        shutil.rmtree(folder)  # left without a manifest: incomplete
    inputs = encode_inputs(data, profile_seed, prefix_stride)
    gpus = gpus_per_actor if gpus_per_actor is not None else (1.0 if cluster_gpus() > 0 else 0.0)
    tmp = root / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    try:
        run_encoding(str(checkpoint_path), inputs, tmp, actors=actors, cpus_per_actor=cpus_per_actor,
                     gpus_per_actor=gpus, batch_size=batch_size, block_rows=block_rows,
                     train_mode_splits=("train",) if sasrec_train_mode else (), seed=profile_seed)
        d = int(meta["sasrec"]["hidden_size"])
        manifest = dict(expected, checkpoint=str(checkpoint_path), d=d, seconds=round(time.perf_counter() - t0, 2),
                        splits={s: {"rows": output_rows(inputs[s]), "shape": [output_rows(inputs[s]), d]} for s in SPLITS},
                        created=_dt.datetime.now().isoformat(timespec="seconds"))
        write_text(tmp / "manifest.json", json.dumps(manifest, indent=2))
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    found = EncodedData.open(folder)
    if not manifest_matches(found.manifest, expected):
        raise PopSteerError(f"{folder}: manifest does not match after encoding")
    log.info("encoded %s in %.1fs into %s", ", ".join(f"{s} {found.manifest['splits'][s]['rows']}" for s in SPLITS),
             time.perf_counter() - t0, folder)
    return found
