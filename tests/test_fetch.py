"""fetch_dataset: download over HTTP (a local server), convert to atomic files, fail cleanly."""

from __future__ import annotations

import functools
import http.server
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from popsteer.data import load_dataset
from popsteer.errors import PopSteerError
from popsteer.data.fetch import fetch_dataset

USERS, ITEMS = range(1, 7), (10, 20, 30, 40, 50, 60)
MOVIES = [(10, "Toy Story (1995)", "Animation|Children's|Comedy"), (20, "Jumanji (1995)", "Adventure"),
          (30, "Cérémonie, La (1995)", "Drama"), (40, "Heat (1995)", "Action|Crime|Thriller"),
          (50, "Casino (1995)", "Drama|Thriller"), (60, "Babe (1995)", "Children's|Comedy|Drama")]


def _ratings() -> list[tuple[int, int, int, int]]:
    """Every user rates every item, in a user-dependent item order (as ratings.dat: not time order)."""
    rows = []
    for u in USERS:
        order = ITEMS[u % len(ITEMS):] + ITEMS[: u % len(ITEMS)]
        rows += [(u, i, 1 + (u + i) % 5, 978300000 + 60 * u - k) for k, i in enumerate(order)]
    return rows


def _make_zip(path: Path, members: tuple[str, ...] = ("ratings.dat", "movies.dat")) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        if "ratings.dat" in members:
            zf.writestr("ml-1m/ratings.dat", "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in _ratings()))
        if "movies.dat" in members:
            zf.writestr("ml-1m/movies.dat", "".join(f"{i}::{t}::{g}\n" for i, t, g in MOVIES).encode("latin-1"))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 (free port); yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fetch_ml1m_writes_atomic_files(server, tmp_path):
    root, base = server
    _make_zip(root / "ml-1m.zip")
    data_dir = tmp_path / "data"
    path = fetch_dataset("ml-1m", data_dir, url=f"{base}/ml-1m.zip")
    assert path == data_dir / "ml-1m" / "ml-1m.inter"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    assert lines[1:] == [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in _ratings()]  # file order kept
    item_lines = (data_dir / "ml-1m" / "ml-1m.item").read_text(encoding="utf-8").splitlines()
    assert item_lines[0] == "item_id:token\tmovie_title:token_seq\tgenre:token_seq"
    assert item_lines[1] == "10\tToy Story (1995)\tAnimation Children's Comedy"
    assert item_lines[3] == "30\tCérémonie, La (1995)\tDrama"  # latin-1 decoded, written as UTF-8
    assert sorted(p.name for p in (data_dir / "ml-1m").iterdir()) == ["ml-1m.inter", "ml-1m.item"]

    data = load_dataset("ml-1m", data_dir)
    assert data.n_users == len(USERS) and data.n_items == len(ITEMS) + 1
    first_user_order = ITEMS[1:] + ITEMS[:1]  # user 1's items in file order = first appearance
    assert data.item_tokens.tolist() == ["[PAD]"] + [str(i) for i in first_user_order]
    # user 1's timestamps decrease along the file, so its time order is the reverse
    assert [data.item_tokens[i] for i in data.sequence(0)] == [str(i) for i in first_user_order[::-1]]


def _assert_nothing_left(data_dir: Path) -> None:
    assert not data_dir.exists(), list(data_dir.rglob("*"))  # not even the folders it made


def test_bad_zip_is_refused_and_leaves_nothing(server, tmp_path):
    root, base = server
    (root / "ml-1m.zip").write_bytes(b"<html>not a zip</html>")
    with pytest.raises(PopSteerError, match="not a valid zip"):
        fetch_dataset("ml-1m", tmp_path / "data", url=f"{base}/ml-1m.zip")
    _assert_nothing_left(tmp_path / "data")


def test_missing_member_is_refused_and_keeps_old_file(server, tmp_path):
    root, base = server
    _make_zip(root / "ml-1m.zip", members=("ratings.dat",))
    folder = tmp_path / "data" / "ml-1m"
    folder.mkdir(parents=True)
    (folder / "ml-1m.inter").write_text("old")
    with pytest.raises(PopSteerError, match="ml-1m/movies.dat"):
        fetch_dataset("ml-1m", tmp_path / "data", url=f"{base}/ml-1m.zip")
    assert [p.name for p in folder.iterdir()] == ["ml-1m.inter"]
    assert (folder / "ml-1m.inter").read_text() == "old"


def test_malformed_ratings_are_refused(server, tmp_path):
    root, base = server
    with zipfile.ZipFile(root / "ml-1m.zip", "w") as zf:
        zf.writestr("ml-1m/ratings.dat", "1::10::5::978300000\n1,20,5,978300001\n")
        zf.writestr("ml-1m/movies.dat", "10::Toy Story (1995)::Comedy\n")
    with pytest.raises(PopSteerError, match="line 2"):
        fetch_dataset("ml-1m", tmp_path / "data", url=f"{base}/ml-1m.zip")
    _assert_nothing_left(tmp_path / "data")


@pytest.mark.parametrize("where", ["closed port", "404"])
def test_network_failure_is_a_clear_error(server, tmp_path, where):
    _, base = server
    url = f"http://127.0.0.1:{_closed_port()}/ml-1m.zip" if where == "closed port" else f"{base}/absent.zip"
    with pytest.raises(PopSteerError, match="cannot download"):
        fetch_dataset("ml-1m", tmp_path / "data", url=url)
    _assert_nothing_left(tmp_path / "data")


def test_other_datasets(tmp_path):
    path = fetch_dataset("ml-100k", tmp_path)  # embedded: nothing to fetch
    assert path.name in ("ml-100k.inter", "ml-100k.inter.gz") and path.is_file()
    with pytest.raises(PopSteerError, match=r"lastfm[/\\]lastfm\.inter"):
        fetch_dataset("lastfm", tmp_path)
    with pytest.raises(PopSteerError, match="unknown dataset"):
        fetch_dataset("netflix", tmp_path)
    assert not any(tmp_path.iterdir())
