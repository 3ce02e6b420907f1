"""User representations from a recommender: one per sequence, or every position of all-position windows."""

from __future__ import annotations

import numpy as np
import torch

from popsteer.data import SequenceData
from popsteer.eval.evaluator import Evaluator
from popsteer.models.recbole_adapter import sequence_output
from popsteer.util.progress import progress


def encode_users(model: torch.nn.Module, item_seq: np.ndarray, seq_len: np.ndarray, batch_size: int = 256,
                 train_mode: bool = False) -> torch.Tensor:
    """SASRec's user representation: last-layer output at ``seq_len - 1``, shape (U, d).

    ``train_mode`` keeps dropout active (the reference's quirk while training the SAE).
    """
    was_training = model.training
    model.train(train_mode)
    dev = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for s in range(0, len(item_seq), batch_size):
            seq = torch.as_tensor(item_seq[s : s + batch_size]).to(dev)
            ln = torch.as_tensor(seq_len[s : s + batch_size]).to(dev)
            out.append(model.forward(seq, ln).cpu())  # (B, d)
    model.train(was_training)
    return torch.cat(out)


def encode_prefixes(model: torch.nn.Module, data: SequenceData, stride: int = 10, batch_size: int = 512,
                    train_mode: bool = False) -> torch.Tensor:
    """The representation of every training prefix, from all-position passes over windows, (P, d).

    One row per training (prefix, target) pair, in (user, position) order. A prefix of at
    most ``max_len`` items is encoded exactly as RecBole would; a longer one sees the last
    ``max_len - stride + 1`` to ``max_len`` items (``stride=1``: exactly RecBole's last
    ``max_len`` items, at per-prefix cost). Costs about ``max_len / stride`` times less than
    encoding every prefix separately.
    """
    inputs, targets = data.train_windows(stride)
    return encode_windows(model, inputs, targets > 0, batch_size, train_mode)


def encode_windows(model: torch.nn.Module, windows: np.ndarray, take: np.ndarray, batch_size: int = 512,
                   train_mode: bool = False) -> torch.Tensor:
    """All-position passes over windows (W, L): the outputs at the ``take`` (W, L) positions, (P, d).

    Rows in (window, position) order; run on the model's device, returned on the CPU.
    """
    was_training = model.training
    model.train(train_mode)
    dev = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for s in progress(range(0, len(windows), batch_size), desc="encode prefixes", unit="batch", leave=False):
            seq_out = sequence_output(model, torch.as_tensor(windows[s : s + batch_size]).to(dev))  # (B, L, d)
            out.append(seq_out[torch.as_tensor(take[s : s + batch_size]).to(dev)].cpu())  # (P_b, d)
    model.train(was_training)
    return torch.cat(out)


def evaluate_model(model: torch.nn.Module, data: SequenceData, split: str, k: int = 10, **kw) -> dict[str, float]:
    seq, ln, _ = data.split(split)
    reps = encode_users(model, seq, ln)
    return Evaluator.for_split(data, split, k=k, **kw)(reps, model.item_embedding.weight.detach().cpu())
