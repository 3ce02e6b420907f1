"""The schema of a checkpoint's JSON header, one per kind, checked whenever a header is read.

A header is data: copied, edited, cut. ``check_header`` validates it (pydantic, strict: an int is
not a string, a list is not a mapping) before any field is used, so a missing field or one of the
wrong type is one ``PopSteerError`` naming the file and the field, never a KeyError deep in a
stage. Keys not listed here are allowed (a sweep trial's provenance, an import's id mapping);
the nested configs (``sae``, ``arch``, ``data``) are validated by their own dataclasses where
they are used.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from popsteer.errors import PopSteerError

SHA256 = r"^[0-9a-f]{64}$"


class _Header(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    kind: Literal["sasrec", "sae"]
    """sasrec: a recommender (the historical name of every recommender checkpoint); sae: an SAE."""
    dataset: str = Field(min_length=1)
    """The dataset it was trained on."""
    created: str | None = None
    format: str | None = None


class RecommenderHeader(_Header):
    kind: Literal["sasrec"]
    model: str = "sasrec"
    """The registry's name of the model (headers from before it: SASRec)."""
    n_items: int = Field(ge=2)
    """Items including the padding row 0."""
    item_tokens: list[str]
    """The dataset's item token of each row (row 0: [PAD])."""
    arch: dict[str, Any] | None = None
    sasrec: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> "RecommenderHeader":
        if len(self.item_tokens) != self.n_items:
            raise ValueError(f"item_tokens: {len(self.item_tokens)} tokens, but n_items is {self.n_items}")
        if self.arch is None and self.sasrec is None:
            raise ValueError("arch: missing (the model's architecture)")
        return self


class SAEHeader(_Header):
    kind: Literal["sae"]
    d: int = Field(ge=1)
    """Width of the recommender's user representation."""
    n_latents: int = Field(ge=1)
    """The SAE's hidden width (scale * d)."""
    sae: dict[str, Any]
    """The resolved SAEConfig."""
    base_checkpoint: str = Field(min_length=1)
    base_sha256: str = Field(pattern=SHA256)
    base_model: str = "sasrec"
    prefix_stride: int = Field(default=1, ge=1)
    sasrec_train_mode_quirk: bool = False
    report: dict[str, Any] = Field(default_factory=dict)
    history: list[dict[str, Any]] = Field(default_factory=list)
    train_minutes: float = Field(default=0.0, ge=0)


HEADERS: dict[str, type[_Header]] = {"sasrec": RecommenderHeader, "sae": SAEHeader}


def check_header(meta: Any, source: str) -> dict:
    """``meta`` unchanged when it fits its kind's schema, else one ``PopSteerError`` naming ``source`` and the field."""
    if not isinstance(meta, dict):
        raise PopSteerError(f"{source}: the header is not a JSON object")
    kind = meta.get("kind")
    if kind not in HEADERS:
        raise PopSteerError(f"{source}: header field 'kind' is {kind!r}, expected 'sasrec' or 'sae'")
    try:
        HEADERS[kind].model_validate(meta)
    except ValidationError as exc:
        raise PopSteerError(f"{source}: {_phrase(exc.errors()[0])}") from None
    return meta


def _phrase(err: dict) -> str:
    """One pydantic error as ``header field 'x' ...``."""
    field = ".".join(str(p) for p in err["loc"]) or "kind"
    if err["type"] == "value_error":
        return f"header field {str(err['msg']).removeprefix('Value error, ')}"
    if err["type"] == "missing":
        return f"header field '{field}' is missing"
    shown = repr(err.get("input"))
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"header field '{field}': {str(err['msg']).lower()}, got {shown}"
