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
