"""SAE training epochs on a real encoding: the sparse training step against autograd through the dense code.

Runs the SAE stage itself (``popsteer.stages.sae.train_sae``: the same encoded training prefixes,
the same batches) twice from one recommender checkpoint, K=32 s=64:

- ``decode="dense"``: autograd through the dense (B, n) code, the reference's literal computation
  (the default before the sparse step);
- ``decode="sparse"``: the sparse step (``popsteer.sae.sparse_step``), the default now.

Epoch 1 has no dead latent (no AuxK), so the figure is the mean over epochs 2..E, which pay for
AuxK as every later epoch does. Both runs' validation FVU are printed side by side: they agree to
float rounding. Records ``sae_epoch_sparse_step_speedup`` (dense seconds / sparse seconds, same run).

    .venv/bin/python bench/sae_epoch.py -p CKPT --data-dir DIR --out-dir DIR --epochs 4
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record  # noqa: E402

from popsteer.sae.model import SAEConfig  # noqa: E402
from popsteer.stages.config import SAEStageConfig, Workspace  # noqa: E402
from popsteer.stages.sae import train_sae  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-p", "--pretrained_path", required=True, help="a recommender checkpoint")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out-dir", required=True, help="where its encoding is (or goes)")
    ap.add_argument("--epochs", type=int, default=4)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sae = SAEConfig(k=32, scale=64, max_epochs=a.epochs, min_epochs=a.epochs)
    base = SAEStageConfig(base=a.pretrained_path, sae=sae, where=Workspace(data_dir=a.data_dir, out_dir=a.out_dir))
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for decode in ("dense", "sparse"):
            cfg = replace(base, sae=replace(sae, decode=decode))
            runs[decode] = train_sae(cfg, out=Path(tmp) / f"{decode}.safetensors").history
    secs = {k: sum(r["seconds"] for r in h[1:]) / len(h[1:]) for k, h in runs.items()}
    fvu = {k: [round(r["valid_fvu"], 5) for r in h] for k, h in runs.items()}
    dead = [round(r["dead_fraction"], 3) for r in runs["sparse"]]
    ratio = secs["dense"] / secs["sparse"]
    print(f"epoch seconds (epochs 2..{a.epochs}): dense autograd {secs['dense']:.1f}, sparse step {secs['sparse']:.1f} "
          f"({ratio:.2f}x); valid FVU dense {fvu['dense']} sparse {fvu['sparse']}; dead {dead}")
    cmd = f".venv/bin/python bench/sae_epoch.py -p {Path(a.pretrained_path).name} --data-dir DIR --out-dir DIR --epochs {a.epochs}"
    record("sae_epoch_sparse_step_speedup", round(ratio, 2), "x (dense-autograd epoch s / sparse-step epoch s)",
           "report", None, cmd,
           f"SAE stage on {Path(a.pretrained_path).name}'s training prefixes, K=32 s=64 batch 4096, mean of epochs "
           f"2..{a.epochs} (AuxK on; dead fraction {dead}): dense autograd {secs['dense']:.1f} s, sparse step "
           f"{secs['sparse']:.1f} s per epoch; valid FVU per epoch dense {fvu['dense']}, sparse {fvu['sparse']}")


if __name__ == "__main__":
    main()
