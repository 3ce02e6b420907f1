"""Full-softmax cross-entropy of ``h @ weight.T``, fused with its gradient and streamed over row chunks.

``F.cross_entropy(h @ weight.T, targets)`` materialises the (P, n_items) logits, their fp32 copy under
autocast, the log-softmax and, in the backward pass, a zero-filled gradient of the same size. Here each
chunk of rows is scored, turned into its logit gradient ``softmax - onehot`` in place and multiplied
back at once, so no more than ``chunk_elements`` logits exist at a time and the backward pass only
scales the two saved gradients. On catalogs too large for ``ONE_PASS_MIN_ROWS`` rows of logits per
chunk, the items are tiled too: an online-logsumexp pass, then a gradient pass (4 matmuls instead of 3).
Measured: an ML-1M training step 1.11x faster (``bench/sasrec_step.py``), 4.25x less peak memory at
100,000 items (``bench/sasrec_catalog_memory.py``).
"""

from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 21  # logits per chunk (8 MiB in fp32): ~600 rows of ML-1M
ONE_PASS_MIN_ROWS = 32  # fewer rows per chunk than this re-read the item table too often: tile the items
TILED_ROWS = 256  # rows per chunk when the items are tiled


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The matmul dtype autocast would pick here (x's own dtype outside autocast)."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


def _one_pass(hs, wc, ts, grad_h, grad_w, with_grad: bool) -> torch.Tensor:
    """Rows ``hs`` (c, d) against every item at once: their summed loss; gradients added in place."""
    p = torch.softmax((hs @ wc.T).float(), dim=1)  # (c, n)
    r = torch.arange(len(ts), device=hs.device)
    pt = p[r, ts]  # (c,)
    low = pt < 1e-30  # -log(pt) would lose precision or overflow: exact logsumexp for these rows
    nll = -pt.clamp_min(1e-30).log()
    if bool(low.any()):
        lg = (hs[low] @ wc.T).float()
        nll[low] = torch.logsumexp(lg, dim=1) - lg[torch.arange(len(lg), device=hs.device), ts[low]]
    if with_grad:
        p[r, ts] = pt - 1.0  # d loss_i / d logits_i = softmax - onehot
        g = p.to(wc.dtype)
        grad_h += g @ wc  # (c, d)
        grad_w += g.T @ hs  # (n, d), accumulated in fp32
    return nll.sum()


def _tiled(hs, wc, ts, grad_h, grad_w, with_grad: bool, cols: int) -> torch.Tensor:
    """As ``_one_pass`` over item tiles of ``cols``: an online logsumexp pass, then a gradient pass."""
    c, n = hs.shape[0], wc.shape[0]
    m = torch.full((c,), -torch.inf, device=hs.device)
    z = torch.zeros(c, device=hs.device)
    lt = torch.zeros(c, device=hs.device)  # the target logits
    for j in range(0, n, cols):
        lg = (hs @ wc[j:j + cols].T).float()  # (c, cols)
        m_new = torch.maximum(m, lg.amax(1))
        z = z * torch.exp(m - m_new) + torch.exp(lg - m_new[:, None]).sum(1)
        m = m_new
        inside = (ts >= j) & (ts < j + cols)
        lt[inside] = lg[inside, ts[inside] - j]
    lse = m + z.log()  # (c,)
    if with_grad:
        for j in range(0, n, cols):
            p = (hs @ wc[j:j + cols].T).float().sub_(lse[:, None]).exp_()  # (c, cols) softmax
            inside = (ts >= j) & (ts < j + cols)
            p[inside, ts[inside] - j] -= 1.0
            g = p.to(wc.dtype)
            grad_h += g @ wc[j:j + cols]
            grad_w[j:j + cols] += g.T @ hs
    return (lse - lt).sum()


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk_elements: int, with_grad: bool, cdt: torch.dtype) -> torch.Tensor:
        # h: (P, d); weight: (n, d); targets: (P,) int64 in [0, n)
        hc, wc = h.detach().to(cdt), weight.detach().to(cdt)
        n_items = weight.shape[0]
        rows = chunk_elements // n_items
        tiled = rows < min(ONE_PASS_MIN_ROWS, h.shape[0])  # a large catalog: tiles of items too
        if tiled:
            rows = TILED_ROWS
            cols = max(1, chunk_elements // rows)  # items per tile (< n_items)
        grad_h = torch.zeros(h.shape if with_grad else (0,), dtype=torch.float32, device=h.device)  # (P, d)
        grad_w = torch.zeros(weight.shape if with_grad else (0,), dtype=torch.float32, device=h.device)  # (n, d)
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        for s in range(0, h.shape[0], rows):
            chunk = (hc[s:s + rows], wc, targets[s:s + rows], grad_h[s:s + rows], grad_w, with_grad)
            loss += _tiled(*chunk, cols) if tiled else _one_pass(*chunk)
        n = max(h.shape[0], 1)
        ctx.save_for_backward(grad_h.div_(n), grad_w.div_(n))
        ctx.dtypes = (h.dtype, weight.dtype)
        return loss / n

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return (grad_h * grad_out).to(ctx.dtypes[0]), (grad_w * grad_out).to(ctx.dtypes[1]), None, None, None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """Mean ``F.cross_entropy(h @ weight.T, targets)`` without holding the full logits.

    Matmuls run in the autocast dtype when autocast is on (as ``h @ weight.T`` would), the softmax
    in fp32 (as autocast runs ``cross_entropy``).

    Args:
        h: (P, d) float; weight: (n, d) float; targets: (P,) int64 class ids in [0, n).
    Returns:
        () fp32 mean loss; differentiable in h and weight (the gradients are computed in the forward pass).
    """
    if h.shape[0] == 0:
        raise ValueError("linear_cross_entropy needs at least one row")
    with_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    return _LinearCrossEntropy.apply(h, weight, targets, chunk_elements, with_grad, _compute_dtype(h))
