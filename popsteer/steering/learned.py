"""Learned steering in the SAE basis: the pre-activation shift ``delta`` fitted, not set by Eq. 4.

Eq. 3/4 fix ``delta`` (n,) from Cohen's d and a strength alpha. Here ``delta`` is a free
parameter, fitted on the **training** users' prefixes of the recommender (never on valid or
test) for one trade-off weight ``lam``:

    h      = W_enc (x - b_dec) + b_enc                                  (B, n), frozen
    z'     = TopK(ReLU(h + delta), K)                                   (B, n), K kept
    x'     = x + (z' W_dec - TopK(ReLU(h), K) W_dec)                    error-preserving form, (B, d)
    s      = x' E^T + b                                                 (B, n_items), padding at -inf
    m_bi   = sigmoid((s_bi - theta_b) / (tau * r_b))                    soft top-k membership, (B, n_items)
             theta_b = (s_b,(k) + s_b,(k+1)) / 2,  r_b = s_b,(1) - s_b,(k+1)   (no gradient; k = 10)
    pbar   = mean_b m_b / sum_i mean_b m_bi                             batch top-k exposure shares, (n_items,)
    L      = CE(s, target) + lam * n_items * sum_i pbar_i^2 + l1 * ||delta||_1

``n_items * sum_i pbar_i^2`` is the exposure concentration (1 when the batch's top-k exposure is
uniform over the catalogue, n_items when it sits on one item). ``m`` is a relaxed indicator of
"item i is in row b's top k": the threshold sits between the k-th and (k+1)-th scores, and the
temperature is relative to the row's own score spread ``r_b``, so ``tau`` is unit-free and the
surrogate follows exactly the exposure Gini@k measures (surrogate ``"topk"``, the default). The
first prototype's surrogate, ``"softmax"`` (``m_b = softmax(s_b / tau)``, the whole distribution
sharpened by tau), is kept for comparison: on Last.fm it mostly moved the top-1 item, and its lowest
valid Gini@10 was 0.50 against 0.38 for ``"topk"`` (docs/METHOD.md §4b). CE keeps the steered lists
accurate; the L1 term keeps the moved neurons few.

Gradients through TopK: the selected indices are taken without gradient and the K kept values
``ReLU(h + delta)[idx]`` carry it. That is the exact gradient of TopK(ReLU(.)) wherever the
selection does not change (almost everywhere), i.e. the straight-through estimator of the
selection; latents outside a row's top K get no gradient from that row.

``delta = 0`` gives the recommender's own x bit for bit (``popsteer.steering.steer.preserve_error``),
so the lam = 0 point of a grid starts at the base lists (CE alone still moves delta; a grid therefore
also carries the fixed point ``delta = 0``, ``LEARNED_ZERO``). Training is seeded (the batch order
and nothing else is random) and runs single-threaded under ``single_threaded_torch`` so that the
fitted delta is the same bits in any process, whatever its thread count: the CLI and a Ray worker
give identical grid rows. Hand-written because no library fits a shift of an SAE's code against an
exposure objective; the optimiser is torch's Adam.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from popsteer.sae.topk import topk_relu_sparse
from popsteer.util.configs import DEFAULT_SEED
from popsteer.steering.grid import single_threaded_torch
from popsteer.steering.steer import unsteered_decode

log = logging.getLogger(__name__)

LEARNED_ZERO = -1.0
"""The ``lam`` of the fixed point delta = 0 in a learned grid (the base lists themselves)."""


@dataclass(frozen=True)
class LearnedPoint:
    """A point of the learned grid: the delta fitted at trade-off weight ``lam``."""

    lam: float

    def params(self) -> dict:
        return {"lam": self.lam}


@dataclass(frozen=True)
class FitSettings:
    """How one delta is fitted (``popsteer.stages.config.LearnedConfig`` holds the user's values)."""

    tau: float = 0.1
    surrogate: str = "topk"
    """"topk" (``topk_concentration``) or "softmax" (``concentration``)."""
    k: int = 10
    """The list length the "topk" surrogate relaxes."""
    steps: int = 300
    batch_size: int = 1024
    lr: float = 0.02
    l1: float = 0.0
    seed: int = DEFAULT_SEED


@dataclass
class FitResult:
    delta: torch.Tensor
    """(n,) float32, the fitted shift of the pre-activations."""
    history: list[dict]
    """Every 50th step: step, ce, concentration (the surrogate without lam), l1 norm."""
    seconds: float


def batch_order(n_rows: int, steps: int, batch_size: int, seed: int) -> np.ndarray:
    """(steps, batch) row indices: shuffled passes over the rows, each row once per pass. Seeded."""
    rng = np.random.default_rng(seed)
    need = steps * batch_size
    passes = [rng.permutation(n_rows) for _ in range(-(-need // n_rows))]
    return np.concatenate(passes)[:need].reshape(steps, batch_size)


def steered_x(sae: torch.nn.Module, x: torch.Tensor, h: torch.Tensor, base: torch.Tensor,
              delta: torch.Tensor) -> torch.Tensor:
    """``x + decode(TopK(ReLU(h + delta))) - decode(TopK(ReLU(h)))``, differentiable in delta.

    x (B, d), h (B, n), base = ``unsteered_decode(sae, h)`` (B, d), delta (n,) -> (B, d). The indices
    come from the same TopK the grid uses (``topk_relu_sparse``), so at a given delta the rows equal
    the grid's ``preserve_error`` rows."""
    shifted = h + delta  # (B, n)
    with torch.no_grad():
        indices = topk_relu_sparse(shifted.detach(), sae.k)[1]  # (B, K)
    values = F.relu(shifted.gather(1, indices))  # (B, K), carries the gradient
    decoded = F.embedding_bag(indices, sae.W_dec.detach(), per_sample_weights=values, mode="sum")  # (B, d)
    return x + (decoded - base)


def concentration(scores: torch.Tensor, tau: float) -> torch.Tensor:
    """``n_items * sum_i pbar_i^2`` with pbar the batch mean of softmax(scores / tau); padding (-inf)
    columns count as items with zero exposure only through n_items = the finite columns."""
    p = torch.softmax(scores / tau, dim=1)  # (B, n_items)
    pbar = p.mean(0)
    n_items = int(torch.isfinite(scores[0]).sum())
    return n_items * pbar.pow(2).sum()


def topk_concentration(scores: torch.Tensor, tau: float, k: int = 10) -> torch.Tensor:
    """``n_items * sum_i pbar_i^2`` of the batch's soft top-k exposure shares (module docstring); scores (B, n_items),
    padding and masked columns at -inf (never in a list, and not counted in n_items)."""
    n_items = int(torch.isfinite(scores[0]).sum())
    k = min(k, n_items - 1)
    with torch.no_grad():
        top = torch.topk(scores, k + 1, dim=1).values  # (B, k+1), best first
        theta = 0.5 * (top[:, k - 1] + top[:, k])  # (B,), between the k-th and (k+1)-th
        spread = (top[:, 0] - top[:, k]).clamp_min(1e-12)  # (B,)
    member = torch.sigmoid((scores - theta[:, None]) / (tau * spread[:, None]))  # (B, n_items)
    exposure = member.mean(0)
    share = exposure / exposure.sum()
    return n_items * share.pow(2).sum()


def exposure_term(scores: torch.Tensor, settings: FitSettings) -> torch.Tensor:
    """The fit's exposure-concentration surrogate, as ``settings.surrogate`` names it."""
    if settings.surrogate == "softmax":
        return concentration(scores, settings.tau)
    return topk_concentration(scores, settings.tau, settings.k)


def fit_delta(sae: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, item_emb: torch.Tensor,
              lam: float, settings: FitSettings, bias: torch.Tensor | None = None,
              init: torch.Tensor | None = None) -> FitResult:
    """Fit delta (n,) for trade-off weight ``lam`` (module docstring).

    x: (N, d) training representations; targets: (N,) int64 item ids (>= 1), the next item of each
    row; item_emb: (n_items, d), row 0 padding; bias: (n_items,) or None; init: (n,) start (zeros).
    """
    t0 = time.perf_counter()
    order = batch_order(len(x), settings.steps, min(settings.batch_size, len(x)), settings.seed)
    delta = torch.zeros(sae.n) if init is None else init.detach().clone().float()
    delta.requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=settings.lr)
    emb = item_emb.detach().float()
    col_bias = torch.zeros(len(emb)) if bias is None else bias.detach().float().clone()
    col_bias[0] = -math.inf  # padding is never an item
    history = []
    with single_threaded_torch():
        for step, rows in enumerate(order):
            idx = torch.from_numpy(rows)
            xb, tb = x[idx], targets[idx]  # (B, d), (B,)
            with torch.no_grad():
                hb = sae.preact(xb)  # (B, n)
                base = unsteered_decode(sae, hb)  # (B, d)
            scores = steered_x(sae, xb, hb, base, delta) @ emb.T + col_bias  # (B, n_items)
            ce = F.cross_entropy(scores, tb)
            conc = exposure_term(scores, settings)
            loss = ce + lam * conc + settings.l1 * delta.abs().sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 50 == 0 or step == len(order) - 1:
                history.append({"step": step, "ce": ce.item(), "concentration": conc.item(),
                                "l1": float(delta.detach().abs().sum())})
    seconds = time.perf_counter() - t0
    log.info("learned delta, lam=%g: %d steps in %.1f s, ce %.4f, concentration %.2f, |delta|_1 %.1f", lam,
             len(order), seconds, history[-1]["ce"], history[-1]["concentration"], history[-1]["l1"])
    return FitResult(delta.detach().clone(), history, seconds)


def most_moved(delta: np.ndarray, top: int = 10) -> list[tuple[int, float]]:
    """The ``top`` neurons with the largest |delta| (stable order), with their signed shift."""
    order = np.argsort(-np.abs(delta), kind="stable")[:top]
    return [(int(j), float(delta[j])) for j in order if delta[j] != 0]
