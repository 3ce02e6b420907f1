"""The SAE's sparse training step (popsteer.sae.sparse_step) against autograd through the dense code,
and the native row kernels it runs on (popsteer.kernels.native.rows)."""

from __future__ import annotations

import pytest
import torch

from popsteer.kernels import native
from popsteer.kernels.native.rows import gather_dot, scatter_outer
from popsteer.sae import sparse_step
from popsteer.sae.model import SAEConfig, TopKSAE
from popsteer.sae.train import fit_sae

pytestmark = pytest.mark.skipif(not native.available(), reason="no C compiler: the sparse step needs the native kernels")


def _sae(d: int, k: int, scale: int, seed: int, shift: float) -> TopKSAE:
    """An SAE away from its init: random biases (shift moves b_enc down, so fewer latents are positive)."""
    sae = TopKSAE(d, SAEConfig(k=k, scale=scale, seed=seed))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(sae.n, generator=g) - shift)
        sae.b_dec.copy_(torch.randn(d, generator=g))
        sae.W_enc.add_(0.1 * torch.randn(sae.n, d, generator=g))
        sae.W_dec.add_(0.1 * torch.randn(sae.n, d, generator=g))
    return sae


@pytest.mark.parametrize(("dead_fraction", "shift", "k_aux"), [
    (0.0, 0.0, 32),    # nothing dead: no AuxK
    (0.05, 0.0, 32),   # fewer dead latents than k_aux
    (0.6, 0.0, 32),    # many dead: rows with more positive dead latents than k_aux are ranked
    (0.6, 2.5, 32),    # mostly negative pre-activations: rows with fewer than K positives, padded AuxK picks
    (0.3, 1.0, 5),     # a small k_aux
    (0.5, 50.0, 32),   # every pre-activation negative: no latent fires, AuxK decodes nothing (width 0)
])
def test_loss_and_gradients_equal_autograd(dead_fraction, shift, k_aux):
    sae = _sae(16, 8, 8, seed=3, shift=shift)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(300, 16, generator=g)
    dead = torch.rand(sae.n, generator=g) < dead_fraction
    loss, f, a, z = sae.loss(x, dead, k_aux)  # autograd through the dense code (decode="dense")
    loss.backward()
    want = {name: p.grad.clone() for name, p in sae.named_parameters()}
    for p in sae.parameters():
        p.grad = None
    got_loss, got_f, got_a, fired = sparse_step.loss_and_grads(sae, x, dead, k_aux)
    assert got_loss == pytest.approx(loss.item(), rel=1e-6) and got_f == pytest.approx(f.item(), rel=1e-6)
    assert got_a == pytest.approx(a.item(), rel=1e-5, abs=1e-9)
    assert torch.equal(fired, (z > 0).any(0))
    if dead_fraction > 0:
        assert a.item() > 0  # the AuxK terms were exercised
        positive_dead = ((sae.preact(x) > 0) & dead).sum(1)  # (B,) per row
        k_sel = min(k_aux, int(dead.sum()))
        if (dead_fraction, shift) == (0.6, 0.0):
            assert (positive_dead > k_sel).any()  # some rows were ranked
        if shift > 2:
            assert (positive_dead < k_sel).any()  # some rows were padded
    for name, p in sae.named_parameters():
        scale = want[name].abs().max().clamp_min(1e-12)
        assert (p.grad - want[name]).abs().max() / scale < 1e-5, name


def test_training_follows_the_autograd_loss_curve():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 4, generator=g) @ torch.randn(4, 16, generator=g) + 0.05 * torch.randn(3000, 16, generator=g)
    cfg = dict(k=4, scale=8, batch_size=256, max_epochs=6, min_epochs=6)
    _, dense = fit_sae(x[:2500], x[2500:], SAEConfig(decode="dense", **cfg))
    sae, sparse = fit_sae(x[:2500], x[2500:], SAEConfig(decode="sparse", **cfg))
    assert any(r["dead_fraction"] > 0 for r in dense[:-1])  # AuxK was active in some epoch
    for a, b in zip(dense, sparse):
        assert b["valid_fvu"] == pytest.approx(a["valid_fvu"], rel=1e-3)
        assert b["dead_fraction"] == pytest.approx(a["dead_fraction"], abs=2 / sae.n)
    assert sparse[-1]["valid_fvu"] < 0.5 * sparse[0]["valid_fvu"]


def test_row_kernels_equal_torch_and_do_not_depend_on_threads():
    g = torch.Generator().manual_seed(1)
    y, table = torch.randn(257, 19, generator=g), torch.randn(40, 19, generator=g)
    idx = torch.randint(0, 40, (257, 7), generator=g)
    w = torch.randn(257, 7, generator=g)
    assert torch.allclose(gather_dot(y, table, idx), torch.einsum("bd,bmd->bm", y, table[idx]), atol=1e-5)
    want = torch.zeros(40, 19).index_add_(0, idx.flatten(), (w[..., None] * y[:, None, :]).reshape(-1, 19))
    got = scatter_outer(y, w, idx, 40)
    assert torch.allclose(got, want, atol=1e-5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = scatter_outer(y, w, idx, 40), gather_dot(y, table, idx)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], got) and torch.equal(one[1], gather_dot(y, table, idx))
    with pytest.raises(ValueError, match="idx"):
        gather_dot(y, table, idx.int())
