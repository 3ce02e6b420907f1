"""Markdown building blocks of the report: number formatting, escaping, tables."""

from __future__ import annotations

import math

import numpy as np


def fmt(v, key: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{v:.1f}" if key.startswith("arp") else f"{v:.4f}"


def md(text: str) -> str:
    """Escape markdown emphasis in a label (``FA*IR``)."""
    return text.replace("*", r"\*")


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table; ``|`` inside a cell is escaped."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", r"\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows)])
