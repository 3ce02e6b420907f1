"""All-position encodings equal RecBole's per-prefix forward where the contexts agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from popsteer.models.encode import encode_prefixes, encode_users


def test_encode_prefixes_matches_per_prefix_forward(small_sasrec, ml100k_small):
    model, _ = small_sasrec
    data = ml100k_small
    seq, ln, _ = data.train_prefix_pairs()
    exact = encode_users(model, seq, ln)  # RecBole's forward, one prefix at a time
    assert torch.allclose(encode_prefixes(model, data, stride=1), exact, atol=1e-5)
    target_pos = np.concatenate([np.arange(1, t) for t in data.lengths - 2 if t > 1])
    whole_history = torch.as_tensor(target_pos <= data.max_len)
    for stride in (5, data.max_len):
        approx = encode_prefixes(model, data, stride=stride)
        assert approx.shape == exact.shape
        assert torch.allclose(approx[whole_history], exact[whole_history], atol=1e-5)


def test_recbole_import_leaves_anomaly_mode_off():
    """RecBole's sine.py turns torch's anomaly mode on at import (~1.5x slower training); the adapter undoes it."""
    import subprocess
    import sys

    raw = ("import numpy as np, torch; np.float_ = np.float64; np.complex_ = np.complex128; np.unicode_ = np.str_;"
           "import recbole.model.sequential_recommender; print(torch.is_anomaly_enabled())")
    fenced = ("import torch; from popsteer.models.config import SASRecConfig; from popsteer.data import find_inter_file;"
              "from popsteer.models.recbole_adapter import RecBolePipeline, build_sasrec;"
              "build_sasrec(10, SASRecConfig()); print(torch.is_anomaly_enabled());"
              "p = RecBolePipeline('ml-100k', find_inter_file('ml-100k', None), SASRecConfig());"
              "p.trainer(p.new_model()); print(torch.is_anomaly_enabled()); p.close()")
    out = [subprocess.run([sys.executable, "-c", c], capture_output=True, text=True, check=True).stdout.split()
           for c in (raw, fenced)]
    assert out[0][-1:] == ["True"] and out[1][-2:] == ["False", "False"]


def test_weight_ema_averages_and_restores():
    from popsteer.models.ema import WeightEMA

    lin = torch.nn.Linear(3, 2)
    ema = WeightEMA(lin, decay=0.5)
    expect = [p.detach().clone() for p in lin.parameters()]
    for step in range(20):
        with torch.no_grad():
            for p in lin.parameters():
                p.add_(float(step + 1))
        ema.update()
        d = min(0.5, (1 + step) / (10 + step))
        expect = [d * e + (1 - d) * p.detach() for e, p in zip(expect, lin.parameters())]
    raw = [p.detach().clone() for p in lin.parameters()]
    with ema.applied():
        for p, e in zip(lin.parameters(), expect):
            assert torch.allclose(p, e, atol=1e-6)
        assert not torch.equal(lin.weight, raw[0])  # the average lags the raw weights
    assert all(torch.equal(p, r) for p, r in zip(lin.parameters(), raw))  # its own weights back


def test_allpos_with_ema_keeps_the_best_scored_weights(ml100k_small):
    """With ema_decay, each epoch scores raw and averaged weights; the model returned is the best of all of them."""
    from popsteer.models.config import SASRecConfig, TrainConfig
    from popsteer.models.recbole_adapter import build_sasrec
    from popsteer.models.allpos import train_allpos
    from popsteer.models.encode import evaluate_model

    torch.manual_seed(0)
    model = build_sasrec(ml100k_small.n_items, SASRecConfig.small())
    cfg = TrainConfig(epochs=3, stride=10, learning_rate=3e-3, ema_decay=0.9)
    model, history = train_allpos(model, ml100k_small, cfg)
    assert all("ema_valid_ndcg@10" in r and "valid_ndcg@10" in r for r in history)
    assert any(r["ema_valid_ndcg@10"] != r["valid_ndcg@10"] for r in history)  # two different weight sets scored
    scores = [(r[f"{w}valid_ndcg@10"], w or "raw") for r in history for w in ("", "ema_")]
    best, which = max(scores)
    kept = [r for r in history if "kept" in r][-1]
    assert kept["kept"] == ("ema" if which == "ema_" else "raw")
    assert evaluate_model(model, ml100k_small, "valid")["ndcg@10"] == best


def test_allpos_budget_stop_scores_the_last_epoch(ml100k_small):
    """A time budget that ends training between evaluations still scores, and keeps, the last epoch."""
    from popsteer.models.config import SASRecConfig, TrainConfig
    from popsteer.models.recbole_adapter import build_sasrec
    from popsteer.models.allpos import train_allpos
    from popsteer.models.encode import evaluate_model

    torch.manual_seed(0)
    model = build_sasrec(ml100k_small.n_items, SASRecConfig.small())
    untrained = evaluate_model(model, ml100k_small, "valid")["ndcg@10"]
    cfg = TrainConfig(epochs=10, stride=10, learning_rate=3e-3, eval_every=5, time_budget_min=1e-6)
    model, history = train_allpos(model, ml100k_small, cfg)
    assert len(history) == 1 and history[0]["kept"] == "raw"  # stopped after epoch 0, scored although 0 % 5 != 4
    assert evaluate_model(model, ml100k_small, "valid")["ndcg@10"] == history[0]["valid_ndcg@10"] != untrained


def test_windows_per_user_draws_a_fresh_capped_subset_each_epoch(ml100k_small):
    """At most m windows per user per epoch, every user present, and other windows on other epochs."""
    from popsteer.models.allpos import _epoch_batches, _epoch_windows

    users = ml100k_small.train_window_users(10)
    inputs, targets = ml100k_small.train_windows(10)
    assert len(users) == len(inputs) and (np.diff(users) >= 0).all()
    gen = torch.Generator().manual_seed(0)
    seen = np.zeros(len(users), dtype=bool)
    for _ in range(100):
        chosen = _epoch_windows(users, 10, gen)
        per_user = np.bincount(users[chosen], minlength=users.max() + 1)
        assert np.array_equal(per_user, np.minimum(np.bincount(users), 10))
        seen[chosen] = True
    assert seen.all()  # over epochs every window is drawn
    every = torch.cat(_epoch_batches(targets, users, None, 256, gen)).numpy()  # no cap: every window once
    assert np.array_equal(np.sort(every), np.arange(len(users)))
    capped = torch.cat(_epoch_batches(targets, users, 10, 256, gen)).numpy()  # the capped subset, each window once
    assert len(np.unique(capped)) == len(capped)
    assert np.array_equal(np.bincount(users[capped], minlength=users.max() + 1), np.minimum(np.bincount(users), 10))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_fast_dropout_mask_is_an_unbiased_independent_bernoulli(device):
    """FastDropout's byte-drawn mask: keep rate 1 - p in every byte lane, neighbours independent,
    kept values scaled by 1 / (1 - p), identity in eval mode; p off the 1/256 grid uses uniforms."""
    from popsteer.models.dropout import FastDropout

    torch.manual_seed(0)
    x = torch.randn(1000, 1000, device=device) + 3.0  # no zeros, so a dropped element is exactly the zeros of y
    for p in (0.5, 0.25, 0.3):
        drop = FastDropout(p).train()
        y = drop(x)
        kept = y != 0
        keep, n = 1.0 - p, x.numel()
        tol = 5 * (keep * p / n) ** 0.5  # five standard deviations
        assert abs(kept.float().mean().item() - keep) < tol
        lanes = kept.flatten().view(-1, 8).float().mean(0)  # the 8 bytes of each random 64-bit word
        assert (lanes - keep).abs().max().item() < 5 * (keep * p / (n / 8)) ** 0.5
        flat = kept.flatten()
        for pairs in (flat.view(-1, 2), flat[1:-1].view(-1, 2)):  # disjoint neighbour pairs, both phases
            both = (pairs[:, 0] & pairs[:, 1]).float().mean().item()
            assert abs(both - keep * keep) < 5 * (keep * keep * (1 - keep * keep) / len(pairs)) ** 0.5
        assert torch.allclose(y[kept], x[kept] / keep)
        assert not torch.equal(kept, drop(x) != 0)  # a fresh mask every call
        assert torch.equal(drop.eval()(x), x)
    assert torch.equal(FastDropout(1.0).train()(x), torch.zeros_like(x))  # as nn.Dropout(1.0)
