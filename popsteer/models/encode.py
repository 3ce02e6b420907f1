"""User representations from a recommender: one per sequence, or every position of all-position windows."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from popsteer.data import SequenceData
from popsteer.eval.evaluator import Evaluator
from popsteer.models.outputs import sequence_output, user_output
from popsteer.models.registry import spec_for
from popsteer.util.progress import progress


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model's parameters (or, for a table-only model, its buffers) live."""
    return next(itertools.chain(model.parameters(), model.buffers())).device


def encode_users(model: torch.nn.Module, item_seq: np.ndarray, seq_len: np.ndarray, batch_size: int = 256,
                 train_mode: bool = False) -> torch.Tensor:
    """The model's user representation x of each sequence, shape (U, d) (``recbole_adapter.user_output``).

    ``train_mode`` keeps dropout active (the reference's quirk while training the SAE).
    """
    was_training = model.training
    model.train(train_mode)
    dev = model_device(model)
    out = []
    with torch.no_grad():
        for s in range(0, len(item_seq), batch_size):
            seq = torch.as_tensor(item_seq[s : s + batch_size]).to(dev)
            ln = torch.as_tensor(seq_len[s : s + batch_size]).to(dev)
            out.append(user_output(model, seq, ln).cpu())  # (B, d)
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
    dev = model_device(model)
    out = []
    with torch.no_grad():
        for s in progress(range(0, len(windows), batch_size), desc="encode prefixes", unit="batch", leave=False):
            seq_out = sequence_output(model, torch.as_tensor(windows[s : s + batch_size]).to(dev))  # (B, L, d)
            out.append(seq_out[torch.as_tensor(take[s : s + batch_size]).to(dev)].cpu())  # (P_b, d)
    model.train(was_training)
    return torch.cat(out)


def evaluate_model(model: torch.nn.Module, data: SequenceData, split: str, k: int = 10, **kw) -> dict[str, float]:
    spec = spec_for(model)
    seq, ln, _ = data.split(split)
    if spec.general:  # x by user index (recbole_adapter.user_output)
        seq, ln = np.arange(data.n_users)[:, None], np.ones(data.n_users, dtype=np.int64)
    reps = encode_users(model, seq, ln)
    table = spec.item_table({k_: v.detach().cpu() for k_, v in model.state_dict().items()})
    return Evaluator.for_split(data, split, table, k=k, **kw)(reps, table.emb)
