"""Record benchmark figures in bench/results.json and the table in bench/RESULTS.md."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
JSON = HERE / "results.json"
MD = HERE / "RESULTS.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def machine() -> str:
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    import os

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, no GPU, Python {platform.python_version()}"


def record(name: str, value, unit: str, goal: str, met: bool | None, command: str, note: str = "",
           where: str | None = None) -> None:
    rows = json.loads(JSON.read_text()) if JSON.exists() else []
    rows = [r for r in rows if r["name"] != name]
    rows.append({"name": name, "value": value, "unit": unit, "goal": goal, "met": met, "command": command,
                 "date": _dt.date.today().isoformat(), "machine": where or machine(), "note": note})
    rows.sort(key=lambda r: r["name"])
    tmp = JSON.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rows, indent=2) + "\n")
    tmp.replace(JSON)
    _render(rows)


def _render(rows: list[dict]) -> None:
    fmt = lambda v: "not measured" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
    lines = [BEGIN, "| name | value | unit | goal | met | date | command | details |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "n/a"}[r["met"]]
        lines.append(f"| `{r['name']}` | {fmt(r['value'])} | {r['unit']} | {r['goal']} | {met} | {r['date']} | `{r['command']}` | {r.get('note', '')} ({r.get('machine', '')}) |")
    lines.append(END)
    text = MD.read_text() if MD.exists() else "# Benchmark results\n\n" + BEGIN + "\n" + END + "\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    MD.write_text(head + "\n".join(lines) + tail)


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=HERE).stdout.strip()
    except OSError:
        return "unknown"
