"""The native top-k kernel (popsteer/native): built with the machine's C compiler, exact against a reference."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from popsteer.kernels import native
from popsteer.eval.evaluator import rank_topk

HAS_CC = any(shutil.which(c) for c in ("cc", "gcc", "clang")) or bool(os.environ.get("CC"))


def reference_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best first, equal values by lower column first (the kernel's documented order)."""
    s = scores.numpy()
    cols = np.broadcast_to(np.arange(s.shape[1]), s.shape)
    order = np.lexsort((cols, -s), axis=1)[:, :k]  # last key primary: value descending, then column
    return torch.from_numpy(np.take_along_axis(s, order, 1).copy()), torch.from_numpy(order.astype(np.int64))


@pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine: the torch fallback is tested instead")
def test_kernel_builds_here():
    assert native.available()


@pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine")
@pytest.mark.parametrize("cols,k", [(c, k) for c in (1, 10, 31, 32, 33, 64, 100, 3417) for k in (1, 10, 32, 33, 50)
                                     if k <= c])
def test_kernel_equals_reference(cols, k):
    """The kernel alone: best first, equal values by lower column first, NaN rows flagged."""
    scores = _awkward_rows(cols, seed=cols * 100 + k)
    v, i, nan = native.kernel_topk(scores, k)
    finite = ~torch.isnan(scores).any(1)
    rv, ri = reference_topk(scores[finite], k)
    assert torch.equal(v[finite], rv) and torch.equal(i[finite], ri)
    assert torch.equal(nan, ~finite)


@pytest.mark.parametrize("cols,k", [(c, k) for c in (2, 11, 32, 33, 100, 3417) for k in (1, 10, 32, 33, 50) if k < c])
def test_row_topk_is_torch_topk(cols, k):
    """What callers get: exactly torch.topk, ties (ranked by torch) and NaN (ranked first) included."""
    scores = _awkward_rows(cols, seed=cols * 7 + k)
    v, i = native.row_topk(scores, k)
    tv, ti = torch.topk(scores, k, dim=1)
    assert torch.equal(i, ti) and torch.allclose(v, tv, equal_nan=True)


def _awkward_rows(cols: int, seed: int) -> torch.Tensor:
    """(37, cols) normal scores as a view into a wider buffer, with rows that stress the kernel."""
    gen = torch.Generator().manual_seed(seed)
    wide = torch.randn(37, cols + 5, generator=gen)
    scores = wide[:, :cols]  # a row stride larger than the row
    scores[3] = -torch.inf  # nothing but -inf
    scores[4, : cols // 2] = -torch.inf  # fewer finite values than k on small rows
    scores[5] = torch.randint(0, 3, (cols,), generator=gen).float()  # heavy ties
    scores[6] = 1.0  # all equal
    scores[7] = torch.arange(cols).float()  # ascending: every column raises the threshold
    scores[8] = -torch.arange(cols).float()  # descending: the first k are the answer
    scores[9, cols // 3] = torch.nan  # one NaN
    scores[10, cols // 2] = scores[10].max()  # one tie at the top
    if cols > 1:
        scores[11, 1] = -0.0
        scores[11, 0] = 0.0  # +0 and -0 compare equal
    return scores


def test_row_topk_empty_and_other_inputs_fall_back():
    v, i = native.row_topk(torch.empty(0, 50), 10)
    assert v.shape == (0, 10) and i.shape == (0, 10)
    x = torch.randn(8, 40, dtype=torch.float64)  # not fp32: torch.topk
    assert torch.equal(native.row_topk(x, 5)[1], torch.topk(x, 5).indices)
    t = torch.randn(40, 8).T  # column stride != 1: torch.topk
    assert torch.equal(native.row_topk(t, 5)[1], torch.topk(t, 5).indices)
    with pytest.raises(ValueError):
        native.kernel_topk(torch.randn(4, 5), 6)
    with native.disabled():  # what benchmarks use to time the torch path in the same run
        assert not native.available()
        y = torch.randn(8, 40)
        assert torch.equal(native.row_topk(y, 5)[1], torch.topk(y, 5).indices)
    assert native.available() == HAS_CC


def test_rank_topk_ties_chunked_and_dense():
    """Items with identical embeddings tie on every user. Dense is torch.topk exactly; chunked keeps
    items of the same scores (which of two equal items may differ across chunks).

    Small integers, so every score is exact whatever order a matmul sums in (a chunk's matmul
    may round differently from the whole one's).
    """
    gen = torch.Generator().manual_seed(0)
    items = torch.randint(-3, 4, (300, 8), generator=gen).float()
    items[150:] = items[1:151].clone()  # every item from 150 on duplicates one below it
    reps = torch.randint(-3, 4, (70, 8), generator=gen).float()
    dense = rank_topk(reps, items, 10, batch_size=16)
    scores = reps @ items.T
    scores[:, 0] = -torch.inf
    assert torch.equal(dense, torch.topk(scores, 10).indices)
    for chunk in (7, 64, 149, 150, 299):
        chunked = rank_topk(reps, items, 10, batch_size=16, item_chunk=chunk)
        assert torch.equal(scores.gather(1, chunked), scores.gather(1, dense))


def _run(code: str, **env) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


PROBE = ("import logging, torch; logging.basicConfig(level=logging.INFO); from popsteer.kernels import native; "
         "torch.manual_seed(0); x = torch.randn(64, 500); "
         "print('available', native.available()); "
         "print('same', torch.equal(native.row_topk(x, 10)[1], torch.topk(x, 10).indices))")


def test_fallbacks_give_torch_results(tmp_path):
    off = _run(PROBE, POPSTEER_NATIVE="0")
    assert "available False" in off and "same True" in off
    no_cc = _run(PROBE, CC=str(tmp_path / "no-such-compiler"), POPSTEER_NATIVE_CACHE=str(tmp_path / "cache"))
    assert "available False" in no_cc and "same True" in no_cc
    assert "native top-k unavailable" in no_cc  # one warning says why
    assert not list((tmp_path / "cache").glob("*"))  # and nothing half-built is left


@pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine")
def test_build_is_cached(tmp_path):
    cache = tmp_path / "cache"
    first = _run(PROBE, POPSTEER_NATIVE_CACHE=str(cache))
    assert "available True" in first and "same True" in first and "built" in first
    (lib,) = cache.glob("kernels-*.so")
    stamp = lib.stat().st_mtime_ns
    second = _run(PROBE, POPSTEER_NATIVE_CACHE=str(cache))
    assert "available True" in second and "built" not in second
    assert lib.stat().st_mtime_ns == stamp and [p.name for p in cache.iterdir()] == [lib.name]


@pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine")
def test_library_others_can_write_is_not_loaded(tmp_path):
    cache = tmp_path / "cache"
    assert "available True" in _run(PROBE, POPSTEER_NATIVE_CACHE=str(cache))
    (lib,) = cache.glob("kernels-*.so")
    lib.chmod(0o666)  # anyone could have replaced it
    out = _run(PROBE, POPSTEER_NATIVE_CACHE=str(cache))
    assert "available False" in out and "writable by others" in out and "same True" in out


@pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine")
@pytest.mark.parametrize("n,k", [(8, 3), (32, 32), (33, 7), (64, 32), (100, 9), (4096, 32), (4096, 33), (300, 70)])
def test_sae_topk_native_equals_torch_path(n, k):
    """The SAE's TopK(ReLU(h)) on CPU through the kernel (relu=True) == the torch-ops path:
    indices, values and gradients, on rows with ties, zeros, -0.0, NaN and few positives."""
    from popsteer.sae.topk import _eager_topk_relu_sparse, _torch_topk_relu_sparse

    gen = torch.Generator().manual_seed(n * 10 + k)
    h = torch.randn(40, n, generator=gen)
    h[1] = torch.randint(-2, 3, (n,), generator=gen).float() * 0.5  # many ties, zeros among them
    h[2] = 0.75  # all tied
    h[3] = -torch.rand(n, generator=gen) - 0.1  # nothing positive: zeros, lowest columns first
    h[4] = -1.0
    h[4, ::5] = torch.rand(h[4, ::5].shape, generator=gen)  # fewer positives than k
    h[5] = -0.0
    h[5, n // 2] = 2.0
    h[6, ::3] = torch.nan  # NaN counts as 0
    upstream = torch.randn(40, k, generator=gen)
    out = []
    for fn in (_eager_topk_relu_sparse, _torch_topk_relu_sparse):
        leaf = h.clone().requires_grad_(True)
        values, indices = fn(leaf, k)
        (values * upstream).sum().backward()
        out.append((values.detach(), indices, leaf.grad))
    (v1, i1, g1), (v2, i2, g2) = out
    assert torch.equal(i1, i2) and torch.equal(v1, v2) and torch.equal(g1, g2)


def test_importing_popsteer_sets_a_passive_omp_wait_unless_set():
    """popsteer/__init__.py: torch's OpenMP threads sleep at barriers (bench/omp_wait.py), unless the user chose."""
    code = "import os, popsteer; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"
