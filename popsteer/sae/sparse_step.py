"""One TopK SAE training step with hand-written sparse gradients (fp32 on the CPU, ``decode="sparse"``).

Autograd through ``TopKSAE.loss`` pays for the dense code: the backward of h's gather scatters
into a dense (B, n) gradient and runs two more B x n x d products for W_enc and b_dec. But only
K + k_aux of the n latents per row carry any gradient. This step computes the same loss and
writes the same gradients into ``.grad`` with B x (K + k_aux) x d work past the forward product
(``popsteer.kernels.native.rows``); torch has no such fused TopK SAE step.

With xc = x - b_dec, h = xc W_enc^T + b_enc, I (B, K) the TopK of ReLU(h) with v = ReLU(h)[I],
J (B, A) the top k' = min(k_aux, #dead) of ReLU(h) among the dead latents with u = ReLU(h)[J]
(only its positive entries: ``_aux_top``),
S = ||x - mean(x)||^2 over the batch and c = min(#dead / k_aux, 1):

    x_hat = sum_k v W_dec[I] + b_dec,   e_hat = sum_a u W_dec[J],   e = x - x_hat (no gradient)
    loss  = ||x_hat - x||^2 / S + c ||e_hat - e||^2 / (2 S)

    gx = 2 (x_hat - x) / S,   ge = c (e_hat - e) / S                                   (B, d)
    gv = <gx, W_dec[I]> [v > 0],   gu = <ge, W_dec[J]> [u > 0]                        (B, K), (B, A)
    dW_dec[j] = sum_{I = j} v gx + sum_{J = j} u ge
    dW_enc[j] = sum_{I = j} gv xc + sum_{J = j} gu xc,   db_enc[j] = sum_{I = j} gv + sum_{J = j} gu
    db_dec    = sum_b gx - db_enc W_enc        (x_hat's + b_dec, and xc = x - b_dec)

ReLU's gradient is 1 where h > 0 (v > 0) and 0 elsewhere, as autograd has it for
``torch.where(h > 0, h, 0)``. The dead latents' selection ranks ReLU(h) over the dead columns
only; where fewer than k' of them are positive, the remaining picks are zeros that add nothing,
as the masked dense selection's zeros do. The result equals ``TopKSAE.loss`` + backward to float
rounding (tests/test_sae_sparse_step.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from popsteer.kernels import native
from popsteer.kernels.native.rows import gather_dot, scatter_outer
from popsteer.sae.model import TopKSAE
from popsteer.sae.topk import topk_relu_sparse


def applies(sae: TopKSAE, x: Tensor) -> bool:
    """Whether the sparse step trains this SAE on x: sparse decode, fp32 CPU, native kernels built."""
    return (sae.cfg.decode == "sparse" and x.device.type == "cpu" and x.dtype == torch.float32
            and sae.W_enc.dtype == torch.float32 and native.available())


def _aux_top(h_dead: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The positive entries among the top k of ReLU(h_dead) (B, c), padded with zeros: (B, w) each, w <= k.

    Zero picks add nothing to e_hat and get no gradient, so only the positive ones are kept. A row
    with at most k positive entries keeps all of them, in column order, without ranking (dead
    latents are mostly negative, so this is the common case); rows with more are ranked by the
    native kernel. Padding is (value 0, column 0).
    """
    pos = h_dead > 0  # (B, c)
    count = pos.sum(1)  # (B,)
    width = min(k, int(count.max()))
    values = h_dead.new_zeros((h_dead.shape[0], width))  # (B, w)
    cols = torch.zeros((h_dead.shape[0], width), dtype=torch.int64)  # (B, w)
    if width == 0:
        return values, cols
    rows, where = pos.nonzero(as_tuple=True)  # row-major: each row's positive columns in order
    slot = torch.arange(len(rows)) - (count.cumsum(0) - count)[rows]  # rank of each within its row
    keep = slot < width
    rows, where, slot = rows[keep], where[keep], slot[keep]
    cols[rows, slot] = where
    values[rows, slot] = h_dead[rows, where]
    over = (count > k).nonzero().squeeze(1)  # rows whose positives outnumber k: rank them
    if over.numel():
        values[over], cols[over] = topk_relu_sparse(h_dead.index_select(0, over), k)
    return values, cols


@torch.no_grad()
def loss_and_grads(sae: TopKSAE, x: Tensor, dead: Tensor, k_aux: int,
                   scratch: Tensor | None = None) -> tuple[float, float, float, Tensor]:
    """Training loss FVU + AuxK / 2 on x (B, d), its gradients written to the parameters' ``.grad``.

    ``scratch``: a reused (>= B, n) fp32 buffer for h (a fresh (B, n) allocation costs as much as
    half the forward product here). Returns (loss, fvu, auxk, fired (n,) bool: latents with a
    value > 0 in this batch).
    """
    n = sae.n
    xc = (x - sae.b_dec).contiguous()  # (B, d)
    out = None if scratch is None or scratch.shape[0] < len(x) else scratch[: len(x)]
    h = torch.addmm(sae.b_enc, xc, sae.W_enc.t(), out=out)  # (B, n)
    v, i_top = topk_relu_sparse(h, sae.k)  # (B, K), (B, K): the SAE's own TopK (ReLU) order
    x_hat = sae.decode_sparse(v, i_top)  # (B, d)
    total_var = (x - x.mean(0)).pow(2).sum()
    r = x_hat - x  # (B, d)
    fvu = r.pow(2).sum() / total_var
    gx = (2.0 / total_var) * r  # (B, d)

    gv = gather_dot(gx, sae.W_dec.data, i_top).mul_(v > 0)  # (B, K)
    g_wdec = scatter_outer(gx, v.contiguous(), i_top, n)  # (n, d)
    g_wenc = scatter_outer(xc, gv, i_top, n)  # (n, d)
    g_benc = torch.zeros(n).index_add_(0, i_top.flatten(), gv.flatten())  # (n,)

    auxk = x.new_zeros(())
    dead_cols = dead.nonzero().squeeze(1)  # (n_dead,) ascending
    if dead_cols.numel():
        scale = min(dead_cols.numel() / k_aux, 1.0)
        h_dead = h.index_select(1, dead_cols)  # (B, n_dead), columns in their order
        u, j_local = _aux_top(h_dead, min(k_aux, dead_cols.numel()))  # (B, w), (B, w)
        i_aux = dead_cols[j_local].contiguous()  # (B, w) latent ids
        if i_aux.shape[1] == 0:  # no dead latent is positive in this batch: e_hat = 0, no AuxK gradient
            auxk = scale * r.pow(2).sum() / total_var
        else:
            e_hat = sae.decode_sparse_nobias(u, i_aux)  # (B, d)
            diff = e_hat + r  # e_hat - e with e = x - x_hat
            auxk = scale * diff.pow(2).sum() / total_var
            ge = (scale / total_var) * diff  # (B, d): d(auxk / 2) / d e_hat
            gu = gather_dot(ge, sae.W_dec.data, i_aux).mul_(u > 0)  # (B, w)
            scatter_outer(ge, u.contiguous(), i_aux, n, out=g_wdec)
            scatter_outer(xc, gu, i_aux, n, out=g_wenc)
            g_benc.index_add_(0, i_aux.flatten(), gu.flatten())

    g_bdec = gx.sum(0) - g_benc @ sae.W_enc  # (d,)
    for p, g in ((sae.W_enc, g_wenc), (sae.b_enc, g_benc), (sae.W_dec, g_wdec), (sae.b_dec, g_bdec)):
        p.grad = g
    fired = torch.zeros(n, dtype=torch.bool)
    fired[i_top[v > 0]] = True
    loss = fvu + auxk / 2
    return loss.item(), fvu.item(), auxk.item(), fired
