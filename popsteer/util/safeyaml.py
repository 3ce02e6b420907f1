"""YAML from an untrusted file: plain values only, bounded in size, never expanded.

A sweep file is data from whoever wrote it. YAML anchors and aliases (``&a``, ``*a``) let a
1.4 KB file name the same list billions of times ("billion laughs"): harmless while parsed, but
every later step that walks the values (validation, JSON, logging) expands it into gigabytes.
PopSteer's files never need them, so ``load_yaml`` refuses any anchor or alias at the first one
it meets, before a single value is built, as well as a file over ``MAX_BYTES`` or nested deeper
than ``MAX_DEPTH``, and a mapping that gives a key twice (YAML would keep the last silently).
Every refusal is one ``PopSteerError`` naming the source and the line.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent

from popsteer.errors import PopSteerError

MAX_BYTES = 1 << 20
"""A sweep file is a few KB; anything over 1 MiB is refused unread."""
MAX_DEPTH = 64
"""Nested mappings and lists deeper than this are refused (the composer recurses per level)."""


class _Refused(Exception):
    def __init__(self, line: int, why: str) -> None:
        super().__init__(why)
        self.line, self.why = line, why


class _PlainLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors, aliases (and so merge keys) and deep nesting while composing."""

    def compose_node(self, parent, index):  # noqa: D102 (PyYAML's hook)
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, AliasEvent):
            raise _Refused(line, f"YAML alias '*{event.anchor}' is not allowed (write the value out)")
        if isinstance(event, (ScalarEvent, CollectionStartEvent)) and event.anchor is not None:
            raise _Refused(line, f"YAML anchor '&{event.anchor}' is not allowed (write the value out)")
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(line, f"values nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):  # noqa: D102 (PyYAML's hook)
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise _Refused(key_node.start_mark.line + 1,
                               f"key {key!r} given twice (first on line {seen[key]}); keep one")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml(text: str, source: str) -> Any:
    """The plain values of ``text`` (a YAML document); ``source`` names it in errors."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise PopSteerError(f"{source}: larger than {MAX_BYTES // 1024} KB; not read")
    try:
        return yaml.load(text, Loader=_PlainLoader)  # noqa: S506 (a SafeLoader subclass)
    except _Refused as exc:
        raise PopSteerError(f"{source}: line {exc.line}: {exc.why}") from None
    except yaml.YAMLError as exc:
        raise PopSteerError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise PopSteerError(f"{source}: values nested too deeply") from None
