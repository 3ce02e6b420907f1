"""How a dataset's interactions are read and filtered: the fields, k-core and rating thresholds."""

from __future__ import annotations

import math
from dataclasses import dataclass

from popsteer.errors import PopSteerError
from popsteer.util.configs import CONFIG, check_at_most


@dataclass
class DataConfig:
    """Reading a RecBole atomic dataset the way RecBole does (docs/METHOD.md §7)."""

    __pydantic_config__ = CONFIG

    user_field: str = "user_id"
    """The user column of <name>.inter (its header's name:type token)."""
    item_field: str = "item_id"
    """The item column."""
    time_field: str = "timestamp"
    """The time column: each user's interactions are ordered by it (ties keep the file order)."""
    k_user: int = 5
    """Users with fewer interactions are dropped (iterated with k_item, RecBole's k-core), in [1, 1000000]."""
    k_item: int = 5
    """Items with fewer interactions are dropped, in [1, 1000000]."""
    rating_field: str = "rating"
    """The rating column, read only when min_rating is set."""
    min_rating: float | None = None
    """Keep only interactions rated at least this (before the k-core filter, as RecBole's val_interval); a finite
    number."""

    def __post_init__(self) -> None:
        for name in ("k_user", "k_item"):
            if getattr(self, name) < 1:
                raise PopSteerError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_at_most(self, {"k_user": 1_000_000, "k_item": 1_000_000})
        if self.min_rating is not None and not math.isfinite(self.min_rating):
            raise PopSteerError(f"min_rating must be a finite number, got {self.min_rating}")
        fields = [self.user_field, self.item_field, self.time_field]
        if len(set(fields)) < 3:
            raise PopSteerError(f"user_field, item_field and time_field must differ, got {fields}")

    def columns(self) -> list[str]:
        """The columns read from the file."""
        return [self.user_field, self.item_field, self.time_field] + ([self.rating_field] if self.min_rating is not None
                                                                       else [])
