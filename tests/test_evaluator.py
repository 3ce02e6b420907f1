"""Our evaluator equals RecBole's own on the same trained model and split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from popsteer.models.config import SASRecConfig
from popsteer.data import find_inter_file
from popsteer.eval.evaluator import Evaluator, rank_topk
from popsteer.eval.metrics import gini
from popsteer.models.encode import evaluate_model


@pytest.mark.parametrize("split", ["valid", "test"])
def test_metrics_equal_recbole(small_sasrec, ml100k_small, split):
    from popsteer.models.recbole_adapter import RecBolePipeline

    model, _ = small_sasrec
    pipe = RecBolePipeline("ml-100k", find_inter_file("ml-100k", None), SASRecConfig.small())
    try:
        theirs_model = pipe.new_model()
        theirs_model.load_state_dict(model.state_dict())
        theirs = pipe.evaluate(pipe.trainer(theirs_model), split)
    finally:
        pipe.close()
    # RecBole's Gini uses its item count including the padding item
    ours = evaluate_model(model, ml100k_small, split, gini_n=ml100k_small.n_items)
    assert ours["ndcg@10"] > 0.01  # a trained model, not a degenerate one
    for mine, recbole in (("ndcg@10", "ndcg@10"), ("precision@10", "precision@10"), ("gini@10", "giniindex@10"),
                          ("arp@10", "averagepopularity@10"), ("recall@10", "recall@10"), ("mrr@10", "mrr@10"),
                          ("hit@10", "hit@10")):
        assert ours[mine] == pytest.approx(theirs[recbole], abs=1e-6), mine


def test_gini_against_direct_formula():
    rng = np.random.default_rng(0)
    c = rng.integers(0, 20, size=50).astype(float)
    n = len(c)
    s = np.sort(c)
    direct = sum((2 * (i + 1) - n - 1) * s[i] for i in range(n)) / (n * s.sum())
    assert gini(c) == pytest.approx(direct, abs=1e-12)
    assert gini(np.ones(10)) == pytest.approx(0.0, abs=1e-12)
    assert gini(np.r_[np.zeros(9), 5.0]) == pytest.approx(0.9, abs=1e-12)


def test_chunked_topk_equals_dense():
    g = torch.Generator().manual_seed(0)
    reps = torch.randn(37, 8, generator=g)
    items = torch.randn(501, 8, generator=g)
    dense = rank_topk(reps, items, 10, batch_size=16)
    for chunk in (7, 64, 500):
        assert torch.equal(rank_topk(reps, items, 10, batch_size=16, item_chunk=chunk), dense)
    assert (dense != 0).all()


def test_group_metrics_are_consistent(small_sasrec, ml100k_small):
    model, _ = small_sasrec
    m = evaluate_model(model, ml100k_small, "test")
    ev = Evaluator.for_split(ml100k_small, "test")
    g = ev.groups
    w = np.array([g.head[ev.targets].mean(), g.mid[ev.targets].mean(), g.tail[ev.targets].mean()])
    parts = np.nan_to_num([m["ndcg_head@10"], m["ndcg_mid@10"], m["ndcg_tail@10"]])
    assert (w * parts).sum() == pytest.approx(m["ndcg@10"], abs=1e-9)
    assert 0 <= m["lt_coverage@10"] <= 1 and 0 <= m["gini@10"] <= 1


def test_bias_and_history_masking_equal_a_dense_reference():
    """rank_topk with an item bias and an excluded-items CSR, dense and chunked, equals torch.topk over
    x @ E.T + b with the padding and each row's excluded items at -inf; the grid's repeated CSR and
    a shard's slice address the same rows."""
    import numpy as np
    import torch

    from popsteer.eval.evaluator import full_scores, rank_topk, repeat_csr, slice_csr

    g = torch.Generator().manual_seed(0)
    x, emb, b = torch.randn(37, 8, generator=g), torch.randn(300, 8, generator=g), torch.randn(300, generator=g)
    rng = np.random.default_rng(0)
    lens = rng.integers(0, 30, 37)
    csr = (np.concatenate([[0], np.cumsum(lens)]), rng.integers(1, 300, lens.sum()))
    ref = (x @ emb.T + b)
    ref[:, 0] = -torch.inf
    for u in range(37):
        ref[u, torch.as_tensor(csr[1][csr[0][u]:csr[0][u + 1]])] = -torch.inf
    want = torch.topk(ref, 10).indices
    assert torch.equal(rank_topk(x, emb, 10, batch_size=8, bias=b, exclude=csr), want)
    assert torch.equal(rank_topk(x, emb, 10, batch_size=8, item_chunk=64, bias=b, exclude=csr), want)
    assert torch.equal(full_scores(x[5:9], emb, b, csr, 5), ref[5:9])
    rep = repeat_csr(csr, 5, 9, 3)  # rows (3 x 4): users 5..8 three times
    assert torch.equal(rank_topk(x[5:9].repeat(3, 1), emb, 10, bias=b, exclude=rep), want[5:9].repeat(3, 1))
    sl = slice_csr(csr, 10, 20)
    assert torch.equal(rank_topk(x[10:20], emb, 10, bias=b, exclude=sl), want[10:20])


def test_a_users_list_does_not_depend_on_its_batch():
    """Near-duplicate items (scores apart by a few ulps): a user scored alone, or in the last 1-3 rows of
    a shard, gets the list it gets in a full batch, dense and chunked (the product is padded to
    MIN_ROWS rows; 1-3 rows go through another BLAS kernel that rounds differently)."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(50, 64, generator=g)
    emb = torch.cat([torch.zeros(1, 64), base.repeat(40, 1) + 1e-6 * torch.randn(2000, 64, generator=g)])
    x = torch.randn(300, 64, generator=g) * 4
    for chunk in (None, 500):
        batch = rank_topk(x, emb, 10, item_chunk=chunk)
        alone = torch.cat([rank_topk(x[i : i + 1], emb, 10, item_chunk=chunk) for i in range(len(x))])
        tail = torch.cat([rank_topk(x[:253], emb, 10, item_chunk=chunk), rank_topk(x[253:], emb, 10, batch_size=5,
                                                                                    item_chunk=chunk)])
        assert torch.equal(alone, batch) and torch.equal(tail, batch)
