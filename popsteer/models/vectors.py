"""Any model's vectors, read and checked: an item table and user vectors per split, from Parquet or NumPy.

Items: ``item_id`` (the dataset's item token; integer or string), ``vector`` (d floats), an optional
``bias`` (float). Users: ``user_id`` (the dataset's user token), ``split`` (``train``, ``valid`` or
``test``), ``vector``. ``train`` rows are the SAE's training inputs, any number per user (a
sequential model: one per training prefix); ``valid`` and ``test`` hold exactly one row per user of
the dataset: x before that split's target. A Parquet ``vector`` is a list or fixed-size list of
floats; a ``.npz`` holds one array per column (``vector`` of shape (N, d)), never object arrays
(nothing is unpickled). Every check runs before anything is written; a bad file is one
``PopSteerError`` naming the file and what is wrong: a wrong dimension, unknown or missing ids,
NaN or infinite values, duplicated ids (item ids; user ids within valid and test), wrong dtypes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from popsteer.data import SequenceData
from popsteer.errors import PopSteerError

SPLITS = ("train", "valid", "test")


@dataclass
class ImportedVectors:
    """Vectors aligned with a dataset: what an import writes."""

    item_table: np.ndarray  # (n_items, d) float32, row 0 (padding) zeros
    bias: np.ndarray | None  # (n_items,) float32, or None
    x: dict[str, np.ndarray]  # split -> float32 rows: train (R, d) in file order; valid, test (U, d) in user order
    train_users: np.ndarray  # (R,) int64 user index of each train row

    @property
    def d(self) -> int:
        return int(self.item_table.shape[1])


def _columns(path: str | Path, required: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, object]:
    """The file's columns (Parquet: pyarrow arrays; .npz: numpy arrays), required ones checked present."""
    path = Path(path)
    if not path.is_file():
        raise PopSteerError(f"{path}: not found (a .parquet or .npz file)")
    try:
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            cols = {name: table[name].combine_chunks() for name in table.column_names}
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                cols = {name: npz[name] for name in npz.files}
        else:
            raise PopSteerError(f"{path}: unknown format {path.suffix or '(no suffix)'}: give a .parquet or .npz file")
    except PopSteerError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise PopSteerError(f"{path}: holds an object array (a pickle): store ids as integers or fixed-width "
                                "strings") from None
        raise PopSteerError(f"{path}: unreadable ({str(exc).splitlines()[0]})") from None
    except (OSError, pa.ArrowException, EOFError) as exc:
        raise PopSteerError(f"{path}: unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    for name in required:
        if name not in cols:
            raise PopSteerError(f"{path}: no column '{name}' (expected {', '.join(required)}"
                                + (f", optional {', '.join(optional)})" if optional else ")"))
    return cols


def _ids(col, path, name: str) -> np.ndarray:
    """An id column as strings (the dataset's tokens): integers or strings, no nulls."""
    if isinstance(col, pa.Array):
        if col.null_count:
            raise PopSteerError(f"{path}: column '{name}' has {col.null_count} null values")
        if not (pa.types.is_integer(col.type) or pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise PopSteerError(f"{path}: column '{name}' has type {col.type}, expected integers or strings")
        col = col.to_numpy(zero_copy_only=False)
    elif col.ndim != 1 or col.dtype.kind not in "iuUS":
        raise PopSteerError(f"{path}: array '{name}' has dtype {col.dtype} and shape {col.shape}, expected a 1-D "
                            "array of integers or strings")
    if col.dtype.kind == "S":
        col = np.char.decode(col, "utf-8")
    return np.asarray(col).astype(str)


def _vectors(col, path, name: str = "vector") -> np.ndarray:
    """A vector column as (N, d) float32: every row the same width, floats, finite."""
    if isinstance(col, pa.Array):
        if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
                or pa.types.is_fixed_size_list(col.type)) or not pa.types.is_floating(col.type.value_type):
            raise PopSteerError(f"{path}: column '{name}' has type {col.type}, expected a list of floats per row")
        if col.null_count or col.flatten().null_count:
            raise PopSteerError(f"{path}: column '{name}' has null values")
        if pa.types.is_fixed_size_list(col.type):
            width = col.type.list_size
        else:
            lengths = np.diff(col.offsets.to_numpy())
            width = int(lengths[0]) if len(lengths) else 0
            if len(lengths) and (bad := np.flatnonzero(lengths != width)).size:
                raise PopSteerError(f"{path}: row {bad[0]} of column '{name}' has {lengths[bad[0]]} values, row 0 has "
                                    f"{width} (wrong dimension)")
        flat = col.flatten().to_numpy(zero_copy_only=False)
        arr = flat.reshape(len(col), width) if width else np.zeros((len(col), 0))
    else:
        if col.dtype.kind != "f" or col.ndim != 2:
            raise PopSteerError(f"{path}: array '{name}' has dtype {col.dtype} and shape {col.shape}, expected "
                                "(N, d) floats")
        arr = col
    if arr.shape[1] < 1:
        raise PopSteerError(f"{path}: column '{name}' has vectors of width 0")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range: inf, refused next
        out = np.ascontiguousarray(arr, dtype=np.float32)
    _finite(out, path, name)
    return out


def _finite(arr: np.ndarray, path, name: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.flatnonzero(bad.reshape(len(arr), -1).any(1))[0])
        raise PopSteerError(f"{path}: row {row} of column '{name}' is NaN or infinite (as float32)")


def _floats(col, path, name: str) -> np.ndarray:
    """A 1-D float column (the bias) as float32."""
    if isinstance(col, pa.Array):
        if not pa.types.is_floating(col.type) or col.null_count:
            raise PopSteerError(f"{path}: column '{name}' has type {col.type}"
                                + (f" with {col.null_count} nulls" if col.null_count else "") + ", expected floats")
        col = col.to_numpy(zero_copy_only=False)
    elif col.dtype.kind != "f" or col.ndim != 1:
        raise PopSteerError(f"{path}: array '{name}' has dtype {col.dtype} and shape {col.shape}, expected 1-D floats")
    with np.errstate(over="ignore"):
        out = np.asarray(col, dtype=np.float32)
    _finite(out, path, name)
    return out


def _same_length(cols: dict, path) -> int:
    lengths = {name: len(c) for name, c in cols.items()}
    if len(set(lengths.values())) > 1:
        raise PopSteerError(f"{path}: columns of different lengths ({', '.join(f'{k} {v}' for k, v in lengths.items())})")
    n = next(iter(lengths.values()))
    if n == 0:
        raise PopSteerError(f"{path}: no rows")
    return n


def _index(ids: np.ndarray, tokens: np.ndarray, path, what: str) -> np.ndarray:
    """Each id's position in ``tokens``; an unknown id is an error."""
    found = pd.Index(tokens).get_indexer(ids)
    if (unknown := np.flatnonzero(found < 0)).size:
        raise PopSteerError(f"{path}: {unknown.size} unknown {what} id(s), e.g. '{ids[unknown[0]]}' (row {unknown[0]}): "
                            f"not in the dataset as imported")
    return found.astype(np.int64)


def _duplicate(idx: np.ndarray) -> int | None:
    """The row of the first repeated value, if any."""
    _, first = np.unique(idx, return_index=True)
    if len(first) == len(idx):
        return None
    seen = np.zeros(len(idx), dtype=bool)
    seen[first] = True
    return int(np.flatnonzero(~seen)[0])


def read_items(path: str | Path, data: SequenceData) -> tuple[np.ndarray, np.ndarray | None]:
    """The item table (n_items, d) in the dataset's item order (row 0: padding, zeros), and the bias or None.

    Every item of the dataset must be there once, and no other."""
    cols = _columns(path, ("item_id", "vector"), ("bias",))
    cols = {k: v for k, v in cols.items() if k in ("item_id", "vector", "bias")}
    _same_length(cols, path)
    ids = _ids(cols["item_id"], path, "item_id")
    idx = _index(ids, data.item_tokens[1:], path, "item") + 1  # rows 1..n_items-1
    if (dup := _duplicate(idx)) is not None:
        raise PopSteerError(f"{path}: item id '{ids[dup]}' appears more than once (row {dup})")
    if len(idx) != data.n_items - 1:
        missing = np.setdiff1d(np.arange(1, data.n_items), idx)
        raise PopSteerError(f"{path}: {len(missing)} item(s) of dataset '{data.name}' have no vector, e.g. "
                            f"'{data.item_tokens[missing[0]]}'")
    vec = _vectors(cols["vector"], path)
    table = np.zeros((data.n_items, vec.shape[1]), dtype=np.float32)
    table[idx] = vec
    bias = None
    if "bias" in cols:
        bias = np.zeros(data.n_items, dtype=np.float32)
        bias[idx] = _floats(cols["bias"], path, "bias")
    return table, bias


def read_users(path: str | Path, data: SequenceData, d: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """split -> x: train rows (R, d) in file order, valid and test (U, d) in the dataset's user order; and
    the user index of each train row."""
    cols = _columns(path, ("user_id", "split", "vector"), ())
    cols = {k: v for k, v in cols.items() if k in ("user_id", "split", "vector")}
    _same_length(cols, path)
    ids = _ids(cols["user_id"], path, "user_id")
    split = _ids(cols["split"], path, "split")
    if (bad := np.flatnonzero(~np.isin(split, SPLITS))).size:
        raise PopSteerError(f"{path}: row {bad[0]} has split '{split[bad[0]]}', expected train, valid or test")
    users = _index(ids, data.user_tokens, path, "user")
    vec = _vectors(cols["vector"], path)
    if vec.shape[1] != d:
        raise PopSteerError(f"{path}: user vectors have d={vec.shape[1]}, the item table d={d} (wrong dimension)")
    x, train_users = {}, np.zeros(0, dtype=np.int64)
    for s in SPLITS:
        rows = np.flatnonzero(split == s)
        if s == "train":
            if not rows.size:
                raise PopSteerError(f"{path}: no train rows (the SAE's training inputs)")
            x[s], train_users = vec[rows], users[rows]
            continue
        if (dup := _duplicate(users[rows])) is not None:
            raise PopSteerError(f"{path}: user id '{ids[rows[dup]]}' has more than one {s} row (row {rows[dup]})")
        if rows.size != data.n_users:
            missing = np.setdiff1d(np.arange(data.n_users), users[rows])
            raise PopSteerError(f"{path}: {len(missing)} user(s) of dataset '{data.name}' have no {s} row, e.g. "
                                f"'{data.user_tokens[missing[0]]}' (missing split rows)")
        out = np.empty((data.n_users, d), dtype=np.float32)
        out[users[rows]] = vec[rows]
        x[s] = out
    return x, train_users


def read_vectors(items: str | Path, users: str | Path, data: SequenceData) -> ImportedVectors:
    """Both files, checked against each other and the dataset (see the module docstring)."""
    table, bias = read_items(items, data)
    x, train_users = read_users(users, data, table.shape[1])
    return ImportedVectors(table, bias, x, train_users)
