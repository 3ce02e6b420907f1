"""Any dataset by name: ``popsteer data import`` (sequence files, atomic files, CSV) round-trips, and
reading with other field names, k-core thresholds and a rating threshold is RecBole's processing."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_util import ROOT
from popsteer.data import DataConfig, load_dataset


def _sequences(n_users: int = 60, n_items: int = 25, seed: int = 0) -> dict[str, list[str]]:
    """Users with 6-20 items each; every item is frequent, so the 5-core filter keeps all."""
    rng = random.Random(seed)
    return {str(u): [str(rng.randint(1, n_items)) for _ in range(rng.randint(6, 20))] for u in range(1, n_users + 1)}


def _import(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "popsteer", "data", "import", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("gz", [False, True])
def test_sequence_file_round_trips(tmp_path, gz):
    seqs = _sequences()
    text = "".join(f"{u} {' '.join(items)}\n" for u, items in seqs.items())
    path = tmp_path / ("Toy.txt.gz" if gz else "Toy.txt")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    proc = _import(["--format", "seq", str(path), "--name", "toy", "--data-dir", str(tmp_path / "data")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["path"] == str(tmp_path / "data" / "toy" / "toy.inter")
    data = load_dataset("toy", tmp_path / "data", max_len=8)
    assert data.n_users == len(seqs)
    for u, token in enumerate(data.user_tokens):  # the same sequences, in the file's order
        assert data.item_tokens[data.sequence(u)].tolist() == seqs[token]
    for split, back in (("valid", 2), ("test", 1)):  # the same leave-one-out splits as the file read directly
        seq, ln, tgt = data.split(split)
        for u, token in enumerate(data.user_tokens):
            items = seqs[token]
            history = items[: len(items) - back][-8:]
            assert data.item_tokens[tgt[u]] == items[-back]
            assert data.item_tokens[seq[u, : ln[u]]].tolist() == history


def test_csv_and_inter_imports_load_the_same_dataset(tmp_path):
    seqs = _sequences(seed=1)
    rows = [(u, i, 1000 + 10 * t) for u, items in seqs.items() for t, i in enumerate(items)]
    random.Random(2).shuffle(rows)  # file order is not time order: the time column decides
    csv = tmp_path / "ratings.csv"
    csv.write_text("movieId,userId,rating,ts\n" + "".join(f"{i},{u},4.0,{t}\n" for u, i, t in rows))
    proc = _import(["--format", "csv", str(csv), "--name", "fromcsv", "--user-col", "userId", "--item-col", "movieId",
                    "--time-col", "ts", "--data-dir", str(tmp_path / "data")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    inter = tmp_path / "elsewhere" / "mine.inter"
    inter.parent.mkdir()
    inter.write_text((tmp_path / "data" / "fromcsv" / "fromcsv.inter").read_text())
    proc = _import(["--format", "inter", str(inter), "--name", "frominter", "--data-dir", str(tmp_path / "data")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = load_dataset("fromcsv", tmp_path / "data"), load_dataset("frominter", tmp_path / "data")
    assert np.array_equal(a.items, b.items) and a.item_tokens.tolist() == b.item_tokens.tolist()
    for u, token in enumerate(a.user_tokens):
        assert a.item_tokens[a.sequence(u)].tolist() == seqs[token]


def test_fields_thresholds_and_ratings_follow_recbole(tmp_path):
    """Other column names, a (3, 4)-core and ratings >= 3, on a dataset that is not ml-100k:
    the same users, items, order and splits as RecBole's own processing."""
    from popsteer.models.config import SASRecConfig
    from popsteer.models.recbole_adapter import RecBolePipeline

    rng = random.Random(3)
    lines = []
    for u in range(80):
        for t in range(rng.randint(2, 14)):
            lines.append(f"u{u}\tm{rng.randint(0, 40)}\t{rng.randint(1, 5)}\t{rng.randint(0, 50)}\n")  # time ties too
    folder = tmp_path / "data" / "shop"
    folder.mkdir(parents=True)
    (folder / "shop.inter").write_text("uid:token\tsku:token\tstars:float\twhen:float\n" + "".join(lines))
    cfg = DataConfig(user_field="uid", item_field="sku", time_field="when", k_user=3, k_item=4, rating_field="stars",
                     min_rating=3)
    data = load_dataset("shop", tmp_path / "data", max_len=10, cfg=cfg)
    assert data.config == cfg and data.n_users > 20
    pipe = RecBolePipeline("shop", folder / "shop.inter", SASRecConfig(max_len=10), data_cfg=cfg)
    try:
        assert data.item_tokens.tolist() == pipe.item_tokens().tolist()
        assert data.user_tokens.tolist() == pipe.user_tokens()[1:].tolist()
        inter = pipe.test_data.dataset.inter_feat
        uid = inter["uid"].numpy() - 1
        seq, ln, tgt = data.split("test")
        assert np.array_equal(tgt[uid], inter["sku"].numpy())
        assert np.array_equal(seq[uid], inter["sku_list"].numpy())
    finally:
        pipe.close()
