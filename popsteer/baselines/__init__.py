"""Post-processing re-rankers on the frozen model's scores (docs/METHOD.md §6), each with its grid
and the rule that extends it (``popsteer.baselines.extension``).

``BASELINES`` maps a name to a :class:`Baseline`; every re-ranker has the signature
``rerank(scores (U, n_items), ctx: RerankContext, k, **params) -> (U, k)`` item ids, and is
tuned on validation with the same rule as PopSteer (``popsteer.baselines.tuning``).
"""

from __future__ import annotations

from popsteer.baselines.calibration import PCT
from popsteer.baselines.common import Baseline, RerankContext, history_shares, split_context
from popsteer.baselines.direction import PPD, SPREE
from popsteer.baselines.fair import FAIR
from popsteer.baselines.ipr import IPR
from popsteer.baselines.pmmf import PMMF
from popsteer.baselines.random_topm import RANDOM
from popsteer.errors import PopSteerError

BASELINES: dict[str, Baseline] = {b.name: b for b in (IPR, FAIR, PCT, RANDOM, PPD, SPREE, PMMF)}


def get_baseline(name: str) -> Baseline:
    try:
        return BASELINES[name]
    except KeyError:
        raise PopSteerError(f"unknown baseline '{name}': choose one of {', '.join(BASELINES)}") from None


__all__ = ["BASELINES", "Baseline", "RerankContext", "get_baseline", "history_shares", "split_context"]
