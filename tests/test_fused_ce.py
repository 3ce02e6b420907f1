"""The fused, chunked linear cross-entropy equals ``F.cross_entropy(h @ W.T, t)`` in value and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from popsteer.models.fused_ce import linear_cross_entropy


def _case(P: int = 300, n: int = 257, d: int = 16, seed: int = 0, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(P, d, generator=g) * scale
    w = torch.randn(n, d, generator=g) * 0.3
    t = torch.randint(0, n, (P,), generator=g)
    return h, w, t


def _loss_and_grads(fn, h, w, bf16: bool = False, dtype=torch.float32, device: str = "cpu"):
    h, w = (x.to(device, dtype).clone().requires_grad_() for x in (h, w))
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        loss = fn(h, w)
    loss.backward()
    return loss.detach().double().cpu(), h.grad.double().cpu(), w.grad.double().cpu()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_fp32_matches_cross_entropy_over_uneven_chunks(device):
    h, w, t = _case()
    t = t.to(device)
    ref = _loss_and_grads(lambda a, b: F.cross_entropy(a @ b.T, t), h, w, device=device)
    for elements in (257, 7 * 257, 64 * 257, 300 * 257, 10**6):
        # 256-row chunks (a short last one) over item tiles of 1 and 7 items; 64-row chunks of all items
        # (a short last one); all rows and items at once
        got = _loss_and_grads(lambda a, b: linear_cross_entropy(a, b, t, chunk_elements=elements), h, w,
                              device=device)
        assert got[0].dtype == ref[0].dtype
        torch.testing.assert_close(got[0], ref[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got[1], ref[1], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(got[2], ref[2], rtol=1e-5, atol=1e-7)


def test_bf16_autocast_is_as_close_to_fp64_as_autocast_cross_entropy():
    """Under bf16 autocast the matmuls run in bf16 (as ``h @ W.T`` would) and the softmax in fp32."""
    h, w, t = _case(P=600, n=1000, d=32)
    truth = _loss_and_grads(lambda a, b: F.cross_entropy(a @ b.T, t), h, w, dtype=torch.float64)
    ref = _loss_and_grads(lambda a, b: F.cross_entropy(a @ b.T, t), h, w, bf16=True)
    fp32 = _loss_and_grads(lambda a, b: linear_cross_entropy(a, b, t), h, w)

    def err(x):
        return [float((x[i] - truth[i]).norm() / truth[i].norm()) for i in range(3)]

    assert max(err(fp32)) < 1e-5  # so the bf16 error below is the bf16 matmuls'
    ref_err = err(ref)
    for elements in (20 * 1000, 10**7):  # item tiles of 78; all items at once
        got_err = err(_loss_and_grads(lambda a, b: linear_cross_entropy(a, b, t, chunk_elements=elements), h, w,
                                      bf16=True))
        assert min(got_err[1:]) > 1e-4  # bf16 really was used
        for r, g in zip(ref_err, got_err):
            assert g <= 1.5 * r + 1e-6, (ref_err, got_err)


def test_underflowing_target_probability_keeps_the_exact_loss():
    """A target whose softmax probability underflows fp32 still gets ``logsumexp - logit``, not inf."""
    h, w, t = _case(P=50, n=64, d=8, scale=300.0)  # logit gaps of thousands
    ref = _loss_and_grads(lambda a, b: F.cross_entropy(a @ b.T, t), h, w)
    for elements in (640, 10**6):  # item tiles of 2; all items at once
        got = _loss_and_grads(lambda a, b: linear_cross_entropy(a, b, t, chunk_elements=elements), h, w)
        assert torch.isfinite(got[0]) and float(got[0]) > 100.0
        torch.testing.assert_close(got[0], ref[0], rtol=1e-6, atol=1e-4)
        for g, r in zip(got[1:], ref[1:]):  # fp32 logits of ~1e3 carry ~1e-4 absolute error into exp()
            torch.testing.assert_close(g, r, rtol=2e-4, atol=1e-6)


def test_no_grad_scores_only_and_grad_flows_into_a_shared_weight():
    h, w, t = _case(P=40, n=30, d=8)
    with torch.no_grad():
        value = linear_cross_entropy(h, w.requires_grad_(), t)
    assert not value.requires_grad
    torch.testing.assert_close(value, F.cross_entropy(h @ w.T, t).detach())
    # the same weight also used as an input embedding (as SASRec ties them): both paths add up
    ids = torch.randint(0, 30, (40,))
    w1 = w.detach().clone().requires_grad_()
    (F.embedding(ids, w1).sum() + 2.0 * F.cross_entropy(F.embedding(ids, w1) @ w1.T, t)).backward()
    w2 = w.detach().clone().requires_grad_()
    (F.embedding(ids, w2).sum() + 2.0 * linear_cross_entropy(F.embedding(ids, w2), w2, t, chunk_elements=90)).backward()
    torch.testing.assert_close(w2.grad, w1.grad, rtol=1e-5, atol=1e-7)
