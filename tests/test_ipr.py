"""IPR in the reference's form: the raw scores times ``1 / (1 + a pop / max_pop)``, against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from popsteer.baselines import RerankContext
from popsteer.baselines.ipr import ipr_rerank
from popsteer.errors import PopSteerError
from popsteer.eval.popularity import PopularityGroups


def ctx_of(counts: np.ndarray, n_users: int) -> RerankContext:
    return RerankContext(PopularityGroups.from_counts(counts), np.arange(n_users), np.full((n_users, 3), 1 / 3))


def test_raw_space_is_the_reference_formula():
    rng = np.random.default_rng(0)
    counts = np.r_[0, rng.integers(1, 500, 80)]
    s = torch.as_tensor(rng.normal(2.0, 3.0, (40, 81)))
    s[:, 0] = -torch.inf
    for a in (0.1, 1.0, 7.5):
        w = 1.0 / (1.0 + counts * (a / counts.max()))  # the reference: scores * (1 / (pop * (a / max) + 1))
        want = torch.topk(s * torch.as_tensor(w), 10, dim=1).indices
        assert torch.equal(ipr_rerank(s, ctx_of(counts, 40), 10, a=a), want)


def test_raw_penalty_scales_with_the_score_and_softmax_does_not():
    """Two items, popular (count 100) and unpopular (count 1): raw re-weighting flips the pair at a = 1
    when scores are large, the softmax form (penalty <= log 2) does not."""
    counts = np.array([0, 100, 1])
    s = torch.tensor([[-torch.inf, 10.0, 6.0]], dtype=torch.float64)
    ctx = ctx_of(counts, 1)
    assert ipr_rerank(s, ctx, 1, a=1.0, space="raw").item() == 2  # 10 * 0.5 = 5 < 6 * 0.99
    assert ipr_rerank(s, ctx, 1, a=1.0, space="softmax").item() == 1  # 10 - log 2 > 6 - log 1.01


def test_unknown_space_is_refused():
    with pytest.raises(PopSteerError, match="IPR space"):
        ipr_rerank(torch.zeros((1, 3)), ctx_of(np.array([0, 1, 2]), 1), 1, a=1.0, space="log")

