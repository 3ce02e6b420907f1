"""Step time of all-position SASRec training on ML-1M, same machine, same run: fp32 vs bf16 autocast,
dropout masks drawn from uniform floats vs from random bytes (``FastDropout``), and the loss as
``F.cross_entropy`` over the full logits vs the fused, chunked ``linear_cross_entropy``.

    .venv/bin/python bench/sasrec_step.py [--data-dir DIR] [--steps 30] [--passes 4]

Same model, windows (stride 25) and batches of 2,048 targets for every variant; each variant
runs its steps in several passes, interleaved with the others, and keeps its fastest pass.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record  # noqa: E402
from shared_data import ml1m_data_dir  # noqa: E402

from popsteer.models.config import SASRecConfig  # noqa: E402
from popsteer.data import load_dataset  # noqa: E402
from popsteer.models.outputs import sequence_output  # noqa: E402
from popsteer.models.recbole_adapter import build_sasrec  # noqa: E402
from popsteer.models.allpos import _window_batches, allpos_loss  # noqa: E402
from popsteer.models.dropout import FastDropout, use_fast_dropout  # noqa: E402


class UniformMaskDropout(FastDropout):
    """The previous mask: ``uniform < keep`` for every element."""

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rand_like(x) < 1.0 - self.p


def unfused_loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The previous loss: the full (P, n_items) logits, then ``F.cross_entropy``."""
    out = sequence_output(model, inputs)  # (B, L, d)
    sel = targets > 0
    return F.cross_entropy(out[sel] @ model.item_embedding.weight.T, targets[sel])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--passes", type=int, default=4, help="interleaved passes over the variants; the fastest counts")
    a = ap.parse_args()
    torch.set_num_threads(2)
    data = load_dataset("ml-1m", a.data_dir or ml1m_data_dir())
    model = use_fast_dropout(build_sasrec(data.n_items, SASRecConfig())).train()
    inputs, targets = (torch.as_tensor(t) for t in data.train_windows(25))
    batches = _window_batches(targets.numpy(), 2048, torch.Generator().manual_seed(0))[: a.steps + 3]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def seconds_per_step(bf16: bool, masks: type, loss_fn) -> float:
        use_fast_dropout(model, masks)
        for i, idx in enumerate(batches):
            if i == 3:  # after 3 warm-up steps
                t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model, inputs[idx], targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (time.perf_counter() - t0) / (len(batches) - 3)

    variants = {"fp32, uniform masks": (False, UniformMaskDropout, unfused_loss),
                "fp32, byte masks": (False, FastDropout, unfused_loss),
                "bf16, uniform masks": (True, UniformMaskDropout, unfused_loss),
                "bf16, byte masks": (True, FastDropout, unfused_loss),
                "fp32, byte masks, fused CE": (False, FastDropout, allpos_loss),
                "bf16, byte masks, fused CE": (True, FastDropout, allpos_loss)}
    best = {name: seconds_per_step(*v) for name, v in variants.items()}
    for _ in range(a.passes - 1):  # further passes, interleaved
        for name, v in variants.items():
            best[name] = min(best[name], seconds_per_step(*v))
    for name, s in best.items():
        print(f"{name:28s} {s * 1e3:6.1f} ms/step", flush=True)
    base, ratio = best["fp32, uniform masks"], lambda slow, fast: f"{best[slow] / best[fast]:.2f}x"
    note = "; ".join(f"{k} {v * 1e3:.1f} ms" for k, v in best.items()) + (
        f" per step of 2,048 targets (ML-1M, stride 25, best of {a.passes} interleaved passes of {a.steps} steps); "
        f"byte masks alone {ratio('fp32, uniform masks', 'fp32, byte masks')}, "
        f"bf16 alone {ratio('fp32, uniform masks', 'bf16, uniform masks')}, "
        f"fused CE alone {ratio('bf16, byte masks', 'bf16, byte masks, fused CE')} in bf16 and "
        f"{ratio('fp32, byte masks', 'fp32, byte masks, fused CE')} in fp32")
    record("sasrec_step_speedup", round(base / best["bf16, byte masks, fused CE"], 2),
           "x (fp32 uniform-mask unfused step / bf16 byte-mask fused-CE step)", "report", None,
           f".venv/bin/python bench/sasrec_step.py --steps {a.steps} --passes {a.passes}", note)


if __name__ == "__main__":
    main()
