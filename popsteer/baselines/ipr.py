"""IPR, inverse-popularity re-weighting: ``s_i * 1 / (1 + a * pop_i / max_pop)``.

Negative scores: SASRec's scores are dot products and can be negative, and multiplying a
negative score by a weight < 1 would *raise* it, rewarding popular items. The weight is
therefore applied to the per-user softmax probability ``p_i = exp(s_i) / sum_j exp(s_j)``,
which is positive and ranks items exactly as ``s`` does. Because log is monotone and the
softmax normaliser is the same for all of a user's items, ranking ``p_i * w_i`` equals ranking
``s_i + log w_i = s_i - log(1 + a * pop_i / max_pop)``, which is what is computed (no
overflow, no normaliser). ``a = 0`` gives SASRec's own top-k.
"""

from __future__ import annotations

import numpy as np
import torch

from popsteer.baselines.common import Baseline, RerankContext, finite_topk
from popsteer.errors import PopSteerError

GRID = tuple({"a": a} for a in (0.1, 0.3, 0.5, 1.0))


def ipr_rerank(scores: torch.Tensor, ctx: RerankContext, k: int, a: float) -> torch.Tensor:
    """Top-k of ``softmax(s) * 1 / (1 + a * pop / max_pop)`` per user. scores (U, n_items) -> (U, k)."""
    if not (a >= 0 and np.isfinite(a)):
        raise PopSteerError(f"IPR strength a must be a finite number >= 0, got {a}")
    pop = ctx.groups.counts.astype(np.float64)  # (n_items,)
    log_w = -np.log1p(a * pop / max(pop.max(), 1.0))  # (n_items,) <= 0
    adjusted = scores + torch.as_tensor(log_w, dtype=scores.dtype)  # (U, n_items); -inf stays -inf
    return finite_topk(adjusted, k).indices


IPR = Baseline("ipr", "IPR", ipr_rerank, GRID)
