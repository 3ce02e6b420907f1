"""TopK SAE: shapes, init, decode paths, FVU, AuxK, config checks, and a short training run."""

from __future__ import annotations

import logging

import pytest
import torch

import popsteer.sae.train as sae_train
from popsteer.errors import PopSteerError
from popsteer.sae.model import SAEConfig, TopKSAE, fvu
from popsteer.sae.train import sae_report, fit_sae

HISTORY_KEYS = {"epoch", "train_loss", "train_fvu", "valid_fvu", "valid_auxk", "dead_fraction", "lr", "seconds"}


def _low_rank(n_rows: int, d: int = 16, rank: int = 4, seed: int = 0) -> torch.Tensor:
    """(n_rows, d) points near a rank-`rank` subspace, off the origin."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_rows, rank, generator=g) @ torch.randn(rank, d, generator=g)
    return x + 0.05 * torch.randn(n_rows, d, generator=g) + 1.0


def test_shapes_and_parameter_names():
    sae = TopKSAE(8, SAEConfig(k=4, scale=4))
    shapes = {name: tuple(p.shape) for name, p in sae.named_parameters()}
    assert shapes == {"W_enc": (32, 8), "b_enc": (32,), "W_dec": (32, 8), "b_dec": (8,)}
    x = torch.randn(10, 8)
    x_hat, h, z = sae(x)
    assert x_hat.shape == (10, 8) and h.shape == (10, 32) and z.shape == (10, 32)
    assert torch.equal(h, sae.preact(x)) and torch.equal(z, sae.encode(h))
    assert torch.allclose(x_hat, sae.decode(z))


def test_init():
    sae = TopKSAE(8, SAEConfig(k=4, scale=4, seed=1))
    assert torch.equal(sae.W_dec, sae.W_enc)  # W_dec (n, d) = W_enc^T as maps
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(32), atol=1e-6)
    assert not sae.b_enc.any() and not sae.b_dec.any()
    assert torch.equal(TopKSAE(8, SAEConfig(k=4, scale=4, seed=1)).W_enc, sae.W_enc)
    assert not torch.equal(TopKSAE(8, SAEConfig(k=4, scale=4, seed=2)).W_enc, sae.W_enc)


def test_sparse_decode_equals_dense():
    cfg = SAEConfig(k=5, scale=4)
    sae = TopKSAE(8, cfg)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.W_dec.normal_()
    x = torch.randn(16, 8)
    h = sae.preact(x)
    values, indices = torch.relu(h).topk(5, dim=1)
    z = torch.zeros_like(h).scatter(1, indices, values)
    assert torch.allclose(sae.decode_sparse(values, indices), sae.decode(z), atol=1e-5)
    sparse = TopKSAE(8, SAEConfig(k=5, scale=4, decode="sparse"))
    sparse.load_state_dict(sae.state_dict())
    assert torch.allclose(sparse(x)[0], sae(x)[0], atol=1e-5)


def test_fvu_perfect_and_mean():
    x = torch.randn(50, 6)
    assert fvu(x, x).item() == 0.0
    assert fvu(x, x.mean(0).expand_as(x)).item() == pytest.approx(1.0)


def test_exactly_k_nonzeros():
    sae = TopKSAE(4, SAEConfig(k=3, scale=4))
    h = torch.rand(7, 16) + 0.1  # every entry positive
    z = sae.encode(h)
    assert ((z != 0).sum(1) == 3).all()
    assert torch.equal(z.max(1).values, h.max(1).values)


def test_auxk():
    sae = TopKSAE(4, SAEConfig(k=2, scale=4))
    x = torch.randn(9, 4)
    x_hat, h, _ = sae(x)
    none_dead = torch.zeros(16, dtype=torch.bool)
    assert sae.auxk_loss(x, x_hat, h, none_dead, 8).item() == 0.0
    dead = torch.zeros(16, dtype=torch.bool)
    dead[:4] = True  # 4 dead, k_aux 8: scale 1/2, all 4 decoded
    e_hat = torch.relu(h[:, :4]) @ sae.W_dec[:4]  # (9, 4), no b_dec
    want = 0.5 * (e_hat - (x - x_hat)).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert torch.allclose(sae.auxk_loss(x, x_hat, h, dead, 8), want, atol=1e-6)


def test_loss_gradients_reach_all_parameters():
    sae = TopKSAE(4, SAEConfig(k=2, scale=4))
    with torch.no_grad():
        sae.b_dec.fill_(0.1)
    dead = torch.ones(16, dtype=torch.bool)
    loss, f, a, _ = sae.loss(torch.randn(9, 4), dead, 8)
    assert torch.allclose(loss, f + a / 2)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in sae.parameters())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "k must be >= 1"),
        ({"scale": 0}, "scale must be >= 1"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"lr_factor": 1.0}, "lr_factor"),
        ({"min_epochs": 10, "max_epochs": 5}, "min_epochs"),
        ({"aux_k": 0}, "aux_k"),
        ({"decode": "csr"}, "decode"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(PopSteerError, match=match):
        SAEConfig(**kwargs)


def test_k_larger_than_hidden_and_bad_data():
    with pytest.raises(PopSteerError, match="exceeds the hidden width"):
        TopKSAE(2, SAEConfig(k=32, scale=4))
    with pytest.raises(PopSteerError, match="d=16 but x_valid has d=8"):
        fit_sae(torch.randn(20, 16), torch.randn(5, 8), SAEConfig(k=2, scale=2))
    assert SAEConfig(scale=2).resolved_aux_k(16) == 32 and SAEConfig(k=2, scale=1, aux_k=64).resolved_aux_k(16) == 16


def test_training_on_low_rank_data():
    x = _low_rank(2500)
    x_train, x_valid = x[:2000], x[2000:]
    cfg = SAEConfig(k=8, scale=4, batch_size=256, max_epochs=30, min_epochs=5, patience=5)
    seen = []
    sae, history = fit_sae(x_train, x_valid, cfg, on_epoch=lambda epoch, record: seen.append(epoch))
    assert seen == [r["epoch"] for r in history] and seen[0] == 1
    assert HISTORY_KEYS <= set(history[0])
    assert history[0]["valid_auxk"] >= 0 and history[0]["train_loss"] == history[0]["train_fvu"]  # nothing dead yet
    best = min(history, key=lambda r: r["valid_fvu"] + r["valid_auxk"] / 32)
    assert best["valid_fvu"] < 0.2
    report = sae_report(sae, x_valid)
    assert report["fvu"] == pytest.approx(best["valid_fvu"], rel=1e-4)  # best weights kept
    assert report["cosine"] > 0.9 and 0.0 <= report["dead_fraction"] < 1.0


AUXK_WEIGHT = 1 / 32
"""The reference's validation loss: FVU + AuxK / 32 (docs/METHOD.md §2); early stopping and the LR schedule use it."""


def test_validation_loss_weighs_auxk_by_one_32nd():
    x = _low_rank(600)
    cfg = SAEConfig(k=2, scale=16, batch_size=128, max_epochs=4, min_epochs=4)  # most latents never fire: dead
    _, history = fit_sae(x[:500], x[500:], cfg)
    assert any(r["valid_auxk"] > 0.01 for r in history)  # the AuxK term counts
    for r in history:
        assert r["valid_loss"] == r["valid_fvu"] + r["valid_auxk"] * AUXK_WEIGHT, r
    later = [r for r in history if r["valid_auxk"] > 0.01]
    assert any(r["valid_loss"] != pytest.approx(r["valid_fvu"] + r["valid_auxk"] / 16, rel=1e-6) for r in later)


def test_training_is_deterministic():
    x = _low_rank(300, d=8)
    cfg = SAEConfig(k=4, scale=2, batch_size=64, max_epochs=3, min_epochs=1)
    a, _ = fit_sae(x[:200], x[200:], cfg)
    b, _ = fit_sae(x[:200], x[200:], cfg)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


class Killed(Exception):
    pass


def test_a_killed_training_continues_from_its_state_bit_for_bit(tmp_path, caplog):
    """Killed after epoch 5 (its state saved after every epoch), then run again: the same weights and
    history as one uninterrupted run; the state of another config is ignored."""
    caplog.set_level(logging.INFO, logger="popsteer")
    x = _low_rank(300, d=8)
    cfg = SAEConfig(k=4, scale=2, batch_size=32, max_epochs=9, min_epochs=9)
    torch.manual_seed(0)
    whole, whole_history = fit_sae(x[:200], x[200:], cfg)

    def kill_at_6(epoch: int, _record: dict) -> None:
        if epoch == 6:
            raise Killed

    state = tmp_path / "partial" / "sae.safetensors"
    torch.manual_seed(0)
    with pytest.raises(Killed):
        fit_sae(x[:200], x[200:], cfg, kill_at_6, state_path=state, save_every_s=0.0)
    assert state.exists() and not list(state.parent.glob("*.tmp"))
    torch.manual_seed(1)  # another init: the state's weights replace it
    epochs = []
    resumed, history = fit_sae(x[:200], x[200:], cfg, lambda e, _: epochs.append(e), state_path=state)
    assert epochs == [6, 7, 8, 9] and "continuing after epoch 5" in caplog.text
    assert all(torch.equal(p, q) for p, q in zip(whole.parameters(), resumed.parameters()))
    drop = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert drop(history) == drop(whole_history)
    other, other_history = fit_sae(x[:200], x[200:], SAEConfig(k=4, scale=2, batch_size=32, max_epochs=2,
                                                                min_epochs=1), state_path=state)
    assert len(other_history) == 2 and "written for another config or input" in caplog.text


@pytest.mark.parametrize("min_epochs, stops_at", [(1, 3), (5, 5)])
def test_early_stopping_waits_for_min_epochs(monkeypatch, min_epochs, stops_at):
    monkeypatch.setattr(sae_train, "evaluate_losses", lambda *args, **kwargs: (0.5, 0.0))  # never improves
    x = _low_rank(100, d=4)
    cfg = SAEConfig(k=2, scale=2, batch_size=50, max_epochs=20, min_epochs=min_epochs, patience=2)
    _, history = fit_sae(x[:80], x[80:], cfg)
    assert len(history) == stops_at


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_on_cuda_triton_matches_eager(monkeypatch):
    x = _low_rank(3000, d=64).cuda()
    cfg = SAEConfig(k=32, scale=64, batch_size=1024, max_epochs=6, min_epochs=1)
    monkeypatch.setenv("POPSTEER_TRITON", "1")
    _, hist_t = fit_sae(x[:2500], x[2500:], cfg)
    monkeypatch.setenv("POPSTEER_TRITON", "0")
    _, hist_e = fit_sae(x[:2500], x[2500:], cfg)
    for triton_record, eager_record in zip(hist_t, hist_e, strict=True):
        assert triton_record["valid_fvu"] == pytest.approx(eager_record["valid_fvu"], rel=1e-2)
        assert triton_record["dead_fraction"] == pytest.approx(eager_record["dead_fraction"], abs=0.01)
    assert hist_t[-1]["valid_fvu"] < 0.5 * hist_t[0]["valid_fvu"]


def test_discarding_a_state_removes_the_temp_files_of_killed_writers(tmp_path):
    from popsteer.sae.resume import discard_state

    state = tmp_path / "SASRec_SAE-0123.safetensors"
    state.write_bytes(b"state")
    leftover = tmp_path / f".{state.name}.k2j4x9.tmp"  # what atomic_path leaves when its writer is SIGKILLed
    leftover.write_bytes(b"half")
    other = tmp_path / ".SASRec_SAE-4567.safetensors.a1b2c3.tmp"  # another run's, still writing
    other.write_bytes(b"other")
    discard_state(state)
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name]
    discard_state(state)  # nothing left to remove is fine
