"""GPU check of the Triton top-k activation: parity and timing against torch, plus SAE
training throughput (eager dense decode vs sparse decode vs Triton). One call, a few minutes.

    python bench/gpu_kernels.py [--out results_gpu.json]

Needs only torch + triton (no RecBole): runs on a bare GPU machine from the repo root.
Baseline ("torch"): ``torch.topk(relu(h), k)`` + ``scatter`` into a dense code + dense
decode ``z @ W_dec``. PopSteer: the Triton kernel + sparse decode (embedding_bag).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from popsteer.kernels import triton_topk as kernels  # noqa: E402
from popsteer.sae import topk as popsteer_topk  # noqa: E402
from popsteer.sae.model import SAEConfig, TopKSAE  # noqa: E402


def cuda_time(fn, reps: int = 20) -> float:
    """Median milliseconds of fn() over reps, after warm-up."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def torch_path(h, k, W_dec, b_dec):
    v, i = torch.topk(torch.relu(h), k, dim=1)  # (N, k)
    z = torch.zeros_like(h).scatter_(1, i, v)  # (N, n)
    return z @ W_dec + b_dec  # (N, d)


def triton_path(h, k, W_dec, b_dec, num_warps=None):
    v, i = kernels.triton_topk_relu(h, k, num_warps)  # (N, k)
    return F.embedding_bag(i, W_dec, per_sample_weights=v, mode="sum") + b_dec  # (N, d)


def kernel_rows(N: int, n: int, d: int, k: int) -> list[dict]:
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        g = torch.Generator(device="cuda").manual_seed(0)
        h = torch.randn(N, n, device="cuda", generator=g).to(dtype)  # (N, n)
        W = torch.randn(n, d, device="cuda", generator=g).to(dtype)
        b = torch.zeros(d, device="cuda", dtype=dtype)
        v_t, i_t = kernels.triton_topk_relu(h, k)
        v_e, i_e = torch.topk(torch.relu(h), k, dim=1)
        same_values = bool(torch.equal(v_t, v_e))
        same_sets = bool(torch.equal(i_t.sort(1).values, i_e.sort(1).values))
        _, i_ref = popsteer_topk._eager_topk_relu_sparse(h, k)  # PopSteer's tie order: lower column first
        same_order = bool(torch.equal(i_t, i_ref))
        x_t, x_e = triton_path(h, k, W, b), torch_path(h, k, W, b)
        rel = float(((x_t.float() - x_e.float()).norm() / x_e.float().norm()))
        ms_topk_torch = cuda_time(lambda: torch.topk(torch.relu(h), k, dim=1))
        ms_topk_triton = cuda_time(lambda: kernels.triton_topk_relu(h, k))
        ms_torch = cuda_time(lambda: torch_path(h, k, W, b))
        ms_triton = cuda_time(lambda: triton_path(h, k, W, b))
        by_warps = {}
        for w in (2, 4, 8, 16):  # launch width: the default is 4
            v_w, i_w = kernels.triton_topk_relu(h, k, w)
            by_warps[w] = {"exact": bool(torch.equal(v_w, v_e) and torch.equal(i_w, i_t)),
                           "topk_ms": cuda_time(lambda: kernels.triton_topk_relu(h, k, w))}
        rows.append({"dtype": str(dtype).replace("torch.", ""), "shape": [N, n], "k": k,
                     "by_num_warps": by_warps,
                     "values_equal": same_values, "index_sets_equal": same_sets, "indices_equal_eager": same_order, "decode_rel_err": rel,
                     "topk_ms_torch": ms_topk_torch, "topk_ms_triton": ms_topk_triton,
                     "act_decode_ms_torch": ms_torch, "act_decode_ms_triton": ms_triton,
                     "speedup_topk": ms_topk_torch / ms_topk_triton, "speedup_act_decode": ms_torch / ms_triton})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def sae_throughput(N: int = 500_000, d: int = 64, epochs: int = 2) -> list[dict]:
    """Samples/s of SAE training steps (forward + loss + backward + Adam), K=32, s=64."""
    out = []
    x = torch.randn(N, d, device="cuda")
    for mode, flag, decode in (("eager-dense", "0", "dense"), ("eager-sparse", "0", "sparse"),
                               ("triton-sparse", "1", "sparse")):
        os.environ["POPSTEER_TRITON"] = flag
        cfg = SAEConfig(k=32, scale=64, decode=decode)
        sae = TopKSAE(d, cfg).cuda()
        opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
        dead = torch.zeros(sae.W_enc.shape[0], dtype=torch.bool, device="cuda")
        losses = []
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(epochs):
            for s in range(0, N, 4096):
                loss = sae.loss(x[s : s + 4096], dead, 128)[0]
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
        torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        out.append({"mode": mode, "samples_per_s": N * epochs / secs, "final_loss": losses[-1]})
        print(json.dumps(out[-1]), flush=True)
    os.environ.pop("POPSTEER_TRITON", None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_results.json"))
    a = ap.parse_args()
    if not torch.cuda.is_available() or not kernels.TRITON_AVAILABLE:
        sys.exit("error: needs a CUDA GPU and triton")
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "kernels": kernel_rows(65536, 4096, 64, 32), "sae_training": sae_throughput()}
    Path(a.out).write_text(json.dumps(res, indent=2))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
