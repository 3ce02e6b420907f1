"""All-position training vs RecBole's per-prefix trainer on ml-100k (same machine, same run), for SASRec
or GRU4Rec (``--model``).

1. Loss check: RecBole's SASRec (eval mode, same weights); per-pair CE of every training
   (prefix, target) pair as RecBole builds them, vs the all-position loss of the same target.
   Pairs whose prefix is the whole history so far (<= max_len items) must agree exactly; for
   longer prefixes the all-position window sees >= max_len - stride items of context.
2. Speed: wall time of one RecBole training epoch (its Trainer._train_epoch, every
   (prefix, target) pair once) vs one all-position epoch (every target once).

    .venv/bin/python bench/sasrec_speed.py [--model gru4rec]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record  # noqa: E402

from popsteer.models.config import TrainConfig  # noqa: E402
from popsteer.models.registry import get_model  # noqa: E402
from popsteer.data import find_inter_file, load_dataset  # noqa: E402
from popsteer.models.outputs import sequence_output  # noqa: E402
from popsteer.models.recbole_adapter import RecBolePipeline, build_model  # noqa: E402
from popsteer.models.allpos import _window_batches, allpos_loss  # noqa: E402
from popsteer.models.dropout import use_fast_dropout  # noqa: E402

COMMAND = ".venv/bin/python bench/sasrec_speed.py"


def per_pair_losses(model, data):
    """CE of each RecBole training pair, in (user, position) order; and the target's index in its user sequence."""
    seq, ln, tgt = data.train_prefix_pairs()
    out = []
    with torch.no_grad():
        for s in range(0, len(seq), 4096):
            x = model.forward(torch.as_tensor(seq[s : s + 4096]), torch.as_tensor(ln[s : s + 4096]))
            logits = x @ model.item_embedding.weight.T
            out.append(F.cross_entropy(logits, torch.as_tensor(tgt[s : s + 4096]), reduction="none"))
    pos = np.concatenate([np.arange(1, t) for t in data.lengths - 2 if t > 1])  # target index within the user
    return torch.cat(out).numpy(), pos


def allpos_losses(model, data, stride):
    """CE of every target from the all-position windows, in (user, position) order."""
    inputs, targets = data.train_windows(stride)
    losses = []
    with torch.no_grad():
        for s in range(0, len(inputs), 512):
            inp, tg = torch.as_tensor(inputs[s : s + 512]), torch.as_tensor(targets[s : s + 512])
            out = sequence_output(model, inp)
            sel = tg > 0
            losses.append(F.cross_entropy(out[sel] @ model.item_embedding.weight.T, tg[sel], reduction="none"))
    return torch.cat(losses).numpy()  # windows are in user order, positions ascending within a user


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="sasrec")
    a = ap.parse_args()
    torch.set_num_threads(2)
    spec = get_model(a.model)
    data = load_dataset("ml-100k")
    hp = spec.architecture()
    cfg = TrainConfig()
    pipe = RecBolePipeline("ml-100k", find_inter_file("ml-100k", None), hp, model=a.model)
    model = pipe.new_model()
    model.eval()
    rb_loss, pos = per_pair_losses(model, data)
    ap_loss = allpos_losses(model, data, cfg.stride)
    assert len(rb_loss) == len(ap_loss) == len(pipe.train_data.dataset)
    exact = pos <= hp.max_len
    max_diff = float(np.abs(rb_loss[exact] - ap_loss[exact]).max())
    print(f"loss check: {exact.sum()} pairs with the full history: max |diff| {max_diff:.2e}; "
          f"mean loss over all {len(rb_loss)} pairs: RecBole {rb_loss.mean():.6f}, all-position {ap_loss.mean():.6f}")
    assert max_diff < 1e-4

    # speed: one epoch each, training mode, same initial weights
    trainer = pipe.trainer(model)
    t0 = time.perf_counter()
    pipe.train_epoch(trainer, 0)
    t_recbole = time.perf_counter() - t0
    ours = use_fast_dropout(build_model(spec, data.n_items, hp))  # as train_allpos trains it
    ours.load_state_dict(pipe.new_model().state_dict())
    ours.train()
    assert not torch.is_anomaly_enabled()  # RecBole's import no longer slows both trainers down
    opt = torch.optim.Adam(ours.parameters(), lr=cfg.learning_rate)
    inputs, targets = (torch.as_tensor(a) for a in data.train_windows(cfg.stride))
    t0 = time.perf_counter()
    for idx in _window_batches(targets.numpy(), cfg.batch_size, torch.Generator().manual_seed(0)):
        loss = allpos_loss(ours, inputs[idx], targets[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    t_ours = time.perf_counter() - t0
    pipe.close()
    ratio = t_recbole / t_ours
    print(f"{spec.recbole_class}: one epoch over every (prefix, target) pair of ml-100k: RecBole {t_recbole:.1f} s, "
          f"all-position {t_ours:.1f} s -> {ratio:.1f}x")
    name = "sasrec_epoch_speedup_vs_recbole" if a.model == "sasrec" else f"{a.model}_epoch_speedup_vs_recbole"
    command = COMMAND + ("" if a.model == "sasrec" else f" --model {a.model}")
    record(name, round(ratio, 1), "x", ">= 20" if a.model == "sasrec" else "report", ratio >= 20 if a.model == "sasrec"
           else None, command,
           f"RecBole {t_recbole:.1f} s vs all-position {t_ours:.1f} s per epoch; loss on the {int(exact.sum())} "
           f"full-history pairs max |diff| {max_diff:.1e}; mean loss all pairs RecBole {rb_loss.mean():.5f} vs "
           f"all-position {ap_loss.mean():.5f}")


if __name__ == "__main__":
    main()
