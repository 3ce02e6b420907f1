"""Retrieval indexes (popsteer/retrieval): exact equals brute force, FAISS IVF/HNSW recall, save/load, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from popsteer.errors import PopSteerError
from popsteer.retrieval import AnnIndex, ExactIndex, ItemIndex, build_index, load_index

N, D = 6000, 16


@pytest.fixture(scope="module")
def table():
    """Popularity-like norms (a few long vectors), a bias, and a padding row that would outscore everything."""
    rng = np.random.default_rng(0)
    emb = (rng.normal(size=(N, D)) * (1 + 0.5 * rng.pareto(3, size=(N, 1)))).astype(np.float32)
    emb[0] = 100.0
    bias = rng.normal(scale=0.5, size=N).astype(np.float32)
    bias[0] = 100.0
    queries = rng.normal(size=(200, D)).astype(np.float32)
    return emb, bias, queries


@pytest.fixture(scope="module")
def indexes(table):
    emb, bias, _ = table
    return {kind: build_index(emb, bias, kind) for kind in ("exact", "ivf", "hnsw")}


def brute_force(emb, bias, queries, k):
    scores = torch.from_numpy(queries) @ torch.from_numpy(emb).T + torch.from_numpy(bias)
    scores[:, 0] = -torch.inf
    return torch.topk(scores, k)


def test_exact_index_is_brute_force(table, indexes):
    emb, bias, queries = table
    scores, ids = indexes["exact"].search(queries, 10)
    want = brute_force(emb, bias, queries, 10)
    assert ids.dtype == np.int64 and scores.dtype == np.float32 and ids.shape == scores.shape == (200, 10)
    assert np.array_equal(ids, want.indices.numpy())
    np.testing.assert_allclose(scores, want.values.numpy(), rtol=1e-5, atol=1e-5)
    assert isinstance(indexes["exact"], ItemIndex) and isinstance(indexes["ivf"], ItemIndex)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_ann_recall_and_exact_rescoring(table, indexes, kind):
    """Recall@10 against exact >= 0.95 on plain and shifted (steered-like) queries; every returned score is
    the brute-force score of its item, best first; padding never returned."""
    emb, bias, queries = table
    exact = indexes["exact"]
    shifted = queries + 0.8 * np.random.default_rng(1).normal(size=queries.shape).astype(np.float32)
    for q in (queries, shifted):
        scores, ids = indexes[kind].search(q, 10)
        want_ids = exact.search(q, 10)[1]
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, want_ids)])
        assert recall >= 0.95, (kind, recall)
        full = (torch.from_numpy(q) @ torch.from_numpy(emb).T + torch.from_numpy(bias)).numpy()
        np.testing.assert_allclose(scores, np.take_along_axis(full, ids, 1), rtol=1e-5, atol=1e-5)
        assert (np.diff(scores, axis=1) <= 0).all() and (ids > 0).all()
        assert all(len(set(row)) == 10 for row in ids)


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_save_and_load_round_trip(table, indexes, kind, tmp_path):
    emb, bias, queries = table
    index = indexes[kind]
    index.save(tmp_path / kind)
    doc = json.loads((tmp_path / kind / "index.json").read_text())
    assert doc["kind"] == kind and doc["table"] == {"n_items": N, "d": D, "bias": True}
    assert (tmp_path / kind / "items.faiss").is_file() == (kind != "exact")
    loaded = load_index(tmp_path / kind, emb, bias)
    assert loaded.params() == index.params()
    for a, b in zip(loaded.search(queries, 10), index.search(queries, 10)):
        assert np.array_equal(a, b)
    with pytest.raises(PopSteerError, match="built for an item table"):
        load_index(tmp_path / kind, emb[:, :8], bias)
    with pytest.raises(PopSteerError, match="built for an item table"):
        load_index(tmp_path / kind, emb, None)


def test_without_bias_and_ties_to_the_exact_kernel(table):
    """No bias: the plain vectors; a tiny catalog (k = all real items) through both kinds."""
    emb, _, queries = table
    small = emb[:40]
    for kind in ("exact", "ivf"):
        scores, ids = build_index(small, None, kind, **({"nlist": 4, "nprobe": 4} if kind == "ivf" else {})).search(
            queries, 39)
        assert sorted(ids[0].tolist()) == list(range(1, 40))
        np.testing.assert_allclose(scores, brute_force(small, np.zeros(40, np.float32), queries, 39).values.numpy(),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call,match", [
    (lambda e, b: build_index(e, b, "annoy"), "kind: expected one of"),
    (lambda e, b: build_index(e, b, "ivf", nlist=0), "nlist must be an integer"),
    (lambda e, b: build_index(e, b, "ivf", nlist=16, nprobe=17), "nprobe must be an integer"),
    (lambda e, b: build_index(e, b, "ivf", nprobe=2.5), "nprobe must be an integer"),
    (lambda e, b: build_index(e, b, "hnsw", m=True), "m must be an integer"),
    (lambda e, b: build_index(e, b, "hnsw", nprobe=4), "unknown setting"),
    (lambda e, b: build_index(e, b, "exact", nlist=4), "unknown setting"),
    (lambda e, b: build_index(e, b[:-1]), "item bias"),
    (lambda e, b: build_index(np.full_like(e, np.nan), b), "finite"),
    (lambda e, b: build_index(e[:1], None), "n_items >= 2"),
    (lambda e, b: build_index(e, b).search(np.zeros((2, 3), np.float32), 10), r"queries: expected shape \(B, 16\)"),
    (lambda e, b: build_index(e, b).search(np.full((2, D), np.inf, np.float32), 10), "queries: must be finite"),
    (lambda e, b: build_index(e, b).search(np.zeros((2, D), np.float32), 0), "k: expected an integer"),
    (lambda e, b: build_index(e, b).search(np.zeros((2, D), np.float32), 500), "k: expected an integer"),
])
def test_bad_input_is_one_clear_error(table, call, match):
    emb, bias, _ = table
    with pytest.raises(PopSteerError, match=match):
        call(emb[:500], bias[:500])


def test_loading_a_broken_folder_is_one_clear_error(table, indexes, tmp_path):
    emb, bias, _ = table
    with pytest.raises(PopSteerError, match="no index here"):
        load_index(tmp_path, emb, bias)
    indexes["ivf"].save(tmp_path / "i")
    (tmp_path / "i" / "items.faiss").write_bytes(b"not faiss")
    with pytest.raises(PopSteerError, match="not a FAISS index"):
        load_index(tmp_path / "i", emb, bias)
    (tmp_path / "i" / "index.json").write_text("{")
    with pytest.raises(PopSteerError, match="not a readable index"):
        load_index(tmp_path / "i", emb, bias)
    assert isinstance(AnnIndex, type) and isinstance(ExactIndex, type)
