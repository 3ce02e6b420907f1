"""IPR, inverse-popularity re-weighting: ``s_i * 1 / (1 + a * pop_i / max_pop)``, as the reference does it.

The reference (parepic/PopSteer, ``SASRec.simple_reranker``) multiplies the model's *raw*
scores by the weight, and PopSteer follows it (``space="raw"``, the registered method). A
popular item's score then loses ``s_i (1 - w_i)``: a penalty that grows with the score's own
magnitude, so on SASRec's top items (scores of 5-15 on ML-1M) a = 1 halves the most popular
item's score. For a negative score the same weight *raises* it (towards 0); this matters
only to a user with fewer than k positive scores, since a negative score stays below every
positive one.

``space="softmax"`` is PopSteer's earlier form: the weight multiplies the per-user softmax
probability, i.e. ranks ``s_i - log(1 + a * pop_i / max_pop)``, a penalty of at most
``log(1 + a)`` whatever the score's scale; it moves far less (ML-1M, a = 1: Gini@10 -3.3%
against the reference's -11.2%). ``a = 0`` gives the model's own top-k in both.
"""

from __future__ import annotations

import numpy as np
import torch

from popsteer.baselines.common import Baseline, RerankContext, finite_topk
from popsteer.baselines.extension import grow
from popsteer.errors import PopSteerError

GRID = tuple({"a": a} for a in (0.1, 0.3, 0.5, 1.0))
SPACES = ("raw", "softmax")


def ipr_rerank(scores: torch.Tensor, ctx: RerankContext, k: int, a: float, space: str = "raw") -> torch.Tensor:
    """Top-k of the re-weighted scores per user. scores (U, n_items), padding at -inf -> (U, k)."""
    if not (a >= 0 and np.isfinite(a)):
        raise PopSteerError(f"IPR strength a must be a finite number >= 0, got {a}")
    if space not in SPACES:
        raise PopSteerError(f"IPR space must be one of {', '.join(SPACES)}, got {space!r}")
    pop = ctx.groups.counts.astype(np.float64)  # (n_items,)
    ratio = a * pop / max(pop.max(), 1.0)  # (n_items,) >= 0
    if space == "raw":
        adjusted = scores * torch.as_tensor(1.0 / (1.0 + ratio), dtype=scores.dtype)  # (U, n_items); -inf stays -inf
    else:
        adjusted = scores - torch.as_tensor(np.log1p(ratio), dtype=scores.dtype)
    return finite_topk(adjusted, k).indices


IPR = Baseline("ipr", "IPR", ipr_rerank, GRID, extend=grow("a", 2.0, 1e4))
"""Extension (fair grids): a doubles beyond the grid's largest, up to 1e4."""
