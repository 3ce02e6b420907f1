"""The HTTP API's request model: pydantic checks every field, so a bad request is a 422 naming it.

Checks that need the bundle (an unknown user or item id, a vector of the wrong length, N above the SAE's
width, k above the catalogue) are made by ``popsteer.serve.engine`` and raised as ``RequestError``, which
the app turns into the same 422 body as pydantic's: ``{"detail": [{"loc": ["body", FIELD], "msg": ...}]}``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from popsteer.stages.config import ALPHA_MAX

K_MAX = 1000
"""The longest list a request may ask for."""
VARIANTS = ("replace", "preserve", "learned")
"""replace: the paper's x' = decode(steer(h)); preserve: x' = x + decode(steer(h)) - decode(h); learned: preserve
with the delta fitted at trade-off weight ``lam`` (docs/METHOD.md §4b) instead of Eq. 4's."""


class RequestError(ValueError):
    """A request field the bundle refuses (422)."""

    def __init__(self, field: str, msg: str) -> None:
        super().__init__(f"{field}: {msg}")
        self.field, self.msg = field, msg

    def detail(self) -> list[dict]:
        return [{"loc": ["body", self.field], "msg": self.msg, "type": "value_error"}]


class RecommendRequest(BaseModel):
    """One user to recommend for: exactly one of ``user_id``, ``history`` or ``vector``; the steering knobs
    default to the bundle's (the validation-tuned pick, else the paper's defaults)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    user_id: str | None = Field(None, description="A known user's id (the dataset's raw user token).")
    history: list[str] | None = Field(None, min_length=1, max_length=10_000,
                                      description="Item ids (raw tokens), oldest first; sequential models only.")
    vector: list[float] | None = Field(None, min_length=1, description="A raw user vector x of length d.")
    k: int = Field(10, ge=1, le=K_MAX, description="How many items to return.")
    alpha: float | None = Field(None, ge=0, le=ALPHA_MAX, description="Steering strength (0: unsteered).")
    alpha_unpop: float | None = Field(None, ge=0, le=ALPHA_MAX,
                                      description="Strength of the boosted (unpopular) neurons; default alpha.")
    num_neurons: int | None = Field(None, ge=1, description="How many neurons are steered (top |Cohen's d|).")
    variant: Literal["replace", "preserve", "learned"] | None = Field(
        None, description="replace (paper), preserve, or learned (a fitted delta; see lam).")
    lam: float | None = Field(None, ge=0, le=1e6, description="learned: the trade-off weight of the fitted delta, one "
                              "of the bundle's (GET /health lists them); default its validation pick.")

    @model_validator(mode="after")
    def _one_input(self) -> "RecommendRequest":
        given = [name for name in ("user_id", "history", "vector") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of user_id, history, vector (got {', '.join(given) or 'none'})")
        return self
