"""Step time of all-position SASRec training on ML-1M: fp32 vs bf16 autocast, and dropout masks
drawn from uniform floats vs from random bytes (``FastDropout``), same machine, same run.

    .venv/bin/python bench/sasrec_step.py [--data-dir DIR] [--steps 30]

Same model, windows (stride 25) and batches of 2,048 targets for every variant; each variant
runs its steps twice, interleaved with the others, and keeps the faster pass.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record  # noqa: E402
from shared_data import ml1m_data_dir  # noqa: E402

from popsteer.config import SASRecConfig  # noqa: E402
from popsteer.data import load_dataset  # noqa: E402
from popsteer.recbole_adapter import build_sasrec  # noqa: E402
from popsteer.recommender import FastDropout, _window_batches, allpos_loss, use_fast_dropout  # noqa: E402


class UniformMaskDropout(FastDropout):
    """The previous mask: ``uniform < keep`` for every element."""

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rand_like(x) < 1.0 - self.p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--steps", type=int, default=30)
    a = ap.parse_args()
    torch.set_num_threads(2)
    data = load_dataset("ml-1m", a.data_dir or ml1m_data_dir())
    model = use_fast_dropout(build_sasrec(data.n_items, SASRecConfig())).train()
    inputs, targets = (torch.as_tensor(t) for t in data.train_windows(25))
    batches = _window_batches(targets.numpy(), 2048, torch.Generator().manual_seed(0))[: a.steps + 3]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def seconds_per_step(bf16: bool, masks: type) -> float:
        use_fast_dropout(model, masks)
        for i, idx in enumerate(batches):
            if i == 3:  # after 3 warm-up steps
                t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = allpos_loss(model, inputs[idx], targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (time.perf_counter() - t0) / (len(batches) - 3)

    variants = {"fp32, uniform masks": (False, UniformMaskDropout), "fp32, byte masks": (False, FastDropout),
                "bf16, uniform masks": (True, UniformMaskDropout), "bf16, byte masks": (True, FastDropout)}
    best = {name: seconds_per_step(*v) for name, v in variants.items()}
    for name, v in variants.items():  # second, interleaved pass
        best[name] = min(best[name], seconds_per_step(*v))
    for name, s in best.items():
        print(f"{name:20s} {s * 1e3:6.1f} ms/step", flush=True)
    base = best["fp32, uniform masks"]
    note = "; ".join(f"{k} {v * 1e3:.1f} ms" for k, v in best.items()) + (
        f" per step of 2,048 targets (ML-1M, stride 25, best of 2 interleaved passes of {a.steps} steps); "
        f"byte masks alone {best['fp32, uniform masks'] / best['fp32, byte masks']:.2f}x, "
        f"bf16 alone {best['fp32, uniform masks'] / best['bf16, uniform masks']:.2f}x")
    record("sasrec_step_speedup_bf16_byte_masks", round(base / best["bf16, byte masks"], 2),
           "x (fp32 uniform-mask step / bf16 byte-mask step)", "report", None,
           ".venv/bin/python bench/sasrec_step.py", note)


if __name__ == "__main__":
    main()
