"""Report sections on their own: one folder per (dataset, model, origin), and the report assembled from them.

``write_section`` puts one evaluated section (``popsteer.stages.report.evaluate_section``) in
``<sections>/<dataset>-<model>-<origin>/``: ``section.md`` (its markdown, links relative to the folder),
``tradeoff.png``, ``grids.csv`` and ``section.json`` (written last: the folder is complete). The JSON holds
what the Findings read (every method's test rows, hypervolumes, the statistics of the picks, the serving
setting, the oracle) and the provenance: the commit of the code that made it, its command, each step's
wall time (from the reproduction's ``walltimes.tsv``), the checkpoints' SHA-256 and the SAE's epochs,
FVU, dead share and stop reason. ``assemble`` builds ``docs/RESULTS.md`` from the committed folders: the
Findings are computed from their ``section.json``, and a section made by code older than the last change
to the report's own modules (``REPORT_MODULES``, by git history) is marked stale.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from pydantic import ConfigDict

from popsteer.errors import PopSteerError
from popsteer.report.findings import findings
from popsteer.report.plots import methods_tradeoff
from popsteer.report.render import closing_note, grid_frame, render_dataset, sae_line
from popsteer.util import checkpoint
from popsteer.util.atomic import write_csv, write_text
from popsteer.util.configs import validate

log = logging.getLogger(__name__)

FORMAT = 1
REPO = Path(__file__).resolve().parents[2]
REPORT_MODULES = ("popsteer/report", "popsteer/stages/report.py", "popsteer/stages/section.py",
                  "popsteer/stages/sections.py", "popsteer/stages/serving.py", "popsteer/stages/oracle.py")
"""The report's own modules (what a section holds and how it is told): a section made by code older than
their last change is stale. A change to a method itself (popsteer/steering, popsteer/baselines) lands
through these when it changes what the report shows."""
METHOD_KEYS = ("name", "label", "describe", "params", "pick", "within_limit", "test", "test_rows", "valid_rows",
               "grid", "spans", "stop", "top_m")


def git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_commit() -> dict:
    """The commit of the code running now and whether its report modules differ from it (uncommitted)."""
    head = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--", *REPORT_MODULES)
    return {"commit": head, "dirty": bool(dirty)}


def origin_of(res: dict) -> str:
    """ours, authors or sweep (as ``scripts/reproduce.sh`` names its pipelines)."""
    if (res["meta"].get("sweep") or {}).get("name"):
        return "sweep"
    return "authors" if res["sasrec_origin"] == "authors" else "ours"


def section_slug(res: dict) -> str:
    """``<dataset>-<model>-<origin>``: origin ours, authors or sweep-<sweep name>."""
    origin = origin_of(res)
    if origin == "sweep":
        origin += "-" + res["meta"]["sweep"]["name"]
    return f"{res['dataset']}-{res['model'].lower()}-{origin}"


def walltimes(path: str | Path | None, step_prefix: str) -> dict[str, float]:
    """step -> seconds, summed over the lines of a reproduction's ``walltimes.tsv`` for this pipeline."""
    out: dict[str, float] = {}
    if path is None or not Path(path).is_file():
        return out
    for line in Path(path).read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0].startswith(step_prefix) and parts[1].isdigit():
            out[parts[0]] = out.get(parts[0], 0.0) + float(parts[1])
    return out


def record(res: dict, command: str, times: dict[str, float]) -> dict:
    """``section.json``: what the Findings read, and the provenance (module docstring)."""
    meta, rep = res["meta"], res["meta"].get("report", {})
    methods = {n: {k: m[k] for k in METHOD_KEYS if k in m} for n, m in res["methods"].items()}
    serving = {str(m): {"methods": {n: {k: r[k] for k in ("name", "label", "describe", "test") if k in r}
                                    for n, r in s["methods"].items()}, "hv": s["hv"]}
               for m, s in (res.get("serving") or {}).items()}
    stats = {k: v for k, v in res["stats"].items() if k.startswith(("vs_", "gini_vs_")) or k in ("best", "labels")}
    base = Path(meta["base_checkpoint"])
    return {"format": FORMAT, **code_commit(), "command": command, "walltimes_s": times,
            "slug": section_slug(res), "title": res["title"], "dataset": res["dataset"], "model": res["model"],
            "sasrec_origin": res["sasrec_origin"],
            "checkpoints": {"sae": {"file": Path(res["checkpoint"]).name,
                                    "sha256": checkpoint.file_sha256(res["checkpoint"])},
                            "base": {"file": base.name, "sha256": meta.get("base_sha256")}},
            "sae": {"line": sae_line(meta), "epochs": len(meta.get("history") or []), "fvu": rep.get("fvu"),
                    "dead_fraction": rep.get("dead_fraction")},
            "base_valid": res["base_valid"], "base_test": res["base_test"], "methods": methods, "hv": res["hv"],
            "stats": stats, "serving": serving, "oracle": res.get("oracle"), "learned": res.get("learned")}


def write_section(res: dict, root: str | Path, command: str, walltimes_file: str | Path | None = None,
                  report_seconds: float | None = None) -> Path:
    """The section's folder under ``root`` (module docstring), built beside it and renamed into place whole, so
    a failure leaves the earlier folder (or none). ``report_seconds``: how long evaluating the section took
    (recorded as the step ``report``)."""
    final = Path(root) / section_slug(res)
    final.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        _fill(folder, res, command, walltimes_file, report_seconds)
        if final.exists():
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            final.rename(old)
            folder.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            folder.rename(final)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    log.info("section %s written to %s", section_slug(res), final)
    return final


def _fill(folder: Path, res: dict, command: str, walltimes_file, report_seconds: float | None) -> None:
    figure = methods_tradeoff(res, folder / "tradeoff.png")
    grids = folder / "grids.csv"
    write_csv(grids, grid_frame(res), index=False)
    write_text(folder / "section.md", render_dataset(res, figure, grids))
    times = walltimes(walltimes_file, f"{res['dataset']}:{res['model'].lower()}:{origin_of(res)}/")
    if report_seconds is not None:
        times[f"{res['dataset']}:{res['model'].lower()}:{origin_of(res)}/report"] = round(report_seconds, 1)
    rec = record(res, command, times)
    write_text(folder / "section.json", json.dumps(rec, indent=2, default=float))


def stale(commit: str | None) -> bool | None:
    """Whether a section made at ``commit`` predates the last change to ``REPORT_MODULES`` (None: unknown)."""
    last = git("log", "-1", "--format=%H", "--", *REPORT_MODULES)
    if not commit or not last:
        return None
    out = subprocess.run(["git", "-C", str(REPO), "merge-base", "--is-ancestor", last, commit], capture_output=True)
    return out.returncode != 0


@dataclass
class SectionRecord:
    """The keys of ``section.json`` the assembly reads (checked before any is used; others pass through)."""

    __pydantic_config__ = ConfigDict(extra="allow")

    format: int
    title: str
    slug: str
    command: str
    walltimes_s: dict[str, float]
    checkpoints: dict[str, dict]
    sae: dict
    base_test: dict[str, dict]
    methods: dict[str, dict]
    hv: dict[str, dict]
    stats: dict


def read_sections(root: str | Path) -> list[tuple[Path, dict, str]]:
    """(folder, section.json, section.md) of every complete section under ``root``, in slug order; an edited
    or cut ``section.json`` is one error naming the file and the key."""
    out = []
    for f in sorted(Path(root).glob("*/section.json")):
        try:
            rec = json.loads(f.read_text())
            text = (f.parent / "section.md").read_text()
        except (OSError, ValueError) as exc:
            raise PopSteerError(f"cannot read the section in {f.parent}: {exc}") from None
        validate(SectionRecord, rec, str(f))
        if rec["format"] != FORMAT:
            raise PopSteerError(f"{f}: section format {rec['format']!r}, this PopSteer reads {FORMAT!r}")
        if "methods" not in rec["hv"] or not rec["methods"]:
            raise PopSteerError(f"{f}: 'hv.methods' and 'methods' must name the section's methods")
        out.append((f.parent, rec, text))
    if not out:
        raise PopSteerError(f"no section folder with a section.json under {root}")
    return out


def assemble(root: str | Path, out: str | Path, head: list[str]) -> dict:
    """``out`` from the sections under ``root``: ``head``, the Findings, every section (stale ones marked),
    the closing note and how each section was made."""
    out = Path(out)
    sections = read_sections(root)
    body, made = [], ["## How each section was made", ""]
    for folder, rec, text in sections:
        rel = folder.resolve().relative_to(out.parent.resolve()) if folder.resolve().is_relative_to(
            out.parent.resolve()) else folder
        for name in ("tradeoff.png", "grids.csv"):
            text = text.replace(f"]({name})", f"]({rel}/{name})").replace(f"`{name}`", f"`{rel}/{name}`")
        old = stale(rec.get("commit"))
        if old or rec.get("dirty"):
            why = "uncommitted code" if rec.get("dirty") else f"commit {str(rec.get('commit'))[:10]}"
            text = text.replace("\n", f"\n\n> **Stale**: made by {why}, older than the report's modules now.\n", 1)
        body.append(text)
        total = sum(rec["walltimes_s"].values())
        made.append(f"- **{rec['title']}** (`{rel}/`): `{rec['command']}` at commit `{str(rec.get('commit'))[:10]}`; "
                    f"SAE `{rec['checkpoints']['sae']['file']}` (SHA-256 {rec['checkpoints']['sae']['sha256'][:12]}…); "
                    f"{rec['sae']['line']}; steps " + (", ".join(f"{k} {v / 60:.1f} min" for k, v in
                                                            rec["walltimes_s"].items()) or "not timed")
                    + (f", {total / 3600:.2f} h in all." if total else "."))
    records = [rec for _, rec, _ in sections]
    write_text(out, "\n".join(head + findings(records) + body + closing_note(records) + made + [""]))
    log.info("assembled %s from %d section(s)", out, len(records))
    return {"report": str(out), "sections": [rec["slug"] for rec in records]}
