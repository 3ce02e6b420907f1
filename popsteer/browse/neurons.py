"""What the neuron browser shows of each neuron, computed from the SAE and encoded representations.

- activation frequency f_j = |{u : z_uj > 0}| / U over the users' codes z = TopK(ReLU(h), K);
- probe histograms: the pre-activations h_j = (W_enc (x - b_dec) + b_enc)_j of the analysis' popular
  and unpopular probe groups (the same x the analysis' Cohen's d was computed from), binned on edges
  shared by both groups;
- the users with the largest h_j (by their test-time representation), for the pages' neurons only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from popsteer.sae.topk import topk_relu_sparse

BINS = 30
TOP_USERS = 5


@dataclass
class UserActivations:
    """The users' side of the neurons: frequency over all neurons, the top users of the page neurons."""

    frequency: np.ndarray
    """(n,) share of users whose code keeps the neuron (z_j > 0)."""
    top_users: dict[int, list[tuple[int, float]]]
    """page neuron -> [(user index, h_j)], largest h_j first."""


def page_neurons(d: np.ndarray, labelled: np.ndarray, pages: int) -> np.ndarray:
    """The neurons with a page: the top ``pages`` by |d| (stable), then every labelled one not among them."""
    order = np.argsort(-np.abs(d), kind="stable")
    top = order[:pages]
    extra = np.setdiff1d(np.flatnonzero(labelled), top)
    return np.concatenate([top, extra[np.argsort(-np.abs(d[extra]), kind="stable")]]).astype(np.int64)


def _preacts(sae: torch.nn.Module, x: np.ndarray, batch_size: int):
    """Batches of h (B, n) of rows x (U, d)."""
    x = torch.as_tensor(x)
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            yield s, sae.preact(x[s : s + batch_size].to(sae.W_enc.device)).cpu()


def user_activations(sae: torch.nn.Module, x_users: np.ndarray, neurons: np.ndarray, top: int = TOP_USERS,
                     batch_size: int = 4096) -> UserActivations:
    """Activation frequency of every neuron and the ``top`` users of each of ``neurons`` (P,), from x (U, d)."""
    n = sae.W_enc.shape[0]
    fired = torch.zeros(n, dtype=torch.float64)
    cols = torch.as_tensor(neurons, dtype=torch.long)
    picked = []
    for _, h in _preacts(sae, x_users, batch_size):  # h: (B, n)
        values, indices = topk_relu_sparse(h, sae.k)  # (B, K)
        fired += torch.bincount(indices[values > 0], minlength=n).double()
        picked.append(h[:, cols])  # (B, P)
    hp = torch.cat(picked) if picked else torch.zeros((0, len(neurons)))  # (U, P)
    k = min(top, hp.shape[0])
    vals, idx = torch.topk(hp, k, dim=0) if k else (hp[:0], hp[:0].long())  # (k, P)
    tops = {int(j): [(int(idx[r, c]), float(vals[r, c])) for r in range(k)] for c, j in enumerate(neurons)}
    return UserActivations((fired / max(len(x_users), 1)).numpy(), tops)


def probe_histograms(sae: torch.nn.Module, x_pop: np.ndarray, x_unpop: np.ndarray, neurons: np.ndarray,
                     bins: int = BINS, batch_size: int = 4096) -> dict[int, dict]:
    """neuron -> {"edges": (bins + 1,), "popular": (bins,), "unpopular": (bins,)} counts of h_j of each probe group."""
    cols = torch.as_tensor(neurons, dtype=torch.long)

    def columns(x: np.ndarray) -> np.ndarray:
        parts = [h[:, cols] for _, h in _preacts(sae, x, batch_size)]
        return (torch.cat(parts) if parts else torch.zeros((0, len(neurons)))).numpy()  # (P_group, pages)

    pop, unpop = columns(x_pop), columns(x_unpop)
    out = {}
    for c, j in enumerate(neurons):
        both = np.concatenate([pop[:, c], unpop[:, c]])
        lo, hi = (float(both.min()), float(both.max())) if len(both) else (0.0, 1.0)
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        out[int(j)] = {"edges": edges.tolist(), "popular": np.histogram(pop[:, c], edges)[0].tolist(),
                       "unpopular": np.histogram(unpop[:, c], edges)[0].tolist()}
    return out
