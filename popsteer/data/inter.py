"""Reading RecBole atomic ``.inter`` files: where a dataset's file is, and its user, item and time columns."""

from __future__ import annotations

import gzip
import importlib.util
import os
from pathlib import Path

import numpy as np
import pandas as pd

from popsteer.data.config import DataConfig
from popsteer.errors import PopSteerError


EMBEDDED = "ml-100k"
PAD_TOKEN = "[PAD]"


def embedded_data_dir() -> Path:
    """The folder of RecBole's bundled example datasets (ml-100k), found without importing RecBole."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise PopSteerError("recbole is not installed: cannot find the embedded ml-100k dataset")
    return Path(list(spec.submodule_search_locations)[0]) / "dataset_example"


def find_inter_file(dataset: str, data_dir: str | os.PathLike | None) -> Path:
    """Locate ``<dataset>.inter`` (or ``.inter.gz``) under ``data_dir/<dataset>/``: any dataset name.

    The embedded dataset falls back to RecBole's bundled copy when ``data_dir`` lacks it.
    """
    if not dataset or "/" in dataset or dataset.startswith("."):
        raise PopSteerError(f"dataset name must be a plain folder name, got {dataset!r}")
    roots = [Path(data_dir)] if data_dir is not None else [Path("datasets")]
    if dataset == EMBEDDED:
        roots.append(embedded_data_dir())
    for root in roots:
        for suffix in (".inter", ".inter.gz"):
            path = root / dataset / f"{dataset}{suffix}"
            if path.is_file():
                return path
    hint = ("run `popsteer data fetch ml-1m`" if dataset == "ml-1m" else
            "put a RecBole atomic file there, or convert yours with `popsteer data import`")
    where = roots[0] / dataset / dataset
    raise PopSteerError(f"unknown dataset '{dataset}': {where}.inter (or .inter.gz) not found; {hint}")


def read_atomic_inter(path: Path, cfg: DataConfig | None = None) -> pd.DataFrame:
    """Read the user, item and time columns of a RecBole ``.inter`` file (``cfg`` names them).

    Returns a frame with string ``user`` / ``item`` tokens and float64 ``timestamp``, in file order;
    with ``cfg.min_rating``, only the rows rated at least that (RecBole's ``val_interval``).
    """
    cfg = cfg or DataConfig()
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            header = fh.readline().rstrip("\n").split("\t")
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise PopSteerError(f"cannot read {path}: {exc}") from None
    names = {col.split(":")[0]: col for col in header}
    missing = [c for c in cfg.columns() if c not in names]
    if missing:
        raise PopSteerError(f"{path}: header lacks column(s) {', '.join(missing)} (got {header})")
    _check_last_line(path, len(header))
    cols = [names[c] for c in cfg.columns()]
    try:
        frame = pd.read_csv(
            path, sep="\t", usecols=cols, dtype={cols[0]: str, cols[1]: str},
            compression="infer", engine="c",
        )
    except (ValueError, OSError, EOFError, pd.errors.ParserError) as exc:
        raise PopSteerError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from None
    frame = frame.rename(columns=dict(zip(cols, ["user", "item", "timestamp", "rating"])))
    ts = pd.to_numeric(frame["timestamp"], errors="coerce")
    bad = ts.isna() & frame["timestamp"].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        raise PopSteerError(f"{path}: non-numeric timestamp {frame['timestamp'].iloc[row - 2]!r} on line {row}")
    cut = ts.isna() & frame["user"].notna() & frame["item"].notna()
    if cut.any():
        row = int(np.flatnonzero(cut.to_numpy())[0]) + 2
        raise PopSteerError(f"{path}: line {row} has no timestamp (truncated or malformed row)")
    frame["timestamp"] = ts.astype(np.float64)
    frame = frame.dropna(subset=["user", "item"])  # RecBole drops rows without user or item
    if cfg.min_rating is not None:  # NaN ratings fail the test, as RecBole's interval filter drops them
        frame = frame[pd.to_numeric(frame["rating"], errors="coerce").to_numpy() >= cfg.min_rating].drop(columns="rating")
    return frame


def _check_last_line(path: Path, n_fields: int) -> None:
    """Refuse a plain ``.inter`` cut mid-line: no final newline and fewer fields than the header.

    (A cut ``.gz`` lacks its end-of-stream marker, which reading reports.)
    """
    if path.suffix == ".gz":
        return
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 65536))
        tail = fh.read()
    if not tail or tail.endswith(b"\n"):
        return
    last = tail.rsplit(b"\n", 1)[-1]
    got = last.count(b"\t") + 1
    if got < n_fields:
        text = last[:60].decode("utf-8", "replace")
        raise PopSteerError(f"{path} is truncated: its last line {text!r} has {got} of the header's {n_fields} fields")
