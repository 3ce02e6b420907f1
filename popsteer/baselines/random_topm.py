"""Random re-ranking: k items drawn uniformly without replacement from each user's top-m.

Seeded and independent of batching: a user's draw is a function of (seed, the user's row
in the split, m) only, through a counter-based hash (SplitMix64) rather than a stateful
generator.
"""

from __future__ import annotations

import numpy as np
import torch

from popsteer.baselines.common import Baseline, RerankContext, finite_topk
from popsteer.baselines.extension import grow
from popsteer.errors import PopSteerError
from popsteer.util.configs import DEFAULT_SEED

GRID = tuple({"m": m} for m in (15, 30, 50, 75, 100))
SEED = DEFAULT_SEED


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def uniform_keys(seed: int, users: np.ndarray, m: int) -> np.ndarray:
    """(U, m) pseudo-random keys; row u depends only on (seed, users[u], m)."""
    base = _splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ _splitmix64(np.asarray(users, dtype=np.uint64)))
    with np.errstate(over="ignore"):
        return _splitmix64(base[:, None] * np.uint64(1 << 8) + np.arange(m, dtype=np.uint64)[None, :])


def random_rerank(scores: torch.Tensor, ctx: RerankContext, k: int, m: int, seed: int = SEED) -> torch.Tensor:
    """k random items of each user's top-m, in random order. scores (U, n_items) -> (U, k)."""
    if m < k:
        raise PopSteerError(f"random re-ranking needs m >= k, got m={m}, k={k}")
    m = min(m, int(torch.isfinite(scores).sum(1).min()))  # never draw a masked (-inf) item
    top = finite_topk(scores, m).indices  # (U, m)
    keys = uniform_keys(seed, ctx.users, m)  # (U, m)
    order = torch.as_tensor(np.argsort(keys, axis=1, kind="stable")[:, :k].astype(np.int64))  # (U, k)
    return top.gather(1, order)


RANDOM = Baseline("random", "Random top-m", random_rerank, GRID, extend=grow("m", 2.0, None, integer=True))
"""Grid extension: m doubles up to the catalogue (n_items - 1: a uniform draw of all items)."""
