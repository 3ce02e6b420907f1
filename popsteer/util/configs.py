"""Typed configurations: validation of untrusted values and one-line errors.

Every config in PopSteer is a stdlib dataclass with a docstring under each field; that
docstring is the field's ``--help`` text (``popsteer.app.flags``) and its description in
the sweep schema. Values from outside (a sweep YAML file, a checkpoint header) are checked
by pydantic (``TypeAdapter`` in strict JSON mode: an int is not a string, a bool is not an
int, a section is a mapping) against the same dataclasses; each dataclass carries
``__pydantic_config__ = CONFIG`` so unknown keys are errors. A failure is one
``PopSteerError`` line naming the key. Range checks live in each dataclass's
``__post_init__`` and run in both paths.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from typing import Any, Literal, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

from popsteer.errors import PopSteerError

DEFAULT_SEED = 2020
"""The seed of every random choice unless set (the reference's RecBole seed)."""

CONFIG = ConfigDict(extra="forbid", use_attribute_docstrings=True)
"""pydantic settings of every config dataclass: unknown keys are errors, field docstrings are descriptions."""

T = TypeVar("T")


@functools.lru_cache(maxsize=None)
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """{field name: its docstring} of a config dataclass (empty string when it has none)."""
    props = _adapter(cls).json_schema().get("properties", {})
    return {f.name: " ".join(str(props.get(f.name, {}).get("description", "")).split())
            for f in dataclasses.fields(cls)}


def choices_of(tp: Any) -> tuple | None:
    """The allowed values of a ``Literal[...]`` (or ``Literal[...] | None``) annotation, else None."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    for arg in typing.get_args(tp):
        if typing.get_origin(arg) is Literal:
            return typing.get_args(arg)
    return None


def _or(values) -> str:
    values = [str(v) for v in values]
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


def check_choices(obj: Any, prefix: str = "") -> None:
    """Every ``Literal`` field of a dataclass holds one of its values: else ``unknown <field> 'v': choose ...``."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        allowed = choices_of(hints[f.name])
        value = getattr(obj, f.name)
        if allowed is not None and value not in allowed and not (value is None and type(None) in typing.get_args(hints[f.name])):
            raise PopSteerError(f"unknown {prefix}{f.name} '{value}': choose {_or(allowed)}")


def _key(loc: tuple, where: str) -> str:
    parts = [where] if where else []
    parts += [str(p) for p in loc]
    return ".".join(parts) or "the file"


def describe(err: dict, where: str = "") -> str:
    """One phrase for one pydantic error (``exc.errors()[i]``)."""
    kind, loc, value = err["type"], err["loc"], err.get("input")
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return f"unknown key '{_key(loc, where)}'"
    if kind in ("missing", "missing_keyword_argument"):
        return f"missing key '{_key(loc, where)}'"
    if kind == "literal_error":
        return f"unknown {_key(loc, where)} {value!r}: choose {err.get('ctx', {}).get('expected', '')}"
    if kind in ("dataclass_type", "model_type", "dict_type"):
        return f"key '{_key(loc, where)}' has the wrong type ({value!r}; expected a mapping)"
    return f"key '{_key(loc, where)}' has the wrong type ({value!r}; {err.get('msg', '').lower()})"


def validate(cls: type[T], values: Any, source: str, where: str = "") -> T:
    """``cls`` from an untrusted mapping, or one-line ``PopSteerError`` naming ``source`` (if any) and the key.

    ``where`` is the dotted key of ``values`` inside its file (for messages).
    """
    prefix = f"{source}: " if source else ""
    if not isinstance(values, dict):
        raise PopSteerError(f"{prefix}'{where or 'the file'}' must be a mapping, got {type(values).__name__}")
    try:
        text = json.dumps(values, default=str, allow_nan=True)
        return _adapter(cls).validate_json(text, strict=True)
    except ValidationError as exc:
        raise PopSteerError(f"{prefix}{describe(exc.errors()[0], where)}") from None
    except PopSteerError as exc:  # a range check of a __post_init__
        raise PopSteerError(f"{prefix}{exc}") from None


SEED_MAX = 2**32 - 2
"""Seeds are in [0, 2**32 - 2]: numpy's generators take < 2**32, and some stages use seed + 1."""


def check_at_most(obj: Any, limits: dict[str, float], prefix: str = "") -> None:
    """Each named field (when set) is a finite number <= its limit: else ``<prefix><field> must be <= hi``."""
    for name, hi in limits.items():
        value = getattr(obj, name)
        if value is not None and not (value <= hi and value == value):
            shown = f"{int(hi)}" if float(hi).is_integer() else f"{hi:g}"
            raise PopSteerError(f"{prefix}{name} must be <= {shown}, got {value}")


def check_seeds(obj: Any, *names: str, prefix: str = "") -> None:
    """Each named field is a seed in [0, SEED_MAX]."""
    for name in names:
        value = getattr(obj, name)
        if not 0 <= value <= SEED_MAX:
            raise PopSteerError(f"{prefix}{name} must be in [0, {SEED_MAX}], got {value}")
