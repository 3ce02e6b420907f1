"""Concept labels of SAE neurons (popsteer.browse.labels, docs/METHOD.md §10): hypergeometric enrichment of
each tag among a neuron's top items, Benjamini-Hochberg over every (tag, neuron) test; and the item metadata
they come from (popsteer.browse.metadata), keyed by raw item token and mapped to internal ids."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import false_discovery_control, hypergeom

from popsteer.browse.labels import enrichment, label_neurons, read_labels, write_labels
from popsteer.browse.metadata import item_metadata
from popsteer.data import SequenceData
from popsteer.errors import PopSteerError

N_ITEMS, N_NEURONS, TOP = 200, 6, 10
PLANTED_NEURON = 2


@pytest.fixture
def planted():
    """Six neurons with disjoint top-10 sets out of 200 items; tag ``planted`` on 8 of neuron 2's top items and
    4 items no neuron has, ``uniform`` on every item, ``random`` on a seeded random 30% of the items."""
    rng = np.random.default_rng(0)
    items = rng.permutation(np.arange(1, N_ITEMS + 1))
    tops = {j: items[j * TOP : (j + 1) * TOP] for j in range(N_NEURONS)}
    top_items = pd.DataFrame({"neuron": np.repeat(np.arange(N_NEURONS), TOP), "rank": np.tile(np.arange(TOP), N_NEURONS),
                              "item_id": np.concatenate([tops[j] for j in range(N_NEURONS)])})
    outside = items[N_NEURONS * TOP :]
    planted_items = np.concatenate([tops[PLANTED_NEURON][:8], outside[:4]])
    random_items = rng.choice(np.arange(1, N_ITEMS + 1), size=60, replace=False)
    tags = pd.concat([pd.DataFrame({"item_id": planted_items, "tag": "planted"}),
                      pd.DataFrame({"item_id": np.arange(1, N_ITEMS + 1), "tag": "uniform"}),
                      pd.DataFrame({"item_id": random_items, "tag": "random"})], ignore_index=True)
    return top_items, tags


def test_planted_tag_is_significant_and_a_uniform_tag_is_not(planted):
    top_items, tags = planted
    tests = enrichment(top_items, tags, N_ITEMS, N_NEURONS)
    labels = label_neurons(tests, N_NEURONS, fdr=0.05)
    assert list(labels["neuron"]) == list(range(N_NEURONS))
    assert labels.loc[PLANTED_NEURON, "label"] == "planted"
    assert labels.loc[PLANTED_NEURON, "hits"] == "8/10" and labels.loc[PLANTED_NEURON, "n_tags"] == 1
    assert (labels.drop(index=PLANTED_NEURON)["label"] == "").all()
    assert not labels["tags"].str.contains("uniform").any()  # every item carries it: p = 1 for every neuron
    row = tests[(tests["neuron"] == PLANTED_NEURON) & (tests["tag"] == "planted")].iloc[0]
    assert row["p"] == pytest.approx(hypergeom.sf(8 - 1, N_ITEMS, 12, TOP))  # P[X >= 8], X ~ Hypergeom(200, 12, 10)
    assert row["p"] < 1e-9 and row["q"] < 1e-7
    assert np.allclose(tests.loc[tests["tag"] == "uniform", "p"], 1.0)


def test_q_values_are_benjamini_hochberg_over_every_tag_neuron_pair(planted):
    """The m tests are all 6 x 3 (tag, neuron) pairs, the k = 0 ones (p = 1) included."""
    top_items, tags = planted
    tests = enrichment(top_items, tags, N_ITEMS, N_NEURONS)
    p = np.ones((N_NEURONS, 3))
    col = {"planted": 0, "random": 1, "uniform": 2}
    for r in tests.itertuples():
        p[r.neuron, col[r.tag]] = r.p
    q = false_discovery_control(p.ravel(), method="bh").reshape(p.shape)
    for r in tests.itertuples():
        assert r.q == pytest.approx(q[r.neuron, col[r.tag]])
    m = p.size  # by hand for the smallest p: q_(1) = min_l m p_(l) / l
    ordered = np.sort(p.ravel())
    assert tests["q"].min() == pytest.approx(min(np.min(m * ordered / np.arange(1, m + 1)), 1.0))
    assert (tests["q"] >= tests["p"] - 1e-15).all()


def test_a_weak_enrichment_does_not_survive_the_correction():
    """2 of neuron 0's 10 top items carry a tag on 5% of the catalogue: p ~ 0.09 alone, so never a label."""
    top = pd.DataFrame({"neuron": np.repeat(np.arange(50), 10), "rank": np.tile(np.arange(10), 50),
                        "item_id": np.arange(1, 501)})
    tags = pd.DataFrame({"item_id": np.r_[1, 2, np.arange(501, 549)], "tag": "weak"})  # 50 of 1000 items
    tests = enrichment(top, tags, 1000, 50)
    assert list(tests["neuron"]) == [0] and 0.05 < tests["p"].iloc[0] < 0.1
    assert (label_neurons(tests, 50)["label"] == "").all()


def test_no_metadata_gives_no_labels(planted, tmp_path):
    top_items, _ = planted
    no_tags = pd.DataFrame({"item_id": pd.Series(dtype=np.int64), "tag": pd.Series(dtype=str)})
    tests = enrichment(top_items, no_tags, N_ITEMS, N_NEURONS)
    assert tests.empty
    labels = label_neurons(tests, N_NEURONS)
    assert len(labels) == N_NEURONS and (labels["label"] == "").all() and (labels["n_tags"] == 0).all()
    data = _toy_data("toyset", ["[PAD]", "a", "b", "c"])
    meta = item_metadata(data, tmp_path / "datasets", tmp_path / "shared")
    assert meta.tags is None and "no item metadata" in meta.source
    assert list(meta.titles) == ["[PAD]", "a", "b", "c"]  # the raw tokens: nothing invented


def test_tags_below_the_support_floor_are_not_tested(planted):
    top_items, tags = planted
    tests = enrichment(top_items, tags, N_ITEMS, N_NEURONS, min_tag_items=13)  # planted has 12 items
    assert "planted" not in set(tests["tag"])


def _toy_data(name: str, tokens: list[str]) -> SequenceData:
    n = len(tokens) - 1
    items = np.tile(np.arange(1, n + 1), 2).astype(np.int64)
    return SequenceData(name=name, items=items, offsets=np.array([0, n, 2 * n]), item_tokens=np.array(tokens),
                        user_tokens=np.array(["u1", "u2"]))


def test_tags_csv_is_keyed_by_raw_token(tmp_path):
    """Internal id i is the item of raw token item_tokens[i]; a CSV naming no item of the dataset is refused."""
    data = _toy_data("toyset", ["[PAD]", "50", "7", "9"])
    csv = tmp_path / "tags.csv"
    csv.write_text("item_id,tag\n7,jazz\n9,jazz\n9,rock\n7,jazz\n1234,pop\n")
    meta = item_metadata(data, tmp_path, tmp_path, str(csv))
    assert sorted(map(tuple, meta.tags.to_numpy().tolist())) == [(2, "jazz"), (3, "jazz"), (3, "rock")]
    (tmp_path / "internal.csv").write_text("item_id,tag\n1,jazz\n2,rock\n3,pop\n")
    with pytest.raises(PopSteerError, match="raw token"):
        item_metadata(data, tmp_path, tmp_path, str(tmp_path / "internal.csv"))
    (tmp_path / "bad.csv").write_text("item,genre\n7,jazz\n")
    with pytest.raises(PopSteerError, match="item_id,tag"):
        item_metadata(data, tmp_path, tmp_path, str(tmp_path / "bad.csv"))
    with pytest.raises(PopSteerError, match="cannot read"):
        item_metadata(data, tmp_path, tmp_path, str(tmp_path / "missing.csv"))


def test_ml100k_genres_from_the_item_file(ml100k_small, tmp_path):
    """RecBole's ml-100k.item: ``class:token_seq`` holds the genres, keyed by raw movie id."""
    meta = item_metadata(ml100k_small, tmp_path / "none", tmp_path / "none")  # RecBole's embedded copy
    assert meta.tags is not None and "class" in meta.source
    toy_story = int(np.flatnonzero(ml100k_small.item_tokens == "1")[0])
    assert toy_story != 1  # the k-core renumbers: internal ids are not raw tokens
    assert set(meta.tags.loc[meta.tags["item_id"] == toy_story, "tag"]) == {"Animation", "Children's", "Comedy"}
    assert meta.titles[toy_story] == "Toy Story"
    assert meta.tags["item_id"].between(1, ml100k_small.n_items - 1).all()


def test_movies_dat_genres_and_titles(tmp_path):
    folder = tmp_path / "shared" / "mymovies"
    folder.mkdir(parents=True)
    (folder / "movies.dat").write_bytes("1::Toy Story (1995)::Animation|Children's|Comedy\n"
                                        "2::Jumanji (1995)::Adventure|Children's|Fantasy\n"
                                        "3::Amélie (2001)::Comedy|Romance\n".encode("latin-1"))
    data = _toy_data("mymovies", ["[PAD]", "3", "1"])
    meta = item_metadata(data, tmp_path / "datasets", tmp_path / "shared")
    assert list(meta.titles[1:]) == ["Amélie (2001)", "Toy Story (1995)"]
    assert set(meta.tags.loc[meta.tags["item_id"] == 1, "tag"]) == {"Comedy", "Romance"}
    assert "movies.dat" in meta.source and 2 not in set(meta.tags.loc[meta.tags["tag"] == "Adventure", "item_id"])


def test_hetrec_lastfm_tags_are_each_artists_most_assigned(tmp_path):
    folder = tmp_path / "shared" / "lastfm" / "hetrec2011-lastfm-2k"
    folder.mkdir(parents=True)
    (folder / "tags.dat").write_bytes("tagID\ttagValue\n1\tMetal\n2\tjazz\n3\trare\n".encode("latin-1"))
    rows = ["userID\tartistID\ttagID\tday\tmonth\tyear"]
    rows += [f"{u}\t52\t1\t1\t4\t2009" for u in range(6)] + [f"{u}\t52\t2\t1\t4\t2009" for u in range(3)]
    rows += [f"{u}\t52\t3\t1\t4\t2009" for u in range(1)] + ["9\t77\t2\t1\t1\t2010"]
    with gzip.open(folder / "user_taggedartists.dat.gz", "wt") as fh:
        fh.write("\n".join(rows) + "\n")
    data = _toy_data("lastfm", ["[PAD]", "77", "52"])
    meta = item_metadata(data, tmp_path / "datasets", tmp_path / "shared")
    assert "hetrec2011-lastfm-2k" in meta.source
    assert set(meta.tags.loc[meta.tags["item_id"] == 2, "tag"]) == {"metal", "jazz", "rare"}  # top 5 by users
    assert set(meta.tags.loc[meta.tags["item_id"] == 1, "tag"]) == {"jazz"}


def test_labels_file_is_tied_to_its_sae(planted, tmp_path):
    top_items, tags = planted
    labels = label_neurons(enrichment(top_items, tags, N_ITEMS, N_NEURONS), N_NEURONS)
    files = write_labels(tmp_path, labels, {"sae_sha256": "abc", "source": "test"})
    assert [f.name for f in files] == ["neuron_labels.csv", "neuron_labels.json"]
    assert json.loads(files[1].read_text())["source"] == "test"
    back = read_labels(tmp_path, "abc")
    assert back.loc[PLANTED_NEURON, "label"] == "planted" and back.loc[0, "label"] == ""
    assert read_labels(tmp_path, "another sae") is None
    assert not list(tmp_path.glob("*.tmp"))


def test_report_top_neurons_carry_the_label_of_their_own_sae(ml100k_small, tmp_path):
    from popsteer.eval.popularity import PopularityGroups
    from popsteer.report.neurons import top_neurons
    from popsteer.steering.results import sae_dir

    sae_path = tmp_path / "SASRec_SAE-test-ml-100k.safetensors"
    folder = sae_dir(tmp_path / "datasets", "ml-100k", sae_path)
    folder.mkdir(parents=True)
    (folder / "analysis.json").write_text(json.dumps({"sae_sha256": "abc"}))
    pd.DataFrame({"neuron": np.repeat(np.arange(4), 2), "rank": np.tile([0, 1], 4), "item_id": np.arange(1, 9),
                  "item_token": ml100k_small.item_tokens[1:9]}).to_csv(folder / "neuron_top_items.csv", index=False)
    labels = pd.DataFrame({"neuron": np.arange(4), "label": ["", "", "", "Horror, Sci-Fi"]})
    d = np.array([0.1, -0.5, 0.2, 3.0])
    groups = PopularityGroups.from_counts(ml100k_small.train_target_counts())

    def shown(sha: str) -> dict[int, str]:
        write_labels(folder, labels, {"sae_sha256": sha})
        table = top_neurons(ml100k_small, tmp_path / "datasets", groups, d, tmp_path / "none", sae_path, n_top=2)
        return dict(zip(table["neuron"], table["label"]))

    assert shown("abc") == {3: "Horror, Sci-Fi", 1: ""}
    assert shown("another SAE's") == {3: "", 1: ""}  # a stale file of another SAE is not used
