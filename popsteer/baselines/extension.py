"""How a re-ranker's grid grows beyond its strongest point (docs/METHOD.md §6, "fair grids").

``tune_baseline(span_gini=...)`` keeps appending ``rule(last point, n_items)`` until the
method's validation Gini@10 reaches PopSteer's lowest, its NDCG@10 has fallen by half, or the
rule returns None (the parameter's bound). Two kinds of rule:

- ``grow(key, factor, cap)``: an unbounded strength, multiplied by ``factor`` each step and
  clipped at ``cap`` (the last point is ``cap`` itself); ``cap=None`` caps at the catalogue
  size ``n_items - 1`` (random top-m's m);
- ``toward(points)``: a bounded parameter (PCT's lam <= 1, FA*IR's p < 1): the listed points,
  in order, after the grid's own.

Every other parameter of the last point is kept.
"""

from __future__ import annotations

from typing import Callable

Rule = Callable[[dict, int], "dict | None"]


def grow(key: str, factor: float = 2.0, cap: float | None = None, integer: bool = False) -> Rule:
    """``last[key] * factor``, clipped at ``cap`` (None: ``n_items - 1``); None once ``last[key] >= cap``."""
    if factor <= 1:
        raise ValueError(f"a growth factor must exceed 1, got {factor}")

    def rule(last: dict, n_items: int) -> dict | None:
        bound = n_items - 1 if cap is None else cap
        value = last[key]
        if value >= bound:
            return None
        nxt = min(value * factor, bound)
        return {**last, key: int(round(nxt)) if integer else float(nxt)}

    return rule


def toward(points: tuple[dict, ...]) -> Rule:
    """The listed points in order: the first after ``last`` (or the first one when ``last`` is not
    listed, i.e. it is the grid's own last point); None after the last listed point."""
    points = tuple(dict(p) for p in points)

    def rule(last: dict, n_items: int) -> dict | None:
        idx = next((i for i, p in enumerate(points) if all(last.get(k) == v for k, v in p.items())), -1)
        if idx + 1 >= len(points):
            return None
        return {**last, **points[idx + 1]}

    return rule
