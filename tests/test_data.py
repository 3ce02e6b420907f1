"""The data layer reproduces RecBole's SequentialDataset exactly (ids, order, splits, pairs)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from popsteer.models.config import SASRecConfig
from popsteer.data import find_inter_file, load_dataset
from popsteer.errors import PopSteerError
from popsteer.eval.popularity import PopularityGroups


@pytest.fixture(scope="module")
def recbole_pipe():
    from popsteer.models.recbole_adapter import RecBolePipeline

    pipe = RecBolePipeline("ml-100k", find_inter_file("ml-100k", None), SASRecConfig())
    yield pipe
    pipe.close()


def _rows(seq, ln, tgt):
    return np.concatenate([np.asarray(tgt)[:, None], np.asarray(ln)[:, None], np.asarray(seq)], 1)


def _sorted(a):
    return a[np.lexsort(a.T[::-1])]


def test_ids_match_recbole(recbole_pipe):
    data = load_dataset("ml-100k")
    assert data.item_tokens.tolist() == recbole_pipe.item_tokens().tolist()
    assert data.user_tokens.tolist() == recbole_pipe.user_tokens()[1:].tolist()


def test_train_pairs_match_recbole(recbole_pipe):
    data = load_dataset("ml-100k")
    ours = _rows(*data.train_prefix_pairs())
    seq, ln, tgt = recbole_pipe.train_pairs()
    theirs = _rows(seq.numpy(), ln.numpy(), tgt.numpy())
    assert ours.shape == theirs.shape
    assert np.array_equal(_sorted(ours), _sorted(theirs))
    # popularity = training-target counts, as RecBole's item_counter
    counter = recbole_pipe.train_data.dataset.item_counter
    counts = data.train_target_counts()
    assert all(counts[i] == counter.get(i, 0) for i in range(1, data.n_items))


@pytest.mark.parametrize("split", ["valid", "test"])
def test_eval_splits_match_recbole(recbole_pipe, split):
    data = load_dataset("ml-100k")
    loader = recbole_pipe.valid_data if split == "valid" else recbole_pipe.test_data
    inter = loader.dataset.inter_feat
    uid = inter["user_id"].numpy() - 1
    seq, ln, tgt = data.split(split)
    assert np.array_equal(tgt[uid], inter["item_id"].numpy())
    assert np.array_equal(ln[uid], inter["item_length"].numpy())
    assert np.array_equal(seq[uid], inter["item_id_list"].numpy())


def test_train_windows_cover_every_target_once():
    data = load_dataset("ml-100k")
    for stride in (10, 25, 50):
        inputs, targets = data.train_windows(stride)
        got = np.bincount(targets[targets > 0], minlength=data.n_items)
        assert np.array_equal(got, data.train_target_counts())
        # every target sits right after its input in the user's sequence
        assert ((inputs > 0) | (targets == 0)).all()


def test_window_starts_match_the_sliding_rule():
    """Windows of L inputs start every `stride` positions, the last one flush with the sequence end."""
    data = load_dataset("ml-100k", None, max_len=20)
    for stride in (1, 7, 10, 20):
        want_u, want_s = [], []
        for u, (s, e) in enumerate(zip(data.offsets[:-1], data.offsets[1:] - 2)):
            n_in, start = e - s - 1, 0
            while n_in > 0:
                want_u.append(u)
                want_s.append(s + start)
                if start + 20 >= n_in:
                    break
                start = min(start + stride, n_in - 20)
        users, starts = data._window_starts(stride)
        assert np.array_equal(users, want_u) and np.array_equal(starts, want_s)
        assert np.array_equal(data.train_window_users(stride), users)


def test_popularity_groups_partition():
    counts = np.array([0, 50, 30, 10, 5, 3, 1, 1, 0])
    g = PopularityGroups.from_counts(counts)
    assert not (g.head & g.tail).any() and not (g.head & g.mid).any()
    assert (g.head | g.mid | g.tail)[1:].all() and not (g.head | g.mid | g.tail)[0]
    share = counts / counts.sum()
    assert share[g.head].sum() <= 0.2 + 1e-12 and share[g.tail].sum() <= 0.2 + 1e-12
    assert g.head[1] == (share[1] <= 0.2)
    assert g.tail[8] and g.tail[7]


def test_bad_inputs(tmp_path):
    with pytest.raises(PopSteerError, match="unknown dataset"):
        load_dataset("netflix", tmp_path)
    with pytest.raises(PopSteerError, match="not found"):
        load_dataset("ml-1m", tmp_path)
    d = tmp_path / "ml-1m"
    d.mkdir()
    (d / "ml-1m.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\tnoon\n")
    with pytest.raises(PopSteerError, match="non-numeric timestamp"):
        load_dataset("ml-1m", tmp_path)
    (d / "ml-1m.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t3\t4\n")
    with pytest.raises(PopSteerError, match="empty after 5-core"):
        load_dataset("ml-1m", tmp_path)
    (d / "ml-1m.inter").unlink()
    with gzip.open(d / "ml-1m.inter.gz", "wb") as fh:
        fh.write(b"user_id:token\titem_id:token\ttimestamp:float\n" + b"1\t2\t3\n" * 50)
    raw = (d / "ml-1m.inter.gz").read_bytes()
    (d / "ml-1m.inter.gz").write_bytes(raw[: len(raw) // 2])  # truncated gzip
    with pytest.raises(PopSteerError):
        load_dataset("ml-1m", tmp_path)
