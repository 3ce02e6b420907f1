"""Small HTML builders of the neuron browser: escaped text, tables, the page shell, embedded figures.

Pages link each other and ``assets/`` by relative paths (``root`` is ``""`` or ``"../"``), so the
site opens from the file system and from any copy of the folder.
"""

from __future__ import annotations

import html
import json
import math

NAV = (("index.html", "Neurons"), ("tradeoff.html", "Trade-off"), ("users.html", "Users"))
GROUP_NAMES = {"H": "head", "M": "mid", "T": "tail"}


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def num(value, digits: int = 3) -> str:
    """A number for a cell ('' for a missing one)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def cell(text, sort=None, cls: str = "") -> str:
    """A table cell; ``sort``: its sort key (``data-v``), default its text."""
    attrs = f' data-v="{esc(sort)}"' if sort is not None else ""
    attrs += f' class="{cls}"' if cls else ""
    return f"<td{attrs}>{text}</td>"


def table(head: list[tuple[str, str]], rows: list[str], table_id: str = "", cls: str = "") -> str:
    """``head``: (label, sort type ``num``/``text``/``""`` not sortable); ``rows``: ``<tr>`` strings."""
    ths = "".join(f'<th data-type="{t}" tabindex="0">{esc(h)}</th>' if t else f"<th>{esc(h)}</th>" for h, t in head)
    attrs = (f' id="{table_id}"' if table_id else "") + (f' class="{cls}"' if cls else "")
    return f"<table{attrs}><thead><tr>{ths}</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>"


def figure(fig_id: str, fig: dict) -> str:
    """A plotly figure drawn by assets/plots.js from its JSON (no network: plotly.min.js is in assets/)."""
    return f'<div class="plot" id="{esc(fig_id)}" data-figure="{esc(json.dumps(fig, separators=(",", ":")))}"></div>'


def item_html(item: int, titles, group) -> str:
    """An item's title with its head/mid/tail badge and raw token in the tooltip."""
    g = group[item]
    badge = f' <span class="g g{g}" title="{GROUP_NAMES.get(g, "")}">{g}</span>' if g else ""
    return f'<span class="item">{esc(titles[item])}</span>{badge}'


def page(title: str, body: str, root: str = "", plots: bool = False, scripts: tuple[str, ...] = ()) -> str:
    """A whole page: head with the site's CSS (and plotly, when it draws figures), nav bar, body."""
    js = (["assets/plotly.min.js", "assets/plots.js"] if plots else []) + [f"assets/{s}" for s in scripts]
    tags = "".join(f'<script src="{root}{s}"></script>' for s in js)
    nav = " ".join(f'<a href="{root}{href}">{label}</a>' for href, label in NAV)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="stylesheet" href="{root}assets/browse.css">{tags}</head>\n'
            f'<body><nav>PopSteer neuron browser: {nav}</nav><main>\n<h1>{esc(title)}</h1>\n{body}\n</main></body></html>\n')
