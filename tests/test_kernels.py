"""Triton top-k kernel == eager torch (under TRITON_INTERPRET=1 in a subprocess), and the eager path.

Run as a script (what the subprocess test does) with TRITON_INTERPRET=1 and
POPSTEER_TRITON=1, this file compares the kernel with eager torch on tiny shapes and exits
non-zero listing the mismatches. The interpreter needs the variable before the kernel is
decorated, hence the fresh process; it does not leak into the other tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from popsteer.kernels import triton_topk as kernels
from popsteer.sae.topk import _eager_topk_relu_sparse, topk_relu, topk_relu_sparse

# The interpreter is slow (about 0.1 s per row of width 100): shapes stay tiny. Every k runs
# in float32; the half types run the first two of each width.
WIDTHS_AND_KS = {1: (1,), 8: (1, 3, 8), 16: (2, 5), 32: (1, 7, 32), 48: (3, 16), 100: (1, 9)}
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _inputs(n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """(6, n): random rows, a coarse-grid row (many ties), all-equal, all-negative, few positives, -0.0."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(6, n, generator=g)  # (6, n)
    h[1] = torch.randint(-2, 3, (n,), generator=g).float() * 0.5  # many ties
    h[2] = 0.75  # all tied
    h[3] = -torch.rand(n, generator=g) - 0.1  # nothing positive: zeros, lowest columns first
    h[4] = -1.0
    h[4, ::5] = torch.rand(h[4, ::5].shape, generator=g)  # fewer positives than some k
    h[5] = -0.0
    h[5, n // 2] = 2.0
    return h.to(dtype)


def _interpreter_checks() -> list[str]:
    """Every kernel-vs-eager comparison; returns the failures (empty when all match)."""
    failures: list[str] = []
    calls = []
    real_launcher = kernels.triton_topk_relu

    def counting(h, k):
        calls.append(k)
        return real_launcher(h, k)

    kernels.triton_topk_relu = counting  # TopKReLU looks the launcher up at call time
    for n, ks in WIDTHS_AND_KS.items():
        for dtype in DTYPES:
            h = _inputs(n, dtype, seed=n)
            for k in ks if dtype == torch.float32 else ks[:2]:
                v, i = real_launcher(h, k)
                ve, ie = _eager_topk_relu_sparse(h, k)
                if not (torch.equal(i, ie) and torch.equal(v, ve) and v.dtype == h.dtype):
                    failures.append(f"forward n={n} k={k} {dtype}: kernel {i.tolist()} vs eager {ie.tolist()}")
            k = ks[0]
            z = topk_relu(h, k)  # the dispatcher, forced onto Triton by POPSTEER_TRITON=1
            ve, ie = _eager_topk_relu_sparse(h, k)
            if not torch.equal(z, torch.zeros_like(h).scatter(1, ie, ve)):
                failures.append(f"topk_relu n={n} k={k} {dtype}: dense code differs")
    if not calls:
        failures.append("topk_relu never reached the Triton launcher")
    failures += _backward_checks()
    failures += _noncontiguous_check()
    return failures


def _backward_checks() -> list[str]:
    failures = []
    for n, k in ((8, 3), (48, 16), (100, 9)):
        h = _inputs(n, torch.float32, seed=7 * n)
        upstream = torch.randn(h.shape[0], k, generator=torch.Generator().manual_seed(n))  # (6, k)
        grads = []
        for fn in (kernels.TopKReLU.apply, _eager_topk_relu_sparse):
            leaf = h.clone().requires_grad_(True)
            values, _ = fn(leaf, k)
            (values * upstream).sum().backward()
            grads.append(leaf.grad)
        if not torch.equal(grads[0], grads[1]):
            failures.append(f"backward n={n} k={k}: max diff {(grads[0] - grads[1]).abs().max().item()}")
    return failures


def _noncontiguous_check() -> list[str]:
    h = _inputs(32, torch.float32, seed=3).t().contiguous().t()  # (6, 32) column-major view
    v, i = topk_relu_sparse(h, 5)
    ve, ie = _eager_topk_relu_sparse(h.contiguous(), 5)
    return [] if torch.equal(v, ve) and torch.equal(i, ie) else ["non-contiguous input differs"]


def test_kernel_matches_eager_under_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "POPSTEER_TRITON": "1"}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())], env=env, cwd=root, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "all kernel checks passed" in proc.stdout


def test_launcher_rejects_bad_input():
    h = torch.randn(4, 16)
    with pytest.raises(ValueError, match="2-D"):
        kernels.triton_topk_relu(h[0], 2)
    with pytest.raises(TypeError, match="float32"):
        kernels.triton_topk_relu(h.double(), 2)
    with pytest.raises(ValueError, match="contiguous"):
        kernels.triton_topk_relu(h.t(), 2)
    for k in (0, 17):
        with pytest.raises(ValueError, match="k must be"):
            kernels.triton_topk_relu(h, k)


def test_eager_ties_lower_index_wins_and_order():
    h = torch.tensor([[0.5, 2.0, 0.5, 2.0, -1.0, 0.5], [-1.0, -2.0, -0.0, -3.0, -1.0, -1.0]])
    values, indices = topk_relu_sparse(h, 4)
    assert indices.tolist() == [[1, 3, 0, 2], [0, 1, 2, 3]]
    assert values.tolist() == [[2.0, 2.0, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]]
    assert indices.dtype == torch.int64


def test_eager_dense_code_and_gradient():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(5, 12, generator=g)
    h[0] = -1.0  # no positives: kept zeros get no gradient
    h.requires_grad_(True)
    z = topk_relu(h, 3)  # (5, 12)
    assert ((z != 0).sum(1) == torch.tensor([0, 3, 3, 3, 3])).all()
    ref = torch.relu(h.detach()).topk(3, dim=1)
    assert torch.equal(z.detach().gather(1, ref.indices), ref.values)
    z.sum().backward()
    assert torch.equal(h.grad, (z.detach() > 0).float())


def test_env_switch(monkeypatch):
    h = torch.randn(3, 8)
    monkeypatch.setenv("POPSTEER_TRITON", "0")
    values, indices = _eager_topk_relu_sparse(h, 2)
    assert torch.equal(topk_relu(h, 2), torch.zeros_like(h).scatter(1, indices, values))
    monkeypatch.setenv("POPSTEER_TRITON", "maybe")
    with pytest.raises(ValueError, match="POPSTEER_TRITON"):
        topk_relu(h, 2)


needs_cuda = pytest.mark.skipif(not (torch.cuda.is_available() and kernels.TRITON_AVAILABLE), reason="needs CUDA and triton")


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, k", [(4096, 32), (4096, 128), (1000, 7), (64, 64), (100, 1), (1, 1)])
def test_kernel_matches_eager_on_cuda(dtype, n, k):
    g = torch.Generator(device="cuda").manual_seed(n + k)
    h = torch.randn(300, n, device="cuda", generator=g).to(dtype)  # (300, n)
    h[::3] = (h[::3] * 2).round() / 2  # many ties
    h[1] = -1.0
    v, i = kernels.triton_topk_relu(h, k)
    ve, ie = _eager_topk_relu_sparse(h, k)
    assert torch.equal(i, ie) and torch.equal(v, ve)
    leaf = h.float().requires_grad_(True)
    upstream = torch.randn(300, k, device="cuda", generator=g)
    grads = []
    for fn in (kernels.TopKReLU.apply, _eager_topk_relu_sparse):
        leaf.grad = None
        (fn(leaf, k)[0] * upstream).sum().backward()
        grads.append(leaf.grad)
    assert torch.equal(grads[0], grads[1])


@needs_cuda
def test_dispatch_uses_triton_on_cuda(monkeypatch):
    monkeypatch.delenv("POPSTEER_TRITON", raising=False)
    calls = []
    real = kernels.triton_topk_relu
    monkeypatch.setattr(kernels, "triton_topk_relu", lambda h, k: calls.append(k) or real(h, k))
    h = torch.randn(8, 256, device="cuda")
    z = topk_relu(h, 16)
    assert calls == [16] and ((z > 0).sum(1) == 16).all()


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("run with TRITON_INTERPRET=1 POPSTEER_TRITON=1")
    problems = _interpreter_checks()
    for line in problems:
        print("FAIL", line)
    if problems:
        sys.exit(1)
    print("all kernel checks passed")
