"""``popsteer status``: what a dataset's artifacts are, as a plain-text table.

Three sections: the checkpoints in the output folder (kind, dataset, size, date and key
metrics, read from the safetensors header only), the analysis and steering reports in
``<data-dir>/<dataset>/``, and the last platform sweep under ``<out-dir>/sweeps/``
(``<storage>/<name>/``: its ``sweep_summary.json``, or the stage files of one that stopped).
A file that cannot be read is listed as unreadable, never raised.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from popsteer.util import checkpoint
from popsteer.errors import PopSteerError
from popsteer.models.registry import model_of
from popsteer.steering.results import read_summary


REPORT_PATTERNS = ("analysis.json", "cohens_d.csv", "row_stats_*.csv", "neuron_top_items.csv",
                   "steer_*.csv", "steering_*.csv")
KIND_LABELS = {"sasrec": "SASRec", "sae": "SAE"}
UNKNOWN = "?"


@dataclass
class Row:
    """One artifact: what it is, which dataset, its file, size, date and a short summary."""

    kind: str
    dataset: str
    path: Path
    size: int
    date: str
    info: str


# ------------------------------------------------------------------ small helpers


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _mtime(path: Path) -> str:
    try:
        return _dt.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    except (OSError, ValueError, OverflowError):
        return UNKNOWN


def _date(created: object, path: Path) -> str:
    try:
        return _dt.datetime.fromisoformat(str(created)).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return _mtime(path)


def _fmt(value: object, spec: str = ".4f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else UNKNOWN


def _row(kind: str, dataset: str, path: Path, info: str, created: object = None) -> Row:
    try:
        size = path.stat().st_size
    except OSError:  # a dangling link, a file removed meanwhile
        size = 0
    return Row(kind, dataset, path, size, _date(created, path), info)


def _unreadable(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"unreadable: {text if isinstance(exc, PopSteerError) else f'{type(exc).__name__}: {text}'}"[:200]


def _describe(path: Path, fn) -> str:
    """``fn(path)``, or the reason it failed: one odd file is listed as unreadable, never raised."""
    try:
        return fn(path)
    except Exception as exc:  # noqa: BLE001 (status lists whatever is there)
        return _unreadable(exc)


# ------------------------------------------------------------------ checkpoints


def checkpoint_info(meta: dict) -> str:
    """Key metrics of a checkpoint's header."""
    if meta.get("kind") == "sasrec":
        metrics, hp = meta.get("metrics") or {}, meta.get("sasrec") or {}
        parts = [f"{split} ndcg@10 {_fmt(metrics[split]['ndcg@10'])}" for split in ("valid", "test")
                 if "ndcg@10" in (metrics.get(split) or {})]
        if "best_epoch" in meta:
            parts.append(f"best epoch {meta['best_epoch']}")
        model = meta.get("model", "sasrec")
        try:
            spec, arch = model_of(meta)
            d = spec.d(arch)
        except PopSteerError:
            d = hp.get("hidden_size", UNKNOWN)
        return ", ".join([model, *(parts or ["no metrics recorded"]), f"d={d}"])
    if meta.get("kind") == "sae":
        cfg, rep = meta.get("sae") or {}, meta.get("report") or {}
        return (f"k={cfg.get('k', UNKNOWN)} s={cfg.get('scale', UNKNOWN)} n={meta.get('n_latents', UNKNOWN)}, "
                f"fvu {_fmt(rep.get('fvu'))}, dead {_fmt(rep.get('dead_fraction'), '.1%')}, "
                f"valid ndcg@10 {_fmt(rep.get('valid_ndcg@10_sae'))}")
    return ""


def checkpoints(out_dir: Path, dataset: str | None = None) -> list[Row]:
    """The ``.safetensors`` files directly in ``out_dir`` (unreadable ones included)."""
    rows = []
    for path in sorted(out_dir.glob("*.safetensors")) if out_dir.is_dir() else []:
        try:
            meta = checkpoint.read_meta(path)  # checked against the header's schema
        except Exception as exc:  # noqa: BLE001 (status lists whatever is there)
            rows.append(_row(UNKNOWN, UNKNOWN, path, _unreadable(exc)))
            continue
        if dataset and meta.get("dataset") != dataset:
            continue
        kind = KIND_LABELS.get(meta.get("kind"), str(meta.get("kind")))
        rows.append(_row(kind, str(meta.get("dataset", UNKNOWN)), path, _describe(meta, checkpoint_info),
                         meta.get("created")))
    return rows


# ------------------------------------------------------------------ reports


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def report_info(path: Path) -> str:
    """A one-line summary of an analysis or steering report (ValueError/OSError when unreadable)."""
    name = path.name
    if name == "analysis.json":
        s = read_summary(path)
        return (f"{s['n_positive']} of {s['n_neurons']} neurons d > 0, median |d| {_fmt(s['median_abs_d'], '.3f')}, "
                f"SAE {Path(str(s.get('sae_checkpoint', UNKNOWN))).name}")
    rows = _csv_rows(path)
    if name.startswith("steer_") or name == "steering_tuned_test.csv":
        by_name = {r.get("", ""): r for r in rows}
        label = next((n for n in ("popsteer_tuned", "popsteer") if n in by_name), None)
        if label is None:
            raise ValueError("no popsteer row")
        r = by_name[label]
        return f"{label}: ndcg@10 {float(r['ndcg@10']):.4f}, gini@10 {float(r['gini@10']):.4f}"
    if name.startswith("steering_grid"):
        return f"{len(rows)} grid points"
    return f"{len(rows)} neurons" if name != "neuron_top_items.csv" else f"{len(rows)} rows"


def report_datasets(data_dir: Path) -> list[str]:
    """Sub-folders of ``data_dir`` holding any report file."""
    if not data_dir.is_dir():
        return []
    return sorted(d.name for d in data_dir.iterdir()
                  if d.is_dir() and any(any(d.glob(p)) for p in REPORT_PATTERNS))


def reports(data_dir: Path, dataset: str | None = None) -> list[Row]:
    rows = []
    for name in [dataset] if dataset else report_datasets(data_dir):
        folder = data_dir / name
        files = sorted({p for pattern in REPORT_PATTERNS for p in folder.glob(pattern) if p.is_file()})
        files += sorted(folder.glob("analysis/*/analysis.json"))  # the analyses kept per SAE
        for path in files:
            kind = "analysis" if path.name in ("analysis.json", "cohens_d.csv", "neuron_top_items.csv") \
                or path.name.startswith("row_stats") else "steering"
            rows.append(_row(kind, name, path, _describe(path, report_info)))
    return rows


# ------------------------------------------------------------------ the last sweep


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def sweep_dataset(folder: Path) -> str:
    manifest = (_read_json(folder / "stages" / "encode.json") or {}).get("manifest") or {}
    return str(manifest.get("dataset", UNKNOWN))


def sweep_info(folder: Path) -> str:
    summary_path = folder / "sweep_summary.json"
    if not summary_path.exists():
        done = sorted(p.stem for p in (folder / "stages").glob("*.json"))
        return f"not finished; stages done: {', '.join(done) or 'none'}"
    summary = _read_json(summary_path)
    if summary is None:
        return "unreadable: sweep_summary.json"
    sweep = summary.get("sweep") or {}
    parts = [f"{len(sweep.get('trials') or [])} trials ({sweep.get('errors', 0)} errored)"]
    picks = (summary.get("steering") or {}).get("picks") or {}
    for key in sweep.get("selected") or []:
        pick = picks.get(key) or {}
        if pick.get("pick"):
            test = pick.get("test") or {}
            parts.append(f"{key}: N={pick['pick'].get('num_neurons')} alpha={pick['pick'].get('alpha')} "
                         f"test ndcg@10 {_fmt(test.get('ndcg@10'))} gini@10 {_fmt(test.get('gini@10'))}")
        else:
            parts.append(f"best {key}")
    seconds = (summary.get("seconds") or {}).get("total")
    if seconds is not None:
        parts.append(f"{_fmt(seconds, '.0f')} s")
    return ", ".join(parts)


def last_sweep(out_dir: Path, dataset: str | None = None) -> Row | None:
    """The most recently changed sweep folder in ``<out_dir>/sweeps/`` (for ``dataset`` if given)."""
    root = out_dir / "sweeps"
    found = []
    for folder in root.iterdir() if root.is_dir() else []:
        marker = folder / "sweep_summary.json"
        if not marker.exists():
            marker = folder / "stages"
        if marker.exists() and (not dataset or _describe(folder, sweep_dataset) in (dataset, UNKNOWN)):
            found.append((marker.stat().st_mtime, str(folder), folder, marker))
    if not found:
        return None
    _, _, folder, marker = max(found)
    row = _row("sweep", _describe(folder, sweep_dataset), folder, _describe(folder, sweep_info))
    return dataclasses.replace(row, size=row.size if marker.is_file() else 0, date=_mtime(marker))


# ------------------------------------------------------------------ the table


def table(rows: list[Row], base: Path) -> str:
    headers = ("kind", "dataset", "file", "size", "date", "summary")
    cells = [(r.kind, r.dataset, _rel(r.path, base), human_size(r.size) if r.size else "-", r.date, r.info)
             for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers[:-1])]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)) + "  " + headers[-1]]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in cells]
    return "\n".join(lines)


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def status_text(dataset: str | None, data_dir: str | Path, out_dir: str | Path) -> str:
    """The whole report: one table per section, or a line saying there is nothing."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    what = f"dataset {dataset}" if dataset else "all datasets"
    sections = [(f"Checkpoints in {out_dir}/", checkpoints(out_dir, dataset), out_dir),
                (f"Reports in {data_dir}/", reports(data_dir, dataset), data_dir)]
    sweep = last_sweep(out_dir, dataset)
    sections.append((f"Last sweep in {out_dir / 'sweeps'}/", [sweep] if sweep else [], out_dir / "sweeps"))
    if not any(rows for _, rows, _ in sections):
        return f"no artifacts for {what} in {out_dir}/ or {data_dir}/"
    out = [f"PopSteer artifacts ({what})"]
    for title, rows, base in sections:
        out += ["", title, table(rows, base) if rows else "  (none)"]
    return "\n".join(out)
