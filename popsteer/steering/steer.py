"""Steering SAE neurons at inference (docs/METHOD.md §4, Eq. 3 and Eq. 4).

Neurons are ranked by |d|; the top N get a weight
``w_j = alpha * (|d_j| - min_all |d|) / (max_topN |d| - min_all |d|)`` and the pre-activation
moves by ``+w_j sigma_j`` for unpopular neurons (d < 0, boosted) and ``-w_j sigma_j`` for
popular ones (d > 0, suppressed); then ReLU, TopK, decode. By default sigma_j is the SD of
the neuron's own group; ``swap_sigma`` reproduces the reference's swapped files.

Two extensions (docs/METHOD.md §4):

- separate strengths (the extended paper): ``alpha`` for the popular neurons (suppressed) and
  ``alpha_unpop`` for the unpopular ones (boosted); ``alpha_unpop=None`` is the single-alpha case;
- the error-preserving variant ``x' = x + (decode(steer(h)) - decode(h))``: the SAE's
  reconstruction error is kept, so alpha = 0 gives the recommender's own x exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from popsteer.errors import PopSteerError
from popsteer.sae.topk import topk_relu_sparse

DEFAULT_NUM_NEURONS = 4096
"""The paper's N, the number of steered neurons (capped at an SAE's width where it is smaller)."""
DEFAULT_ALPHA = 1.5
"""The paper's steering strength alpha (Eq. 4): the seed's ``--test_popsteer`` default."""


@dataclass(frozen=True)
class NeuronScores:
    """Per-neuron analysis results, all shape (n,)."""

    d: np.ndarray
    sigma_pop: np.ndarray
    sigma_unpop: np.ndarray


def check_strength(num_neurons: int, alpha: float) -> None:
    """The user's N and alpha, before anything is loaded: N >= 1, alpha finite and >= 0.

    (N <= the SAE's width is checked by ``steering_weights`` once the width is known.)
    """
    if num_neurons < 1:
        raise PopSteerError(f"num_neurons must be >= 1 (the number of steered neurons), got {num_neurons}")
    if not (alpha >= 0 and np.isfinite(alpha)):
        raise PopSteerError(f"alpha must be a finite number >= 0, got {alpha}")


def steering_weights(d: np.ndarray, num_neurons: int, alpha: float) -> np.ndarray:
    """Eq. 3: weights of the top-N neurons by |d|, zero elsewhere. Shape (n,)."""
    n = len(d)
    if not 0 <= num_neurons <= n:
        raise PopSteerError(f"num_neurons must be in [0, {n}] (the SAE's hidden size), got {num_neurons}")
    if not (alpha >= 0 and np.isfinite(alpha)):
        raise PopSteerError(f"alpha must be a finite number >= 0, got {alpha}")
    w = np.zeros(n, dtype=np.float64)
    if num_neurons == 0 or alpha == 0:
        return w
    mag = np.abs(d)
    top = np.argsort(-mag, kind="stable")[:num_neurons]
    lo, hi = mag.min(), mag[top].max()
    w[top] = alpha * (mag[top] - lo) / (hi - lo) if hi > lo else alpha
    return w


def steering_delta(scores: NeuronScores, num_neurons: int, alpha: float, swap_sigma: bool = False,
                   alpha_unpop: float | None = None) -> torch.Tensor:
    """Eq. 4 as an additive shift of the pre-activations, shape (n,) float32.

    ``alpha`` weighs the suppressed (popular) neurons and ``alpha_unpop`` (default: ``alpha``)
    the boosted (unpopular) ones; the N steered neurons are the top N by |d| either way."""
    w = steering_weights(scores.d, num_neurons, alpha)
    w_unpop = w if alpha_unpop is None else steering_weights(scores.d, num_neurons, alpha_unpop)
    boost_sigma = scores.sigma_pop if swap_sigma else scores.sigma_unpop
    suppress_sigma = scores.sigma_unpop if swap_sigma else scores.sigma_pop
    delta = np.where(scores.d < 0, w_unpop * boost_sigma, np.where(scores.d > 0, -w * suppress_sigma, 0.0))
    return torch.as_tensor(delta, dtype=torch.float32)


def steer_preactivations(h: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """h: (U, n) pre-activations; delta: (n,). Returns the steered pre-activations."""
    return h + delta


def steered_reconstruction(sae: torch.nn.Module, h: torch.Tensor, delta: torch.Tensor,
                           batch_size: int = 4096, x: torch.Tensor | None = None) -> torch.Tensor:
    """Decode steered pre-activations: ReLU, TopK(K), sparse decode. (U, n) -> (U, d).

    With ``x`` (U, d), the users' own representations, the error-preserving variant
    ``x + (decode(steer(h)) - decode(h))`` instead. Streams over user batches, so no second
    (U, n) tensor is ever held.
    """
    out = []
    with torch.no_grad():
        for s in range(0, h.shape[0], batch_size):
            hb = h[s : s + batch_size]  # (B, n)
            steered = topk_relu_sparse(steer_preactivations(hb, delta), sae.k)
            if x is None:
                out.append(sae.decode_sparse(*steered))
            else:
                out.append(preserve_error(sae, x[s : s + batch_size], *steered, unsteered_decode(sae, hb)))
    return torch.cat(out)


def unsteered_decode(sae: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    """``decode(h) - b_dec`` of pre-activations h (B, n): what ``preserve_error`` subtracts, (B, d)."""
    return sae.decode_sparse_nobias(*topk_relu_sparse(h, sae.k))


def preserve_error(sae: torch.nn.Module, x: torch.Tensor, values: torch.Tensor, indices: torch.Tensor,
                   unsteered: torch.Tensor) -> torch.Tensor:
    """``x + (decode(steered) - decode(h))`` for rows x (B, d), the steered code ``values, indices``
    (B, K) and ``unsteered = unsteered_decode(sae, h)`` (B, d). b_dec cancels; where the steered code
    equals the unsteered one (alpha = 0) the difference is exactly 0, so x comes back bit for bit."""
    return x + (sae.decode_sparse_nobias(values, indices) - unsteered)
