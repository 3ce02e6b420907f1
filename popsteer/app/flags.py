"""Command-line flags generated from the typed configs.

A command lists the config fields it exposes (``Flag("train.learning_rate")``: a dotted
path into its config dataclass); each flag takes its type, default and ``--help`` text from
that field (the field's docstring, ``popsteer.util.configs.field_docs``), so no default is
written twice. ``config_from`` builds the config back from the parsed arguments; fields
without a flag keep the dataclass default. Only this module and ``cli`` see argparse.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from popsteer.errors import PopSteerError
from popsteer.util.configs import choices_of, field_docs

MISSING = dataclasses.MISSING
UNSET = object()
"""A Flag's default meaning: keep the config field's default."""


@dataclass(frozen=True)
class Flag:
    """One command-line flag bound to a config field."""

    path: str
    """Dotted path of the field in the command's config, e.g. ``train.learning_rate``."""
    names: tuple[str, ...] = ()
    """Flag names; default ``--kebab-name`` and ``--snake_name`` of the field."""
    help: str | None = None
    """Overrides the field's docstring."""
    default: Any = UNSET
    """Overrides the field's default for this command."""
    choices: tuple | None = None
    """Let argparse refuse other values (the config refuses them too, with its own message)."""
    action: str | None = None
    """``append`` for a repeatable flag filling a list field."""
    positional: bool = False

    def flag_names(self) -> list[str]:
        if self.positional:
            return [self.path.rsplit(".", 1)[-1]]
        if self.names:
            return list(self.names)
        name = self.path.rsplit(".", 1)[-1]
        kebab = "--" + name.replace("_", "-")
        return [kebab] if "_" not in name else [kebab, "--" + name]

    @property
    def dest(self) -> str:
        return self.path.replace(".", "__")


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field(cls: type, path: str) -> tuple[type, dataclasses.Field, Any]:
    """(owning dataclass, field, annotation) of a dotted path."""
    owner = cls
    parts = path.split(".")
    for part in parts[:-1]:
        owner = _hints(owner)[part]
    f = next(f for f in dataclasses.fields(owner) if f.name == parts[-1])
    return owner, f, _hints(owner)[parts[-1]]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _scalar(tp: Any) -> tuple[Any, bool]:
    """(the type argparse converts to, whether None is allowed) of an annotation."""
    args = typing.get_args(tp)
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        tp = next(a for a in args if a is not type(None))
    if choices_of(tp) is not None:
        tp = type(choices_of(tp)[0])
    return tp, optional


def add_flags(parser: argparse.ArgumentParser, cls: type, flags: list[Flag]) -> None:
    """Add one argparse argument per flag, typed and documented from ``cls``'s fields."""
    for flag in flags:
        owner, f, tp = _field(cls, flag.path)
        default = _default(f) if flag.default is UNSET else flag.default
        doc = flag.help if flag.help is not None else field_docs(owner)[f.name]
        kwargs: dict[str, Any] = {"dest": flag.dest} if not flag.positional else {}
        allowed = choices_of(tp)
        if allowed and flag.choices is None:
            doc = f"{doc} One of: {', '.join(map(str, allowed))}." if doc else f"One of: {', '.join(map(str, allowed))}."
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if default is True else "store_true"
        elif typing.get_origin(_scalar(tp)[0]) is list:  # list[...] or list[...] | None
            (inner,) = typing.get_args(_scalar(tp)[0])
            kwargs["type"] = _scalar(inner)[0]
            if flag.action:
                kwargs["action"] = flag.action
            else:
                kwargs["nargs"] = "+"
        else:
            kwargs["type"] = _scalar(tp)[0]
        if flag.choices is not None:
            kwargs["choices"] = flag.choices
        if tp is not bool and not flag.positional:
            kwargs["metavar"] = f.name.upper()
        if default is MISSING:
            if not flag.positional:
                kwargs["required"] = True
        else:
            kwargs["default"] = None if flag.action == "append" else default
            if default not in (None, False, [], ()):
                doc = f"{doc} (default: {default})" if doc else f"default: {default}"
        parser.add_argument(*flag.flag_names(), help=doc or None, **kwargs)


def _value(ns: argparse.Namespace, flag: Flag) -> Any:
    return getattr(ns, flag.path.rsplit(".", 1)[-1] if flag.positional else flag.dest)


_DOTTED = re.compile(r"(?<![\w./-])[a-z_]+(?:\.[a-z_]+)+(?![\w/-])")
"""A dotted config key in a message (``stages.steering.ns``), not a file name (no digits, dashes or slashes)."""


def flag_names_in(message: str, flags: list[Flag]) -> str:
    """``message`` with each dotted config key that a flag sets named by that flag instead (``--ns``)."""
    by_field = {f.path.rsplit(".", 1)[-1]: f for f in flags if not f.positional}
    by_path = {f.path: f for f in flags if not f.positional}

    def name(match: re.Match) -> str:
        key = match.group(0)
        flag = by_path.get(key) or by_field.get(key.rsplit(".", 1)[-1])
        return flag.flag_names()[0] if flag else key

    return _DOTTED.sub(name, message)


def config_from(cls: type, ns: argparse.Namespace, flags: list[Flag], prefix: str = "") -> Any:
    """Build ``cls`` from parsed arguments: flagged fields from ``ns``, the rest their defaults; a refused value
    is reported with its flag's name (``flag_names_in``)."""
    if prefix:
        return _config_from(cls, ns, flags, prefix)
    try:
        return _config_from(cls, ns, flags, prefix)
    except PopSteerError as exc:
        raise PopSteerError(flag_names_in(str(exc), flags)) from None


def _config_from(cls: type, ns: argparse.Namespace, flags: list[Flag], prefix: str = "") -> Any:
    given = {f.path: f for f in flags}
    kwargs = {}
    for f in dataclasses.fields(cls):
        path = prefix + f.name
        if path in given:
            value = _value(ns, given[path])
            if value is None and given[path].action == "append":
                continue
            if value == "" or (isinstance(value, list) and "" in value):  # e.g. -p "$SAE" with SAE unset
                raise PopSteerError(f"{given[path].flag_names()[0]} is empty: give a value")
            kwargs[f.name] = value
        elif any(p.startswith(path + ".") for p in given):
            kwargs[f.name] = _config_from(_hints(cls)[f.name], ns, flags, path + ".")
    return cls(**kwargs)
