"""The encoded-representation store: what the encode stage writes and every later stage reads.

A frozen recommender's user representations x (d per row) are computed once per checkpoint
and *part* and kept on disk:

    <root>/<dataset>-<sha256[:16]>/<part>/*.parquet    columns: row (int64), x (fixed_size_list<float32>[d])
                                   <part>/_manifest.json

Parts (``Part.name``): ``train-s<stride>[-trainmode]`` (every training (prefix, target) pair,
from all-position windows), ``valid`` and ``test`` (one row per user), ``popular-p<seed>`` and
``unpopular-p<seed>`` (the analysis' synthetic profiles), ``items`` (one-item profiles, item
1..n-1). A part's manifest records the checkpoint's and the inputs' SHA-256, so a changed
checkpoint, dataset or profile rule is re-encoded, and a part is written under a temporary
name and renamed, manifest last: a folder with a manifest is complete. Readers need only
pyarrow. On a multi-node cluster ``root`` must be shared storage.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from popsteer.errors import PopSteerError
from popsteer.util.atomic import write_text
from popsteer.util.filelock import file_lock, lock_file

FORMAT = "popsteer-encoded/3"  # 3: one folder per part, cached independently
MANIFEST = "_manifest.json"  # "_" prefix: never read as a data file


@dataclass(frozen=True)
class Part:
    """One set of encoded rows: its kind and the parameters its inputs depend on."""

    kind: str
    """train, valid, test, popular, unpopular or items."""
    stride: int = 0
    """train: window stride (capped at max_len by the caller)."""
    train_mode: bool = False
    """train: QUIRK of the reference, encoded with the recommender's dropout on."""
    seed: int = 0
    """popular / unpopular: the synthetic profiles' seed."""

    @property
    def name(self) -> str:
        if self.kind == "train":
            return f"train-s{self.stride}" + ("-trainmode" if self.train_mode else "")
        if self.kind in ("popular", "unpopular"):
            return f"{self.kind}-p{self.seed}"
        return self.kind


def fixed_list_to_numpy(column: pa.ChunkedArray | pa.Array, dtype) -> np.ndarray:
    """A fixed_size_list column -> (N, width) numpy array."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    width = arr.type.list_size
    return arr.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(-1, width)


def fixed_list(values: np.ndarray) -> pa.FixedSizeListArray:
    """(N, width) numpy array -> fixed_size_list column."""
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(values).ravel()), values.shape[1])


class Encodings:
    """The encoded parts of one checkpoint: ``<root>/<dataset>-<sha256[:16]>/``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @classmethod
    def of(cls, root: str | Path, dataset: str, sha256: str) -> "Encodings":
        return cls(Path(root) / f"{dataset}-{sha256[:16]}")

    def manifest(self, part: Part | str) -> dict | None:
        path = self.folder / (part.name if isinstance(part, Part) else part) / MANIFEST
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def has(self, part: Part, expected: dict) -> bool:
        """Whether the part is complete and was encoded from exactly these inputs."""
        found = self.manifest(part)
        return found is not None and all(found.get(k) == v for k, v in expected.items())

    def files(self, part: Part | str) -> tuple[list[Path], dict]:
        """The Parquet files of a complete part (any order; rows are numbered by their ``row`` column) and its
        manifest: what ``popsteer.sae.stream.ParquetRows`` streams without reading the part whole."""
        name = part.name if isinstance(part, Part) else part
        manifest = self.manifest(name)
        if manifest is None:
            raise PopSteerError(f"{self.folder}: no complete encoded part '{name}'")
        return sorted((self.folder / name).glob("*.parquet")), manifest

    def read(self, part: Part | str) -> np.ndarray:
        """x of one part in row order, (N, d) float32."""
        name = part.name if isinstance(part, Part) else part
        manifest = self.manifest(name)
        if manifest is None:
            raise PopSteerError(f"{self.folder}: no complete encoded part '{name}'")
        files = sorted((self.folder / name).glob("*.parquet"))
        n = manifest["rows"]
        if not files:
            x, rows = np.zeros((0, manifest["d"]), np.float32), np.zeros(0, np.int64)
        else:
            table = pq.read_table(files, columns=["row", "x"])
            rows, x = table["row"].to_numpy(), fixed_list_to_numpy(table["x"], np.float32)
        order = np.argsort(rows, kind="stable")
        if len(rows) != n or not np.array_equal(rows[order], np.arange(n)):
            raise PopSteerError(f"{self.folder}: part '{name}' has {len(rows)} rows, not rows 0..{n - 1}")
        return x[order]

    def publish(self, staged: Path, part: Part, manifest: dict) -> None:
        """Move a staged part folder (its parquet files) into place, manifest last.

        A concurrent writer of the same inputs may have published first: then ours is dropped. Publishers
        hold the part's lock (``.<part>.lock`` beside it), so the check and the rename are one step.
        """
        rows = 0
        for f in staged.glob("*.parquet"):
            rows += pq.ParquetFile(f).metadata.num_rows
        if rows != manifest["rows"]:
            raise PopSteerError(f"encoding part '{part.name}' produced {rows} rows, expected {manifest['rows']}")
        write_text(staged / MANIFEST, json.dumps(manifest, indent=2))
        final = self.folder / part.name
        with file_lock(lock_file(final)):  # one publisher at a time; a part published meanwhile is kept
            if self.has(part, {k: manifest[k] for k in ("format", "checkpoint_sha256", "inputs_sha256")}):
                shutil.rmtree(staged, ignore_errors=True)
                return
            old = None
            if final.exists():
                old = final.with_name(f".{part.name}.old-{uuid.uuid4().hex[:8]}")
                final.rename(old)
            staged.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
