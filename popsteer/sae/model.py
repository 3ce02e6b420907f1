"""TopK sparse autoencoder on the recommender's user representation (docs/METHOD.md §2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from popsteer.errors import PopSteerError
from popsteer.util.configs import CONFIG, DEFAULT_SEED, check_at_most, check_choices, check_seeds
from popsteer.sae.topk import topk_relu, topk_relu_sparse


MIN_EPOCHS = 50
"""The reference's rule: early stopping never fires before epoch 50."""


@dataclass
class SAEConfig:
    """TopK SAE size and training schedule (defaults: the reference's, docs/METHOD.md §2)."""

    __pydantic_config__ = CONFIG

    k: int = 32
    """Latents kept per input (K of TopK), in [1, n]."""
    scale: int = 64
    """Hidden width n = scale * d, scale in [1, 4096]."""
    lr: float = 1e-3
    """Adam learning rate, in (0, 1]."""
    batch_size: int = 4096
    """Inputs per training batch, in [1, 1048576]."""
    max_epochs: int = 300
    """Maximum number of epochs, in [1, 100000]."""
    min_epochs: int | None = None
    """Early stopping never stops before this epoch, in [0, max_epochs]; default min(50, max_epochs)."""
    patience: int = 20
    """Early stopping patience (epochs) on -(valid FVU + AuxK/32), in [1, 100000]."""
    lr_patience: int = 10
    """ReduceLROnPlateau patience (epochs) on the validation loss, in [0, 100000]."""
    lr_factor: float = 0.1
    """ReduceLROnPlateau factor, in (0, 1)."""
    aux_k: int | None = None
    """Dead latents decoded by the AuxK loss, >= 1 (capped at n); None: 2 * d."""
    seed: int = DEFAULT_SEED
    """Seeds the weight init and the batch shuffling, in [0, 2**32 - 2]."""
    decode: Literal["dense", "sparse"] = "sparse"
    """sparse: embedding_bag over the k kept latents, and on the CPU a training step with sparse gradients
    (``popsteer.sae.sparse_step``); dense: z @ W_dec with autograd through the dense code, the reference's
    literal computation. The same results up to float rounding."""
    time_budget_min: float | None = None
    """Stop training after this many minutes (the best epoch so far is kept), in (0, 1000000]."""
    stream_buffer_rows: int = 1 << 20
    """Training inputs held in memory at once: a training part of at most this many rows is read whole and
    shuffled as one per epoch (the in-memory path); a larger one is streamed from its encoding in shuffled
    windows of this many rows (popsteer.sae.stream); in [1, 2**31]."""

    def __post_init__(self) -> None:
        if self.min_epochs is None:
            self.min_epochs = min(MIN_EPOCHS, self.max_epochs)
        check_choices(self, "SAE ")
        for name in ("k", "scale", "batch_size", "max_epochs", "patience", "stream_buffer_rows"):
            if getattr(self, name) < 1:
                raise PopSteerError(f"SAE {name} must be >= 1, got {getattr(self, name)}")
        for name in ("min_epochs", "lr_patience"):
            if getattr(self, name) < 0:
                raise PopSteerError(f"SAE {name} must be >= 0, got {getattr(self, name)}")
        if self.min_epochs > self.max_epochs:
            raise PopSteerError(f"SAE min_epochs {self.min_epochs} exceeds max_epochs {self.max_epochs}")
        if not self.lr > 0:
            raise PopSteerError(f"SAE lr must be > 0, got {self.lr}")
        if not 0 < self.lr_factor < 1:
            raise PopSteerError(f"SAE lr_factor must be in (0, 1), got {self.lr_factor}")
        if self.aux_k is not None and self.aux_k < 1:
            raise PopSteerError(f"SAE aux_k must be >= 1 or None (2 * d), got {self.aux_k}")
        if self.time_budget_min is not None and not self.time_budget_min > 0:
            raise PopSteerError(f"SAE time_budget_min must be > 0 minutes, got {self.time_budget_min}")
        check_at_most(self, {"scale": 4096, "lr": 1.0, "batch_size": 1 << 20, "max_epochs": 100_000,
                             "patience": 100_000, "lr_patience": 100_000, "time_budget_min": 1e6,
                             "stream_buffer_rows": 1 << 31}, "SAE ")
        check_seeds(self, "seed", prefix="SAE ")

    def hidden(self, d: int) -> int:
        """Hidden width n for input width d, checking that k fits."""
        if d < 1:
            raise PopSteerError(f"SAE input width must be >= 1, got {d}")
        n = self.scale * d
        if self.k > n:
            raise PopSteerError(f"SAE k={self.k} exceeds the hidden width n = scale * d = {self.scale} * {d} = {n}")
        return n

    def resolved_aux_k(self, d: int) -> int:
        """k_aux: cfg.aux_k or 2 * d, at most the hidden width."""
        return min(self.aux_k if self.aux_k is not None else 2 * d, self.hidden(d))


def fvu(x: Tensor, x_hat: Tensor) -> Tensor:
    """Fraction of variance unexplained over the batch: ||x_hat - x||^2 / ||x - mean(x)||^2.

    x, x_hat: (N, d); the mean is over the N rows. Returns a scalar.
    """
    return (x_hat - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()


class TopKSAE(nn.Module):
    """TopK sparse autoencoder, d inputs -> n = scale * d latents.

        h     = W_enc (x - b_dec) + b_enc        pre-activation, (N, n)
        z     = TopK(ReLU(h), K)                 K largest kept, rest 0, (N, n)
        x_hat = z W_dec + b_dec                  reconstruction, (N, d)

    Parameters: W_enc (n, d), b_enc (n,), W_dec (n, d), b_dec (d,). Init: b_enc = b_dec = 0;
    one random matrix with unit-norm rows (latent directions) is used for both W_enc and
    W_dec, i.e. W_dec = W_enc^T as maps. The norm is fixed at init only (the reference
    normalises only W_dec and keeps nn.Linear's scale for W_enc).
    """

    def __init__(self, d: int, cfg: SAEConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else SAEConfig()
        self.d = d
        self.n = self.cfg.hidden(d)
        self.k = self.cfg.k
        gen = torch.Generator().manual_seed(self.cfg.seed)
        bound = 1.0 / d**0.5  # nn.Linear's default range, before normalising
        w = (torch.rand(self.n, d, generator=gen) * 2 - 1) * bound  # (n, d)
        w = w / w.norm(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).eps)
        self.W_enc = nn.Parameter(w.clone())  # (n, d)
        self.b_enc = nn.Parameter(torch.zeros(self.n))  # (n,)
        self.W_dec = nn.Parameter(w.clone())  # (n, d)
        self.b_dec = nn.Parameter(torch.zeros(d))  # (d,)

    def preact(self, x: Tensor) -> Tensor:
        """x (N, d) -> h (N, n) = W_enc (x - b_dec) + b_enc."""
        return F.linear(x - self.b_dec, self.W_enc, self.b_enc)

    def encode(self, h: Tensor) -> Tensor:
        """h (N, n) -> z (N, n) = TopK(ReLU(h), K), dense."""
        return topk_relu(h, self.k)

    def decode(self, z: Tensor) -> Tensor:
        """z (N, n) -> x_hat (N, d) = z W_dec + b_dec."""
        return z @ self.W_dec + self.b_dec

    def decode_sparse(self, values: Tensor, indices: Tensor) -> Tensor:
        """values (N, k), indices (N, k) of the kept latents -> x_hat (N, d); equals ``decode``."""
        return self.decode_sparse_nobias(values, indices) + self.b_dec

    def decode_sparse_nobias(self, values: Tensor, indices: Tensor) -> Tensor:
        """sum_j values[:, j] * W_dec[indices[:, j]] -> (N, d), without b_dec."""
        return F.embedding_bag(indices, self.W_dec, per_sample_weights=values.to(self.W_dec.dtype), mode="sum")

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (N, d) -> (x_hat (N, d), h (N, n), z (N, n))."""
        h = self.preact(x)  # (N, n)
        values, indices = topk_relu_sparse(h, self.k)  # (N, K), (N, K)
        z = torch.zeros_like(h).scatter(1, indices, values)  # (N, n)
        if self.cfg.decode == "sparse":
            x_hat = self.decode_sparse(values, indices)  # (N, d)
        else:
            x_hat = self.decode(z)  # (N, d)
        return x_hat, h, z

    def auxk_sse(self, x: Tensor, x_hat: Tensor, h: Tensor, dead: Tensor, k_aux: int) -> Tensor:
        """AuxK numerator: min(#dead / k_aux, 1) * ||e_hat - e||^2, a scalar (0 if none is dead).

        e = x - x_hat (detached) is the residual; e_hat decodes, without b_dec, the top k_aux
        ReLU(h) among dead latents. x, x_hat: (N, d); h: (N, n); dead: (n,) bool, the
        latents that did not fire during the previous epoch.
        """
        n_dead = int(dead.sum())
        if n_dead == 0:
            return h.new_zeros(())
        scale = min(n_dead / k_aux, 1.0)
        h_dead = h.masked_fill(~dead, float("-inf"))  # (N, n), live latents never chosen
        values, indices = topk_relu_sparse(h_dead, min(k_aux, n_dead))  # (N, k'), (N, k')
        e_hat = self.decode_sparse_nobias(values, indices)  # (N, d)
        e = (x - x_hat).detach()  # (N, d)
        return scale * (e_hat - e).pow(2).sum()

    def auxk_loss(self, x: Tensor, x_hat: Tensor, h: Tensor, dead: Tensor, k_aux: int) -> Tensor:
        """AuxK loss: ``auxk_sse / ||x - mean(x)||^2`` (normalised by x's variance over the
        batch, as the reference code does). Shapes as in ``auxk_sse``; returns a scalar."""
        return self.auxk_sse(x, x_hat, h, dead, k_aux) / (x - x.mean(0)).pow(2).sum()

    def loss(self, x: Tensor, dead: Tensor, k_aux: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Training loss FVU + AuxK / 2 on a batch x (N, d).

        Returns (loss, fvu, auxk, z (N, n)); z tells which latents fired.
        """
        x_hat, h, z = self(x)
        f = fvu(x, x_hat)
        a = self.auxk_loss(x, x_hat, h, dead, k_aux)
        return f + a / 2, f, a, z
