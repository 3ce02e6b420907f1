"""SAE training throughput on ML-1M representations: dense vs sparse decode, native vs torch TopK (CPU), same loss curve.

Both variants start from the same initialisation and see the same batches; the benchmark
times ``steps`` optimiser steps each (loss, backward, Adam) and asserts that their loss
curves agree (they differ only by float summation order). Triton is timed on the GPU
machine by ``gpu_kernels.py`` (on CPU it only runs in the interpreter).

    .venv/bin/python bench/sae_throughput.py -p saved/SASRec-...-ml-1m.safetensors --data-dir DIR
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record  # noqa: E402

from popsteer.data import load_dataset  # noqa: E402
from popsteer.kernels import native  # noqa: E402
from popsteer.util import checkpoint  # noqa: E402
from popsteer.models.encode import encode_users  # noqa: E402
from popsteer.models.io import load_recommender  # noqa: E402
from popsteer.sae.model import SAEConfig, TopKSAE  # noqa: E402


def representations(path: str, data_dir: str) -> torch.Tensor:
    """User representations at the train, valid and test cut points, (3U, d)."""
    meta = checkpoint.read_meta(path)
    data = load_dataset(meta["dataset"], data_dir, max_len=meta["sasrec"]["max_len"])
    model, _ = load_recommender(path, data)
    xs = []
    for split in ("train", "valid", "test"):
        seq, ln, _ = data.split(split) if split != "train" else _train_cut(data)
        xs.append(encode_users(model, seq, ln))
    return torch.cat(xs)


def _train_cut(data):
    """Each user's history before its validation item minus one more item (a training prefix)."""
    seq, ln, _ = data.split("valid")
    seq = seq.copy()
    ln = np.maximum(ln - 1, 1)
    seq[np.arange(len(seq)), ln] = 0
    return seq, ln, None


def run(x: torch.Tensor, decode: str, steps: int, batch: int, seed: int = 0) -> tuple[float, list[float]]:
    sae = TopKSAE(x.shape[1], SAEConfig(k=32, scale=64, decode=decode, seed=seed))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    dead = torch.zeros(sae.n, dtype=torch.bool)
    gen = torch.Generator().manual_seed(seed)
    batches = [torch.randint(0, x.shape[0], (batch,), generator=gen) for _ in range(steps + 2)]
    losses = []
    for i, idx in enumerate(batches):
        if i == 2:
            t0 = time.perf_counter()  # two warm-up steps
        loss, *_ = sae.loss(x[idx], dead, 2 * x.shape[1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return steps * batch / (time.perf_counter() - t0), losses


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-p", "--pretrained_path", required=True, help="an ML-1M SASRec checkpoint")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=4096)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    x = representations(a.pretrained_path, a.data_dir)
    rates, curves = {}, {}
    for decode in ("dense", "sparse"):
        torch.manual_seed(0)
        rates[decode], curves[decode] = run(x, decode, a.steps, a.batch)
    with native.disabled():  # the same, with TopK(ReLU) from torch ops instead of the native kernel
        torch.manual_seed(0)
        rates["sparse, torch TopK"], curves["sparse, torch TopK"] = run(x, "sparse", a.steps, a.batch)
    gap = max(float(np.max(np.abs(np.array(curves["dense"]) - np.array(c)))) for c in curves.values())
    print(f"{len(x)} rows; " + ", ".join(f"{k} {v:,.0f} samples/s" for k, v in rates.items())
          + f"; max |loss diff| over {len(curves['dense'])} steps {gap:.2e}")
    assert gap < 1e-3, gap
    cmd = f".venv/bin/python bench/sae_throughput.py -p {Path(a.pretrained_path).name} --data-dir DIR"
    record("sae_train_samples_per_s_cpu", round(rates["sparse"]), "samples/s", "report (dense vs sparse decode)", None,
           cmd, f"ML-1M user representations ({len(x)} rows, d={x.shape[1]}), K=32, s=64, batch {a.batch}, "
           f"{a.steps} Adam steps, TopK(ReLU) by the native kernel: dense decode {rates['dense']:,.0f}/s, sparse decode "
           f"{rates['sparse']:,.0f}/s ({rates['sparse'] / rates['dense']:.2f}x); sparse decode with torch's TopK "
           f"{rates['sparse, torch TopK']:,.0f}/s (native {rates['sparse'] / rates['sparse, torch TopK']:.2f}x); "
           f"loss curves agree to {gap:.1e}")


if __name__ == "__main__":
    main()
