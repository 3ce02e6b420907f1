"""Neuron analysis (docs/METHOD.md §3): synthetic popular-only and unpopular-only profiles
(or real user groups, ``user_groups``), SAE pre-activations of their encoded representations,
per-neuron mean / population SD per group, and Cohen's d.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from popsteer.data import SequenceData
from popsteer.util.progress import batches


def profile_lengths(data: SequenceData) -> np.ndarray:
    """Lengths of the real training sequences, one per user, capped at max_len.

    A user's training sequence is every item before its validation target.
    """
    return np.minimum(data.lengths - 2, data.max_len).astype(np.int64)


def user_groups(data: SequenceData, share: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The real-user probe (the extended paper's, for models that cannot encode a profile).

    A user's popularity is the mean, over the items of its training history (everything
    before its validation target), of their training counts. Returns the indices of the
    ``share`` of users with the highest and of those with the lowest (each sorted; ties by
    user order), at least one user each.
    """
    counts = data.train_target_counts().astype(np.float64)  # (n_items,)
    owner = np.repeat(np.arange(data.n_users), data.lengths)  # (N,)
    keep = np.arange(len(data.items)) < np.repeat(data.offsets[1:] - 2, data.lengths)
    n_hist = np.bincount(owner[keep], minlength=data.n_users)
    mean = np.bincount(owner[keep], weights=counts[data.items[keep]], minlength=data.n_users) / np.maximum(n_hist, 1)
    n = max(1, int(round(share * data.n_users)))
    order = np.argsort(mean, kind="stable")  # ascending popularity
    return np.sort(order[-n:]), np.sort(order[:n])


def synthetic_profiles(lengths: np.ndarray, item_set: np.ndarray, max_len: int, seed: int) -> np.ndarray:
    """One profile per length, items drawn uniformly with replacement from ``item_set``.

    Returns (P, max_len) int64, right-padded with 0.
    """
    rng = np.random.default_rng(seed)
    draws = rng.choice(item_set, size=(len(lengths), max_len), replace=True)
    return np.where(np.arange(max_len)[None, :] < lengths[:, None], draws, 0).astype(np.int64)


@dataclass
class GroupStats:
    """Per-neuron mean and population standard deviation over a set of profiles."""

    mean: np.ndarray  # (n,)
    std: np.ndarray  # (n,)
    count: int

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"mean": self.mean.astype(np.float32), "std": self.std.astype(np.float32)})


class RunningMoments:
    """Streaming per-column sum and sum of squares in float64 (exact enough for population SD)."""

    def __init__(self, n: int) -> None:
        self.s = torch.zeros(n, dtype=torch.float64)
        self.ss = torch.zeros(n, dtype=torch.float64)
        self.count = 0

    def update(self, h: torch.Tensor) -> None:
        h = h.double()
        self.s += h.sum(0)
        self.ss += (h * h).sum(0)
        self.count += h.shape[0]

    def result(self) -> GroupStats:
        mean = self.s / self.count
        var = (self.ss / self.count - mean * mean).clamp_min(0)
        return GroupStats(mean.numpy(), var.sqrt().numpy(), self.count)


def preactivation_stats(sae: torch.nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 4096,
                        desc: str = "profiles") -> GroupStats:
    """Mean and population SD of the SAE pre-activations h over the encoded profiles x (P, d)."""
    x = torch.as_tensor(x)
    device = sae.W_enc.device
    moments = RunningMoments(sae.W_enc.shape[0])
    with torch.no_grad():
        for s in batches(len(x), batch_size, desc=desc):
            moments.update(sae.preact(x[s : s + batch_size].to(device)).cpu())  # (B, n)
    return moments.result()


def cohens_d(pop: GroupStats, unpop: GroupStats) -> np.ndarray:
    """d_j = (mu_pop - mu_unpop) / sqrt((sigma_pop^2 + sigma_unpop^2) / 2), shape (n,)."""
    pooled = np.sqrt((pop.std.astype(np.float64) ** 2 + unpop.std.astype(np.float64) ** 2) / 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (pop.mean - unpop.mean) / pooled
    return np.where(pooled > 0, d, 0.0)


def neuron_analysis(sae: torch.nn.Module, x_popular: np.ndarray, x_unpopular: np.ndarray,
                    batch_size: int = 4096) -> tuple[np.ndarray, GroupStats, GroupStats]:
    """Cohen's d of every SAE neuron from the encoded popular-only and unpopular-only profiles (P, d) each."""
    pop = preactivation_stats(sae, x_popular, batch_size, "analysis: popular profiles")
    unpop = preactivation_stats(sae, x_unpopular, batch_size, "analysis: unpopular profiles")
    return cohens_d(pop, unpop), pop, unpop


def top_items_per_neuron(sae: torch.nn.Module, x_items: np.ndarray, item_tokens: np.ndarray, top: int = 10,
                         batch_size: int = 4096) -> pd.DataFrame:
    """For each neuron, the items whose one-item profile activates it most (for interpretation).

    x_items: (n_items - 1, d), the encoded one-item profiles of items 1..n_items-1.
    """
    x = torch.as_tensor(x_items)
    with torch.no_grad():
        h = torch.cat([sae.preact(x[s : s + batch_size].to(sae.W_enc.device)).cpu()
                       for s in batches(len(x), batch_size, desc="analysis: one-item profiles")])  # (n_items - 1, n)
    vals, idx = torch.topk(h, min(top, h.shape[0]), dim=0)  # (top, n)
    n = h.shape[1]
    item_ids = (idx + 1).T.reshape(-1).numpy()
    return pd.DataFrame({
        "neuron": np.repeat(np.arange(n), vals.shape[0]),
        "rank": np.tile(np.arange(vals.shape[0]), n),
        "item_id": item_ids,
        "item_token": item_tokens[item_ids],
        "preactivation": vals.T.reshape(-1).numpy(),
    })
