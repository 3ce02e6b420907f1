"""Users before and after steering, through the library's own steering (docs/METHOD.md §4).

For a user with representation x: h = W_enc (x - b_dec) + b_enc; the unsteered SAE's list ranks
decode(TopK(ReLU(h))), a steered list ranks decode(TopK(ReLU(h + delta))) with delta from Eq. 3-4
(``steering_delta``), both through ``steered_reconstruction`` and ``rank_topk`` as the grid does.
The neurons whose activation changed most are those with the largest |z'_j - z_j| between the two
codes z = TopK(ReLU(h), K) and z' = TopK(ReLU(h + delta), K).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from popsteer.eval.evaluator import rank_topk
from popsteer.sae.topk import topk_relu
from popsteer.steering.steer import NeuronScores, steered_reconstruction, steering_delta

SASREC, UNSTEERED = "SASRec", "SAE (unsteered)"
"""The lists before steering: the recommender's own and the unsteered SAE reconstruction's."""
CHANGED = 8
"""Neurons listed per user: those whose activation changed most at the chosen point."""


@dataclass(frozen=True)
class Setting:
    """One steering strength shown on the user pages."""

    name: str
    num_neurons: int
    alpha: float
    alpha_unpop: float | None = None


@dataclass
class UserCase:
    user: int
    """Internal user index."""
    lists: dict[str, list[int]]
    """List name (``SASREC``, ``UNSTEERED``, then each setting's name) -> top-k internal item ids, best first."""
    changed: list[tuple[int, float, float]] = field(default_factory=list)
    """(neuron, z before, z after) at the first setting, largest |change| first."""


def sample_users(n_users: int, n: int, seed: int) -> np.ndarray:
    """A seeded sample of ``n`` user indices (all users when fewer), sorted."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_users, size=min(n, n_users), replace=False))


def subset_csr(csr: tuple[np.ndarray, np.ndarray] | None, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Rows ``rows`` of a CSR ``(indptr, items)`` (None stays None)."""
    if csr is None:
        return None
    indptr, items = csr
    parts = [items[indptr[r] : indptr[r + 1]] for r in rows]
    lens = np.array([len(p) for p in parts], dtype=np.int64)
    return np.concatenate([[0], np.cumsum(lens)]).astype(np.int64), (np.concatenate(parts) if parts else items[:0])


def user_cases(sae: torch.nn.Module, scores: NeuronScores, x: np.ndarray, users: np.ndarray,
               item_emb: torch.Tensor, settings: list[Setting], k: int = 10, swap_sigma: bool = False,
               bias: torch.Tensor | None = None, exclude: tuple[np.ndarray, np.ndarray] | None = None) -> list[UserCase]:
    """Top-k lists of ``users`` (x: (U, d), their representations): the recommender's own, the unsteered
    SAE's and one per setting; ``exclude``: the sampled users' CSR of never-ranked items (a general model)."""
    xs = torch.as_tensor(x[users])  # (S, d)
    with torch.no_grad():
        h = sae.preact(xs)  # (S, n)
    n = h.shape[1]
    reps = {SASREC: xs, UNSTEERED: steered_reconstruction(sae, h, torch.zeros(n))}
    deltas = {s.name: steering_delta(scores, s.num_neurons, s.alpha, swap_sigma, s.alpha_unpop) for s in settings}
    reps |= {name: steered_reconstruction(sae, h, delta) for name, delta in deltas.items()}
    lists = {name: rank_topk(r, item_emb, k, bias=bias, exclude=exclude).numpy() for name, r in reps.items()}
    with torch.no_grad():
        z0 = topk_relu(h, sae.k)  # (S, n)
        z1 = topk_relu(h + deltas[settings[0].name], sae.k) if settings else z0
    change = (z1 - z0).abs()
    out = []
    for row, u in enumerate(users):
        order = torch.argsort(change[row], descending=True, stable=True)[:CHANGED]
        moved = [(int(j), float(z0[row, j]), float(z1[row, j])) for j in order if change[row, j] > 0]
        out.append(UserCase(int(u), {name: lists[name][row].tolist() for name in lists}, moved))
    return out
