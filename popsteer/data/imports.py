"""``popsteer data import``: a user's own interaction file as a RecBole atomic dataset in the data folder.

Formats:

- ``seq``: one line per user, ``user item item ...`` in time order, no timestamps (SASRec's
  ``ml-1m.txt``, the S3-Rec / ICLRec Amazon splits; ``.gz`` accepted). The position in the line
  becomes the time field (0, 1, 2, ...), so RecBole's per-user sort keeps the order.
- ``inter``: an atomic ``.inter[.gz]`` kept elsewhere (checked, copied as it is).
- ``csv``: a CSV with a user, an item and a time column (e.g. MovieLens-20M's ``ratings.csv``).

The result is ``<data-dir>/<name>/<name>.inter`` (``.inter.gz`` for a gzipped ``inter``), written
to a temporary name and renamed; malformed input is one error naming the file and line, and
nothing is written. Users with few items are not errors: k-core filtering drops them at load.
"""

from __future__ import annotations

import gzip
import logging
import shutil
import zlib
from pathlib import Path
from typing import IO, Iterator

import pandas as pd

from popsteer.data.inter import read_atomic_inter
from popsteer.errors import PopSteerError
from popsteer.util.atomic import atomic_path, made_folder

log = logging.getLogger(__name__)

HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"
FORMATS = ("seq", "inter", "csv")


def _open(path: Path) -> IO[str]:
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def sequence_lines(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line number, user, items) of every user line of a sequence file, checked as it is read.

    Refused, naming file and line: a non-numeric id, an empty line before the end, a user with no
    items, a user seen on an earlier line, and a file that cannot be read to its end (a cut gzip).
    """
    seen: dict[str, int] = {}
    blank = None
    try:
        with _open(path) as fh:
            for number, line in enumerate(fh, 1):
                parts = line.split()
                if not parts:
                    blank = blank or number
                    continue
                if blank is not None:
                    raise PopSteerError(f"{path}:{blank}: empty line in the middle of the file")
                bad = next((p for p in parts if not (p.isascii() and p.isdigit())), None)  # not '١' or '²'
                if bad is not None:
                    raise PopSteerError(f"{path}:{number}: {_id_problem(bad)} (expected `user item item ...`, "
                                        "ids are whole numbers >= 0)")
                user, items = parts[0], parts[1:]
                if not items:
                    raise PopSteerError(f"{path}:{number}: user {user} has no items")
                if user in seen:
                    raise PopSteerError(f"{path}:{number}: user {user} already has a line ({seen[user]})")
                seen[user] = number
                yield number, user, items
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
        raise PopSteerError(f"cannot read {path}: {exc}") from None


def _id_problem(token: str) -> str:
    """What is wrong with a sequence file's id ``token``: negative, fractional or not a number."""
    shown = repr(token[:40])
    try:
        value = float(token)
    except ValueError:
        return f"non-numeric id {shown}"
    if not token.isascii():
        return f"id {shown} is not written in the digits 0-9"
    if value < 0:
        return f"negative id {shown}"
    return f"id {shown} is not a whole number" if "." in token or "e" in token.lower() else f"bad id {shown}"


def read_sequence_file(path: Path) -> pd.DataFrame:
    """A sequence file as an interaction frame: user, item (tokens) and timestamp (the position)."""
    users, items, times = [], [], []
    for _, user, seq in sequence_lines(path):
        users += [user] * len(seq)
        items += seq
        times += range(len(seq))
    if not users:
        raise PopSteerError(f"{path}: no user line")
    return pd.DataFrame({"user": users, "item": items, "timestamp": times})


def read_csv_file(path: Path, user_col: str, item_col: str, time_col: str, sep: str = ",") -> pd.DataFrame:
    """The three columns of a CSV as an interaction frame (file order kept)."""
    named = {"--user-col": user_col, "--item-col": item_col, "--time-col": time_col}
    if len(set(named.values())) < 3:
        same = [flag for flag, col in named.items() if list(named.values()).count(col) > 1]
        raise PopSteerError(f"{' and '.join(same)} name the same column {named[same[0]]!r}: give three different "
                            "columns (user, item, time)")
    try:
        frame = pd.read_csv(path, sep=sep, usecols=[user_col, item_col, time_col], dtype={user_col: str, item_col: str})
    except ValueError as exc:  # a missing column, a bad row
        raise PopSteerError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    except (OSError, EOFError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise PopSteerError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    frame = frame.rename(columns={user_col: "user", item_col: "item", time_col: "timestamp"})
    ts = pd.to_numeric(frame["timestamp"], errors="coerce")
    bad = ts.isna().to_numpy().nonzero()[0]
    if len(bad):
        raise PopSteerError(f"{path}:{int(bad[0]) + 2}: non-numeric {time_col} {frame['timestamp'].iloc[bad[0]]!r}")
    missing = frame[["user", "item"]].isna().any(axis=1).to_numpy().nonzero()[0]
    if len(missing):
        raise PopSteerError(f"{path}:{int(missing[0]) + 2}: no {user_col} or {item_col}")
    return frame.assign(timestamp=ts)


def _write_inter(frame: pd.DataFrame, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as out:
            out.write(HEADER)
            frame[["user", "item", "timestamp"]].to_csv(out, sep="\t", header=False, index=False)


def import_dataset(path: str | Path, name: str, data_dir: str | Path, fmt: str = "seq", user_col: str = "user_id",
                   item_col: str = "item_id", time_col: str = "timestamp", sep: str = ",") -> Path:
    """Convert ``path`` into ``<data_dir>/<name>/<name>.inter``; returns the written file."""
    path = Path(path)
    if fmt not in FORMATS:
        raise PopSteerError(f"unknown format '{fmt}': choose {', '.join(FORMATS)}")
    if not path.is_file():
        what = "not found" if not path.exists() else "is a folder" if path.is_dir() else "is not a regular file"
        raise PopSteerError(f"{path} {what}: give the interaction file")
    if not name or "/" in name or name.startswith("."):
        raise PopSteerError(f"--name must be a plain folder name, got {name!r}")
    if fmt == "seq":
        frame = read_sequence_file(path)
    elif fmt == "csv":
        frame = read_csv_file(path, user_col, item_col, time_col, sep)
    else:
        frame = read_atomic_inter(path)  # the whole file parsed: a bad one is refused before copying
    if frame.empty:  # never an empty dataset, nor one written over a good one
        raise PopSteerError(f"{path}: no interactions (only a header?); nothing written")
    folder = Path(data_dir) / name
    dest = folder / (f"{name}.inter.gz" if fmt == "inter" and path.suffix == ".gz" else f"{name}.inter")
    with made_folder(folder):
        if fmt == "inter":
            with atomic_path(dest) as tmp:
                shutil.copyfile(path, tmp)
        else:
            _write_inter(frame, dest)
    log.info("imported %s (%s): %d interactions of %d users into %s", path, fmt, len(frame), frame["user"].nunique(),
             dest)
    return dest
