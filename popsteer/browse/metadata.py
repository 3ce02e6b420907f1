"""Item metadata for the neuron browser: display titles and concept tags, keyed by internal item id.

Metadata files are keyed by the dataset's raw item tokens (``SequenceData.item_tokens[i]`` is the
raw token of internal id i; the k-core filter renumbers items, so the two differ). Sources, first
found wins:

- ``--tags FILE``: a CSV ``item_id,tag`` (item_id = raw token), one row per (item, tag);
- a RecBole ``<dataset>.item`` file with a genre column (``class``, ``genre``, ``genres``, ``tag``,
  ``tags``; a ``token_seq`` column holds several, space-separated): ML-100k's ``class``;
- a MovieLens ``movies.dat`` (``id::title::Genre|Genre``, latin-1): ML-1M's genres;
- the HetRec-2011 Last.fm files (``hetrec2011-lastfm-2k/user_taggedartists.dat[.gz]`` and ``tags.dat``):
  an artist carries its ``HETREC_TOP`` tags assigned by the most users (ties by tag id).

They are looked for in ``<data-dir>/<dataset>/``, ``<shared>/<dataset>/`` and, for ml-100k, RecBole's
embedded copy. Without any, ``tags`` is None and the browser says so: no label is ever invented.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from popsteer.data import EMBEDDED, SequenceData, embedded_data_dir
from popsteer.errors import PopSteerError
from popsteer.report.neurons import item_titles

log = logging.getLogger(__name__)

GENRE_FIELDS = ("class", "genre", "genres", "tag", "tags")
HETREC_TOP = 5
"""Tags kept per Last.fm artist: those assigned to it by the most users."""


@dataclass
class ItemMeta:
    titles: np.ndarray
    """(n_items,) display name per internal item id (the raw token where no title is known)."""
    tags: pd.DataFrame | None
    """Columns ``item_id`` (internal id, int) and ``tag`` (str), one row per distinct pair; None: no metadata."""
    source: str
    """Where the tags came from, or why there are none (shown in the site and the log)."""


def metadata_folders(data: SequenceData, data_dir: str | Path, shared: Path) -> list[Path]:
    """The folders searched for a dataset's metadata files."""
    folders = [Path(data_dir) / data.name, shared / data.name]
    if data.name == EMBEDDED:
        try:
            folders.append(embedded_data_dir() / data.name)
        except PopSteerError:
            pass
    return [f for f in folders if f.is_dir()]


def item_metadata(data: SequenceData, data_dir: str | Path, shared: Path, tags_csv: str | None = None) -> ItemMeta:
    """Titles and tags of ``data``'s items (see the module docstring for the sources and their order)."""
    folders = metadata_folders(data, data_dir, shared)
    titles = item_titles(data, data_dir, shared)
    if np.array_equal(titles, data.item_tokens.astype(str)):  # no .item title: movies.dat's, where present
        for movies in (f / "movies.dat" for f in folders):
            if movies.is_file():
                table = _movies_dat(movies)
                lookup = dict(zip(table["token"], table["title"]))
                titles = np.array([lookup.get(t, t) for t in data.item_tokens.astype(str)])
                break
    if tags_csv is not None:
        return ItemMeta(titles, _to_internal(_read_tags_csv(Path(tags_csv)), data, tags_csv, strict=True),
                        f"--tags {tags_csv}")
    for raw, where in _found_tags(folders):
        tags = _to_internal(raw, data, where)
        if len(tags):
            return ItemMeta(titles, tags, where)
    return ItemMeta(titles, None, f"no item metadata (genres or tags) found for dataset '{data.name}' in "
                                  f"{', '.join(map(str, folders)) or 'its folders'}")


def _found_tags(folders: list[Path]):
    """(raw-token tag table, description) of every metadata file found, in the order of preference."""
    for folder in folders:
        for path in (folder / f"{folder.name}.item", folder / "reference" / f"popsteer_{folder.name}.item"):
            if path.is_file() and (table := _item_file_tags(path)) is not None:
                yield table, f"{path} ({table.attrs['field']})"
    for folder in folders:
        if (folder / "movies.dat").is_file():
            yield _movies_dat(folder / "movies.dat")[["token", "tag"]], f"{folder / 'movies.dat'} (genres)"
    for folder in folders:
        hetrec = folder / "hetrec2011-lastfm-2k"
        if hetrec.is_dir() and (table := _hetrec(hetrec)) is not None:
            yield table, f"{hetrec} (top {HETREC_TOP} user tags per artist)"


def _read_tags_csv(path: Path) -> pd.DataFrame:
    if path.exists() and not path.is_file() and not path.is_dir():  # a FIFO or a device would block
        raise PopSteerError(f"the tags file {path} is not a regular file")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise PopSteerError(f"cannot read the tags file {path}: {exc}") from None
    if not {"item_id", "tag"} <= set(table.columns):
        raise PopSteerError(f"the tags file {path} needs the columns item_id,tag; it has {','.join(table.columns)}")
    return pd.DataFrame({"token": table["item_id"].str.strip(), "tag": table["tag"].str.strip()})


def _to_internal(raw: pd.DataFrame, data: SequenceData, where: str, strict: bool = False) -> pd.DataFrame:
    """Raw-token (token, tag) rows -> distinct (internal item_id, tag) rows of the dataset's items."""
    index = {t: i for i, t in enumerate(data.item_tokens.astype(str)) if i > 0}
    ids = raw["token"].map(index)
    known = ids.notna() & (raw["tag"] != "")
    if strict and not known.any():
        raise PopSteerError(f"{where}: none of its item_id values is an item of dataset '{data.name}' (item_id must "
                            f"be the raw token, e.g. {str(data.item_tokens[1])!r})")
    if (~known).any():
        log.info("%s: %d of %d rows name no item of %s (filtered out) or no tag", where, int((~known).sum()),
                 len(raw), data.name)
    out = pd.DataFrame({"item_id": ids[known].astype(np.int64), "tag": raw["tag"][known]})
    return out.drop_duplicates().reset_index(drop=True)


def _item_file_tags(path: Path) -> pd.DataFrame | None:
    """(token, tag) rows of a RecBole .item file's genre column, or None when it has none."""
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            header = fh.readline().rstrip("\n").split("\t")
        fields = [h.split(":")[0] for h in header]
        name = next((f for f in GENRE_FIELDS if f in fields), None)
        if name is None or "item_id" not in fields:
            return None
        cols = [fields.index("item_id"), fields.index(name)]
        table = pd.read_csv(path, sep="\t", dtype=str, usecols=cols, quoting=3, keep_default_na=False,
                            encoding="utf-8", encoding_errors="replace")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        log.warning("cannot read item tags from %s: %s", path, exc)
        return None
    seq = header[fields.index(name)].endswith("token_seq")
    tags = table.iloc[:, 1].str.split() if seq else table.iloc[:, 1].map(lambda v: [v.strip()])
    out = pd.DataFrame({"token": table.iloc[:, 0], "tag": tags}).explode("tag").dropna()
    out.attrs["field"] = name
    return out


def _movies_dat(path: Path) -> pd.DataFrame:
    """MovieLens movies.dat -> rows (token, title, tag), one per genre."""
    rows = []
    with path.open(encoding="latin-1") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("::")
            if len(parts) == 3:
                rows += [(parts[0], parts[1], g) for g in parts[2].split("|") if g]
    return pd.DataFrame(rows, columns=["token", "title", "tag"])


def _hetrec(folder: Path) -> pd.DataFrame | None:
    """(artist token, tag name) rows: each artist's ``HETREC_TOP`` tags assigned by the most users."""
    assigned = next((p for p in (folder / "user_taggedartists.dat", folder / "user_taggedartists.dat.gz")
                     if p.is_file()), None)
    if assigned is None or not (folder / "tags.dat").is_file():
        return None
    try:
        pairs = pd.read_csv(assigned, sep="\t", usecols=["userID", "artistID", "tagID"], dtype=np.int64)
        names = pd.read_csv(folder / "tags.dat", sep="\t", encoding="latin-1", dtype={"tagID": np.int64},
                            keep_default_na=False, quoting=3)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        log.warning("cannot read the HetRec tags in %s: %s", folder, exc)
        return None
    users = pairs.groupby(["artistID", "tagID"])["userID"].nunique().rename("users").reset_index()
    users = users.sort_values(["artistID", "users", "tagID"], ascending=[True, False, True])
    top = users.groupby("artistID").head(HETREC_TOP)
    tag = top["tagID"].map(dict(zip(names["tagID"], names["tagValue"].str.strip().str.lower())))
    return pd.DataFrame({"token": top["artistID"].astype(str), "tag": tag}).dropna()
