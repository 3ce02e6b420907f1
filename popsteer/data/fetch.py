"""Download public datasets into the data folder as RecBole atomic files.

Only ``ml-1m`` has a public source: the GroupLens archive. Its ``ratings.dat``
(``UserID::MovieID::Rating::Timestamp``) becomes ``<data_dir>/ml-1m/ml-1m.inter`` in file
order (which is RecBole's own ``ml-1m.inter`` order, so RecBole's item ids follow), and
``movies.dat`` (latin-1, ``MovieID::Title::Genres``) becomes ``ml-1m.item``. Files are
written to a temporary name and renamed, so a failed fetch leaves nothing partial behind.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import IO, Iterator

from popsteer.util.atomic import atomic_path, made_folder
from popsteer.data import EMBEDDED, find_inter_file
from popsteer.errors import PopSteerError
from popsteer.util.progress import progress

log = logging.getLogger(__name__)

ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
ML1M_MEMBERS = {"ratings": "ml-1m/ratings.dat", "movies": "ml-1m/movies.dat"}
INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\tgenre:token_seq\n"
TIMEOUT_S = 60
CHUNK = 1 << 16


def fetch_dataset(name: str, data_dir: Path, url: str | None = None) -> Path:
    """Fetch dataset ``name`` into ``data_dir/<name>/``; returns the ``.inter`` path.

    Args:
        name: ``ml-1m`` (downloaded), ``ml-100k`` (embedded: nothing to fetch) or
            ``lastfm`` (no public source for the authors' file: raises PopSteerError).
        url: overrides the download URL (tests, mirrors).
    """
    data_dir = Path(data_dir)
    if name == EMBEDDED:
        path = find_inter_file(name, data_dir)
        log.info("%s is embedded (RecBole ships it): nothing to fetch, using %s", name, path)
        return path
    if name == "lastfm":
        raise PopSteerError(
            "lastfm has no public download for PopSteer's exact file (HetRec-2011 tag assignments as the "
            f"authors filtered them): place the authors' lastfm.inter at {data_dir / 'lastfm' / 'lastfm.inter'}")
    if name != "ml-1m":
        raise PopSteerError(f"unknown dataset '{name}' to fetch: only ml-1m has a public download here "
                            "(ml-100k is embedded); bring your own with `popsteer data import`")
    return fetch_ml1m(data_dir, url or ML1M_URL)


def fetch_ml1m(data_dir: Path, url: str = ML1M_URL) -> Path:
    """Download the GroupLens ML-1M zip and write ``ml-1m.inter`` and ``ml-1m.item``."""
    inter_path, item_path = Path(data_dir) / "ml-1m" / "ml-1m.inter", Path(data_dir) / "ml-1m" / "ml-1m.item"
    with made_folder(inter_path.parent) as folder, _temp_file(folder, ".zip") as zip_path:
        download(url, zip_path)
        with _open_zip(zip_path, url) as zf:
            with atomic_path(inter_path) as inter_tmp, atomic_path(item_path) as item_tmp:
                n_ratings = _convert(zf, ML1M_MEMBERS["ratings"], inter_tmp, INTER_HEADER, "utf-8", _rating_row)
                n_movies = _convert(zf, ML1M_MEMBERS["movies"], item_tmp, ITEM_HEADER, "latin-1", _movie_row)
    log.info("wrote %s (%d ratings) and %s (%d movies)", inter_path, n_ratings, item_path, n_movies)
    return inter_path


def download(url: str, dest: Path) -> int:
    """Stream ``url`` into ``dest`` (progress bar when the size is known); returns the byte count."""
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp, open(dest, "wb") as out:
            size = int(resp.headers.get("Content-Length") or 0) or None
            bar = progress(total=size, unit="B", unit_scale=True, desc="ml-1m.zip") if size else None
            got = 0
            while block := resp.read(CHUNK):
                out.write(block)
                got += len(block)
                if bar is not None:
                    bar.update(len(block))
            if bar is not None:
                bar.close()
    except urllib.error.HTTPError as exc:
        raise PopSteerError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise PopSteerError(f"cannot download {url}: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, truncated bodies, bad URLs
        raise PopSteerError(f"cannot download {url}: {type(exc).__name__}: {exc}") from None
    if size is not None and got != size:
        raise PopSteerError(f"cannot download {url}: got {got} of {size} bytes")
    return got


@contextlib.contextmanager
def _temp_file(folder: Path, suffix: str) -> Iterator[Path]:
    """A temporary file in ``folder``, always removed afterwards."""
    with tempfile.NamedTemporaryFile(prefix=".download.", suffix=suffix, dir=folder, delete=False) as fh:
        path = Path(fh.name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _open_zip(path: Path, url: str) -> Iterator[zipfile.ZipFile]:
    """Open the downloaded archive, checking it is a zip with the members ML-1M needs."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PopSteerError(f"{url} is not a valid zip archive ({exc})") from None
    with zf:
        names = set(zf.namelist())
        missing = [m for m in ML1M_MEMBERS.values() if m not in names]
        if missing:
            raise PopSteerError(f"{url}: the archive lacks {', '.join(missing)} (is it the MovieLens-1M zip?)")
        yield zf


def _convert(zf: zipfile.ZipFile, member: str, dest: Path, header: str, encoding: str, row) -> int:
    """Rewrite a ``::``-separated member as a TAB-separated atomic file; returns the row count."""
    n = 0
    try:
        with zf.open(member) as raw, open(dest, "w", encoding="utf-8", newline="\n") as out:
            out.write(header)
            for n, line in enumerate(_lines(raw, encoding), start=1):
                out.write(row(line, member, n))
    except (zipfile.BadZipFile, EOFError, OSError, UnicodeDecodeError) as exc:
        raise PopSteerError(f"cannot read {member} from the archive: {exc}") from None
    if n == 0:
        raise PopSteerError(f"{member} in the archive is empty")
    return n


def _lines(raw: IO[bytes], encoding: str) -> Iterator[str]:
    for line in io.TextIOWrapper(raw, encoding=encoding, newline=None):
        line = line.rstrip("\n")
        if line:
            yield line


def _split(line: str, n_fields: int, member: str, lineno: int) -> list[str]:
    parts = line.split("::")
    if len(parts) != n_fields or not parts[0].strip().isdigit():
        raise PopSteerError(f"{member} line {lineno}: expected {n_fields} '::'-separated fields, got {line[:80]!r}")
    return parts


def _rating_row(line: str, member: str, lineno: int) -> str:
    user, item, rating, ts = _split(line, 4, member, lineno)
    return f"{user}\t{item}\t{rating}\t{ts}\n"


def _movie_row(line: str, member: str, lineno: int) -> str:
    item, title, genres = _split(line, 3, member, lineno)
    return f"{item}\t{title}\t{genres.replace('|', ' ')}\n"
