"""``popsteer report``: the results report (docs/RESULTS.md) of one or more analysed SAEs.

For each SAE checkpoint's dataset, on the test split: SASRec, the unsteered SAE, PopSteer at
the paper's defaults, PopSteer tuned on validation, and every re-ranking baseline tuned on
validation with the same rule (``popsteer.steering.grid.pick_point``); the trade-off plot (NDCG@10
against Gini@10, every method's grid on validation and test); PopSteer's alpha and N sweeps;
the neurons with the largest |Cohen's d| and the items that drive them; fidelity checks
against the authors' files when they are present; a closing comparison. Every file is
written atomically; the plots and per-point grids go beside the markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from popsteer.util.atomic import atomic_path, write_csv, write_text
from popsteer.baselines import BASELINES, Baseline
from popsteer.baselines.random_topm import random_rerank
from popsteer.baselines.tuning import ScoredSplit, pick_with_fallback, tune_baseline
from popsteer.data import EMBEDDED, SequenceData, embedded_data_dir
from popsteer.errors import PopSteerError
from popsteer.steering.grid import DEFAULT_ALPHAS, DEFAULT_NS, evaluate_grid, grid_points, tradeoff
from popsteer.eval.popularity import PopularityGroups
from popsteer.util import checkpoint
from popsteer.stages.sae_steps import SplitCache, analysis_dir, load_neuron_scores, load_sae_context
from popsteer.steering.steer import steered_reconstruction, steering_delta

log = logging.getLogger(__name__)

DEFAULT_N = 4096
DEFAULT_ALPHA = {"ml-1m": 1.5, "lastfm": 4.0}  # METHOD.md section 4; 1.5 elsewhere
COLUMNS = (("ndcg@10", "NDCG@10"), ("precision@10", "P@10"), ("lt_coverage@10", "LT-cov@10"),
           ("gini@10", "Gini@10"), ("arp@10", "ARP@10"), ("ndcg_head@10", "NDCG head"),
           ("ndcg_mid@10", "NDCG mid"), ("ndcg_tail@10", "NDCG tail"))
METRIC_KEYS = tuple(k for k, _ in COLUMNS)
# The authors' unsteered SASRec on validation (METHOD.md section 5).
REFERENCE_VALID = {"ml-1m": {"ndcg@10": 0.1212, "gini@10": 0.7573, "lt_coverage@10": 0.4859,
                             "ndcg_head@10": 0.1848, "ndcg_mid@10": 0.1234, "ndcg_tail@10": 0.0621}}
REFERENCE_D = "popsteer_cohens_d.csv.gz"


# ------------------------------------------------------------------ evaluation


def popsteer_grid(n_latents: int, alpha0: float, tiny: bool) -> list:
    """The METHOD.md grid (N capped at the SAE's width); tiny: N in {512, max}, alpha in {1, default, 4}."""
    if tiny:
        return grid_points(n_latents, (512, DEFAULT_N), sorted({1.0, alpha0, 4.0}))
    return grid_points(n_latents, DEFAULT_NS, sorted({*DEFAULT_ALPHAS, alpha0}))


def seeded_baselines(seed: int) -> list[Baseline]:
    """The registry, the random re-ranker bound to ``seed``."""
    out = []
    for b in BASELINES.values():
        if b.rerank is random_rerank:
            b = dataclasses.replace(b, rerank=functools.partial(random_rerank, seed=seed))
        out.append(b)
    return out


def evaluate_dataset(checkpoint_path: str, args: argparse.Namespace) -> dict:
    """Every number of one dataset's section."""
    ctx_args = argparse.Namespace(pretrained_path=checkpoint_path, data_dir=args.data_dir, dataset=None)
    sae, meta, sasrec, data = load_sae_context(ctx_args)
    n_latents = meta["n_latents"]
    scores = load_neuron_scores(ctx_args, data.name, n_latents)
    valid, test = SplitCache(sasrec, sae, data, "valid"), SplitCache(sasrec, sae, data, "test")
    base_valid, base_test = valid.baselines(sae), test.baselines(sae)
    ref = base_valid["sasrec"]
    n0, a0 = min(DEFAULT_N, n_latents), DEFAULT_ALPHA.get(data.name, 1.5)
    default_delta = steering_delta(scores, n0, a0, args.swap_sigma)
    default_test = test.evaluator(steered_reconstruction(sae, test.h, default_delta), test.item_emb)

    points = popsteer_grid(n_latents, a0, args.tiny)
    grid_valid = evaluate_grid(sae, valid.h, valid.item_emb, valid.evaluator, scores, points, args.swap_sigma)
    grid_test = evaluate_grid(sae, test.h, test.item_emb, test.evaluator, scores, points, args.swap_sigma)
    idx, within = pick_with_fallback(grid_valid, ref)
    params = [{"num_neurons": p.num_neurons, "alpha": p.alpha} for p in points]
    methods = {"popsteer": {"name": "popsteer", "label": "PopSteer (tuned)", "grid": params, "valid_rows": grid_valid,
                            "test_rows": grid_test, "pick": idx, "params": params[idx], "within_limit": within,
                            "test": _metrics(grid_test[idx])}}
    valid_split = ScoredSplit.from_cache(valid, data, "valid")
    test_split = ScoredSplit.from_cache(test, data, "test")
    for b in seeded_baselines(args.seed):
        methods[b.name] = tune_baseline(b, valid_split, test_split, ref, b.tiny_grid() if args.tiny else None)
        methods[b.name]["describe"] = b.describe(methods[b.name]["params"])
    methods["popsteer"]["describe"] = f"N={params[idx]['num_neurons']}, α={params[idx]['alpha']:g}"
    groups = valid.evaluator.groups
    imported = checkpoint.read_meta(meta["base_checkpoint"]).get("imported_from") is not None
    return {"dataset": data.name, "checkpoint": str(checkpoint_path), "meta": meta, "n_latents": n_latents,
            "sasrec_origin": "authors" if imported else "popsteer",
            "title": f"{data.name}, " + ("the authors' SASRec (imported)" if imported else "SASRec trained by PopSteer"),
            "slug": data.name + ("-authors" if imported else ""),
            "defaults": {"num_neurons": n0, "alpha": a0}, "base_valid": base_valid, "base_test": base_test,
            "default_test": default_test, "methods": methods, "d": scores.d,
            "neurons": top_neurons(data, args.data_dir, groups, scores.d, shared_dir(args), checkpoint_path),
            "fidelity": fidelity(data.name, scores.d, shared_dir(args), base_valid["sasrec"])}


def _metrics(row: dict) -> dict:
    return {k: row[k] for k in METRIC_KEYS}


# ------------------------------------------------------------------ neurons and items


def shared_dir(args: argparse.Namespace) -> Path:
    return Path(args.shared_dir or os.environ.get("POPSTEER_SHARED_DATASETS", "../shared/datasets"))


def item_titles(data: SequenceData, data_dir: str | Path, shared: Path) -> np.ndarray:
    """A display name per item id (title / artist name where an ``.item`` file has one, else the token)."""
    name = data.name
    candidates = [Path(data_dir) / name / f"{name}.item", shared / name / f"{name}.item",
                  shared / name / "reference" / f"popsteer_{name}.item"]
    if name == EMBEDDED:
        try:
            candidates.append(embedded_data_dir() / name / f"{name}.item")
        except PopSteerError:
            pass
    for path in candidates:
        if not path.is_file():
            continue
        try:
            with path.open(encoding="utf-8", errors="replace") as fh:
                header = fh.readline().rstrip("\n").split("\t")
            fields = [h.split(":")[0] for h in header]
            title = next((f for f in ("movie_title", "title", "name") if f in fields), None)
            if title is None or "item_id" not in fields:
                continue
            table = pd.read_csv(path, sep="\t", dtype=str, usecols=[fields.index("item_id"), fields.index(title)],
                                quoting=3, encoding="utf-8", encoding_errors="replace")
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            log.warning("cannot read item names from %s: %s", path, exc)
            continue
        lookup = dict(zip(table.iloc[:, 0], table.iloc[:, 1]))
        return np.array([str(lookup.get(t, t)) for t in data.item_tokens])
    return data.item_tokens.astype(str)


def top_neurons(data: SequenceData, data_dir: str | Path, groups: PopularityGroups, d: np.ndarray, shared: Path,
                sae_path: str | Path, n_top: int = 10, n_items: int = 5) -> pd.DataFrame:
    """The n_top neurons by |d| with the items whose one-item profile activates each most."""
    order = np.argsort(-np.abs(d), kind="stable")[:n_top]
    path = analysis_dir(data_dir, data.name, sae_path) / "neuron_top_items.csv"
    try:
        items = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise PopSteerError(f"cannot read {path}: {exc} (run `popsteer analyze` first)") from None
    names = item_titles(data, data_dir, shared)
    tag = np.array(["", "H", "M", "T"])[groups.label()]
    rows = []
    for rank, j in enumerate(order, 1):
        top = items[(items["neuron"] == j)].sort_values("rank").head(n_items)["item_id"].to_numpy()
        rows.append({"rank": rank, "neuron": int(j), "d": float(d[j]),
                     "direction": "popular" if d[j] > 0 else "unpopular",
                     "top items": "; ".join(f"{md(names[i])} ({tag[i]})" for i in top)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ fidelity


def d_summary(d: np.ndarray, top_n: int) -> dict:
    mag = np.abs(d)
    top = np.argsort(-mag, kind="stable")[:top_n]
    return {"neurons": len(d), "share d > 0": float((d > 0).mean()), "mean |d|": float(mag.mean()),
            "median |d|": float(np.median(mag)), "90th pct |d|": float(np.quantile(mag, 0.9)),
            "max |d|": float(mag.max()), f"share d > 0 in top {top_n} by |d|": float((d[top] > 0).mean())}


def compare_d(ours: np.ndarray, theirs: np.ndarray) -> dict:
    """Distribution-level agreement (neuron ids of two SAEs do not correspond).

    Spearman and Pearson correlations of the two |d| quantile functions (99 percentiles;
    Spearman only falls below 1 where one quantile function is flat), and the two-sample
    Kolmogorov-Smirnov distance of |d| and of d.
    """
    q = np.linspace(0.01, 0.99, 99)
    qo, qt = np.quantile(np.abs(ours), q), np.quantile(np.abs(theirs), q)
    return {"Spearman, |d| quantiles": float(stats.spearmanr(qo, qt).statistic),
            "Pearson, |d| quantiles": float(np.corrcoef(qo, qt)[0, 1]),
            "KS distance, |d|": float(stats.ks_2samp(np.abs(ours), np.abs(theirs)).statistic),
            "KS distance, d": float(stats.ks_2samp(ours, theirs).statistic)}


def fidelity(dataset: str, d: np.ndarray, shared: Path, valid_sasrec: dict) -> dict:
    """Our Cohen's d and validation metrics against the authors' files / recorded figures, where present."""
    out: dict = {"reference_path": None, "summary": None, "agreement": None, "valid": None}
    path = shared / dataset / "reference" / REFERENCE_D
    if path.is_file():
        try:
            theirs = pd.read_csv(path, index_col=0)["cohen_d"].to_numpy(dtype=np.float64)
        except (OSError, KeyError, ValueError) as exc:
            raise PopSteerError(f"cannot read the authors' Cohen's d {path}: {exc}") from None
        top_n = max(1, min(len(d), len(theirs)) // 10)
        out.update(reference_path=str(path), summary=pd.DataFrame({"PopSteer (ours)": d_summary(d, top_n),
                                                                    "authors'": d_summary(theirs, top_n)}),
                   agreement=compare_d(d, theirs))
    if dataset in REFERENCE_VALID:
        ref = REFERENCE_VALID[dataset]
        out["valid"] = pd.DataFrame({"this SASRec": {k: valid_sasrec[k] for k in ref}, "authors' recorded": ref})
    return out


# ------------------------------------------------------------------ comparison


def trade_score(row: dict, base: dict) -> float:
    """Relative Gini drop minus relative NDCG drop (the quantity ``pick_point`` maximises)."""
    gini_drop, ndcg_drop = tradeoff(row, base)
    return gini_drop - ndcg_drop


def dominated_share(rows: list[dict], by: list[dict], k: int = 10) -> float:
    """Share of ``rows`` for which some row of ``by`` has Gini <= and NDCG >= (and differs)."""
    g, n = f"gini@{k}", f"ndcg@{k}"
    hit = [any(b[g] <= r[g] and b[n] >= r[n] and (b[g], b[n]) != (r[g], r[n]) for b in by) for r in rows]
    return float(np.mean(hit)) if hit else float("nan")


def pareto_front(gini: np.ndarray, ndcg: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points, by increasing Gini."""
    order = np.lexsort((-ndcg, gini))
    front, best = [], -np.inf
    for i in order:
        if ndcg[i] > best:
            front.append(i)
            best = ndcg[i]
    return np.asarray(front, dtype=np.int64)


def closing_lines(res: dict) -> list[str]:
    """One bullet per baseline: PopSteer (tuned) against it on test, by pick and by grid."""
    base = res["base_test"]["sasrec"]
    ps = res["methods"]["popsteer"]
    g_ps, n_ps = tradeoff(ps["test"], base)
    lines = []
    for name, m in res["methods"].items():
        if name == "popsteer":
            continue
        g_b, n_b = tradeoff(m["test"], base)
        verdict = "beats" if g_ps - n_ps > g_b - n_b else "does not beat"
        lines.append(
            f"- vs **{md(m['label'])}** ({m['describe']}): PopSteer {verdict} it on the trade-off score "
            f"(relative Gini drop − relative NDCG drop against SASRec, test): {100 * (g_ps - n_ps):+.1f} vs "
            f"{100 * (g_b - n_b):+.1f} points, margin {100 * ((g_ps - n_ps) - (g_b - n_b)):+.1f} (Gini@10 "
            f"{ps['test']['gini@10']:.4f} vs "
            f"{m['test']['gini@10']:.4f}, NDCG@10 {ps['test']['ndcg@10']:.4f} vs {m['test']['ndcg@10']:.4f}). "
            f"Over the grids on test, {100 * dominated_share(m['test_rows'], ps['test_rows']):.0f}% of its points "
            f"are dominated by a PopSteer point and {100 * dominated_share(ps['test_rows'], m['test_rows']):.0f}% "
            f"of PopSteer's by one of its points.")
    return lines


def beaten_baselines(res: dict) -> tuple[list[str], list[str]]:
    """Labels of the baselines PopSteer (tuned) beats / does not beat on the test trade-off score."""
    base = res["base_test"]["sasrec"]
    score = {name: trade_score(m["test"], base) for name, m in res["methods"].items()}
    others = [m for name, m in res["methods"].items() if name != "popsteer"]
    won = [m["label"] for m in others if score["popsteer"] > score[m["name"]]]
    return won, [m["label"] for m in others if m["label"] not in won]


def closing_note(results: list[dict]) -> list[str]:
    out = ["## Closing note", "",
           "Trade-off score: relative Gini@10 drop minus relative NDCG@10 drop against SASRec on test, for each "
           "method's validation pick (the per-dataset summaries give the margins and the grid dominance).", ""]
    for res in results:
        won, lost = beaten_baselines(res)
        line = f"- **{res['title']}**: PopSteer (tuned) beats {len(won)} of {len(won) + len(lost)} baselines"
        line += f" ({', '.join(map(md, won))})" if won else ""
        line += f"; it does not beat {', '.join(map(md, lost))}." if lost else "."
        out.append(line)
    return out + [""]


# ------------------------------------------------------------------ plot


def plot_tradeoff(res: dict, path: Path) -> None:
    """NDCG@10 against Gini@10 on validation and test: each method's grid, its Pareto front and its pick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    colors = plt.get_cmap("tab10").colors
    for ax, split in zip(axes, ("valid", "test")):
        base = res[f"base_{split}"]["sasrec"]
        for c, m in zip(colors, res["methods"].values()):
            rows = m[f"{split}_rows"]
            g = np.array([r["gini@10"] for r in rows])
            n = np.array([r["ndcg@10"] for r in rows])
            ax.scatter(g, n, s=12, color=c, alpha=0.35)
            front = pareto_front(g, n)
            ax.plot(g[front], n[front], "-", color=c, lw=1.5, label=f"{m['label']} ({m['describe']})")
            ax.scatter(g[m["pick"]], n[m["pick"]], s=80, color=c, edgecolor="k", zorder=3)
        ax.scatter(base["gini@10"], base["ndcg@10"], marker="*", s=220, color="k", zorder=4, label="SASRec")
        if split == "test":
            dt = res["default_test"]
            ax.scatter(dt["gini@10"], dt["ndcg@10"], marker="D", s=60, color=colors[0], edgecolor="k", zorder=4,
                       label="PopSteer (defaults)")
        ax.axhline(0.95 * base["ndcg@10"], ls="--", lw=0.8, color="grey", label="SASRec NDCG −5%")
        ax.set_xlabel("Gini@10 (lower: exposure spread more evenly)")
        ax.set_ylabel("NDCG@10")
        ax.set_title(f"{res['title']}, {split} split")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------ markdown


def _fmt(v, key: str = "") -> str:
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


def main_rows(res: dict) -> list[tuple[str, str, dict, str]]:
    """(method, setting, test metrics, validation pick note) per table row."""
    ref = res["base_valid"]["sasrec"]
    d = res["defaults"]
    rows = [("SASRec", "—", res["base_test"]["sasrec"], "—"),
            ("SASRec + SAE (unsteered)", "reconstruction", res["base_test"]["sae"], "—"),
            ("PopSteer (defaults)", f"N={d['num_neurons']}, α={d['alpha']:g}", res["default_test"], "—")]
    for m in res["methods"].values():
        g, n = tradeoff(m["valid_rows"][m["pick"]], ref)
        note = f"{100 * g:+.1f}% / {100 * n:+.1f}%" + ("" if m["within_limit"] else " †")
        label = m["label"] if m["name"] == "popsteer" else f"{m['label']} (tuned)"
        rows.append((label, m["describe"], m["test"], note))
    return rows


def sweep_table(res: dict, fixed: str, value: float, vary: str) -> str:
    m = res["methods"]["popsteer"]
    rows = []
    for p, rv, rt in zip(m["grid"], m["valid_rows"], m["test_rows"]):
        if p[fixed] == value:
            rows.append([_fmt(p[vary]) if vary == "num_neurons" else f"{p[vary]:g}",
                         *(_fmt(rt[k], k) for k in ("ndcg@10", "gini@10", "lt_coverage@10", "arp@10")),
                         _fmt(rv["ndcg@10"]), _fmt(rv["gini@10"])])
    name = "N" if vary == "num_neurons" else "α"
    return md_table([name, "test NDCG@10", "test Gini@10", "test LT-cov@10", "test ARP@10", "valid NDCG@10",
                     "valid Gini@10"], rows)


def render_dataset(res: dict, figure: Path, grids_csv: Path) -> str:
    meta, d = res["meta"], res["defaults"]
    pick = res["methods"]["popsteer"]["params"]
    out = [f"## {res['title']}", "",
           f"SAE `{Path(res['checkpoint']).name}` (K={meta['sae']['k']}, scale {meta['sae']['scale']}, "
           f"{res['n_latents']} neurons) on SASRec `{Path(meta['base_checkpoint']).name}`. "
           f"Test split; every tuned method picked on validation by the rule of METHOD.md section 4 "
           f"(max relative Gini drop − relative NDCG drop with NDCG drop ≤ 5% against SASRec).", "",
           "### Test results", ""]
    header = ["method", "setting", *(name for _, name in COLUMNS), "valid Gini↓ / NDCG↓"]
    out.append(md_table(header, [[md(label), setting, *(_fmt(metrics[k], k) for k in METRIC_KEYS), note]
                                 for label, setting, metrics, note in main_rows(res)]))
    out += ["", "“valid Gini↓ / NDCG↓”: relative drops of the picked point against SASRec on validation. "
            "† no grid point kept the NDCG drop within 5%: the point with the smallest drop is shown.", "",
            "### Accuracy-fairness trade-off", "",
            f"![NDCG@10 vs Gini@10 on {res['title']}]({figure.name})", "",
            "Each method's grid (faint points), its Pareto front (line) and its validation pick (ringed); the star "
            f"is SASRec, the diamond PopSteer at the defaults. Every grid point: `{grids_csv.name}`.", "",
            "### PopSteer sweeps", "",
            f"α sweep at N={d['num_neurons']} (the default N):", "", sweep_table(res, "num_neurons", d["num_neurons"], "alpha"),
            "", f"N sweep at α={d['alpha']:g} (the default α):", "", sweep_table(res, "alpha", d["alpha"], "num_neurons")]
    if pick["num_neurons"] != d["num_neurons"]:
        out += ["", f"α sweep at the tuned N={pick['num_neurons']}:", "",
                sweep_table(res, "num_neurons", pick["num_neurons"], "alpha")]
    dd = res["d"]
    out += ["", "### Popularity neurons", "",
            f"{(dd > 0).sum()} of {len(dd)} neurons have d > 0 (fire more for popular-only profiles), "
            f"{(dd < 0).sum()} d < 0; median |d| {np.median(np.abs(dd)):.3f}. The 10 largest |d|, with the items "
            "whose one-item profile activates each most (H/M/T: head/mid/tail):", "",
            md_table(["#", "neuron", "d", "direction", "top items"],
                     [[str(r["rank"]), str(r["neuron"]), f"{r['d']:+.3f}", r["direction"], r["top items"]]
                      for r in res["neurons"].to_dict("records")]), ""]
    out += render_fidelity(res["fidelity"])
    out += ["", "### Summary", "", *closing_lines(res), ""]
    return "\n".join(out)


def render_fidelity(f: dict) -> list[str]:
    out = ["### Fidelity to the authors' artifacts", ""]
    if f["summary"] is None:
        out.append(f"No authors' `{REFERENCE_D}` for this dataset: Cohen's d not compared.")
    else:
        s = f["summary"]
        out += [f"Cohen's d of this SAE against the authors' (`{f['reference_path']}`). The two SAEs are trained "
                "separately and their neuron ids do not correspond, so distributions are compared, not neurons.", "",
                md_table(["", *s.columns], [[idx, *(str(int(v)) if idx == "neurons" else _fmt(v) for v in row)]
                                            for idx, row in s.iterrows()]), "",
                md_table(["agreement", "value"], [[k, f"{v:.4f}"] for k, v in f["agreement"].items()])]
    if f["valid"] is not None:
        v = f["valid"]
        out += ["", "Unsteered SASRec on validation against the figures the authors recorded (METHOD.md section 5):", "",
                md_table(["metric", *v.columns, "ours − authors'"],
                         [[idx, _fmt(row.iloc[0]), _fmt(row.iloc[1]), f"{row.iloc[0] - row.iloc[1]:+.4f}"]
                          for idx, row in v.iterrows()])]
    return out


# ------------------------------------------------------------------ artifacts


def grid_frame(res: dict) -> pd.DataFrame:
    """Every evaluated grid point of every method, both splits, one row each (SASRec's first)."""
    frames = [pd.DataFrame([{"method": "sasrec", "split": split, **res[f"base_{split}"]["sasrec"], "picked": True}
                            for split in ("valid", "test")])]
    for m in res["methods"].values():
        for split in ("valid", "test"):
            frame = pd.DataFrame(m[f"{split}_rows"])
            frame.insert(0, "split", split)
            frame.insert(0, "method", m["name"])
            frame["picked"] = np.arange(len(frame)) == m["pick"]
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def log_to_mlflow(files: list[Path], results: list[dict]) -> str | None:
    """Log the report, plots, grids and the test table to an MLflow run; returns its id."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        log.warning("--mlflow: MLFLOW_TRACKING_URI is not set, nothing logged")
        return None
    try:
        import mlflow
    except ImportError:
        log.warning("--mlflow: mlflow is not installed, nothing logged")
        return None
    metrics = {}
    for res in results:
        for label, _, values, _ in main_rows(res):
            for key in METRIC_KEYS:
                if math.isfinite(values[key]):
                    slug = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")
                    metrics[f"{res['slug']}/{slug}/{key.replace('@', '_at_')}"] = float(values[key])
    try:
        with mlflow.start_run(run_name="popsteer-report") as run:
            for path in files:
                mlflow.log_artifact(str(path))
            mlflow.log_metrics(metrics)
            return run.info.run_id
    except (mlflow.exceptions.MlflowException, OSError) as exc:
        raise PopSteerError(f"MLflow logging failed (the report is written): {str(exc).splitlines()[0]}") from None


def report_step(args: argparse.Namespace) -> dict:
    """Build the report of every ``-p`` SAE (one section each) and write it with its plots."""
    paths = args.pretrained_path if isinstance(args.pretrained_path, list) else [args.pretrained_path]
    out = Path(args.out)
    results, files = [], [out]
    for path in paths:
        res = evaluate_dataset(path, args)
        if any(r["slug"] == res["slug"] for r in results):
            raise PopSteerError(f"two SAE checkpoints for '{res['title']}': give one per dataset and SASRec origin")
        results.append(res)
    sections = []
    for res in results:
        figure = out.parent / f"{out.stem}_{res['slug']}_tradeoff.png"
        grids = out.parent / f"{out.stem}_{res['slug']}_grids.csv"
        plot_tradeoff(res, figure)
        write_csv(grids, grid_frame(res), index=False)
        files += [figure, grids]
        sections.append(render_dataset(res, figure, grids))
    command = "popsteer report " + " ".join(f"-p {Path(p).name}" for p in paths) + f" --out {out}" + \
        (" --tiny" if args.tiny else "")
    head = ["# PopSteer results", "",
            f"Generated by `{command}`. Metrics at k=10 on the test split (METHOD.md section 5); "
            "every hyper-parameter chosen on validation only. Re-rankers (METHOD.md section 6) work on SASRec's "
            "scores: IPR (weight on softmax scores), FA\\*IR (protected group: mid + tail items), PCT (greedy "
            "popularity calibration over the top-100), random re-ranking of the top-m (seed "
            f"{args.seed})." + (" **Tiny settings** (trimmed grids): a structural check, not the paper's numbers."
                                if args.tiny else ""), ""]
    write_text(out, "\n".join(head + sections + closing_note(results)))
    log.info("wrote %s and %d figure(s)", out, len(results))
    run_id = log_to_mlflow(files, results) if args.mlflow else None
    return {"report": str(out), "files": [str(f) for f in files[1:]], "mlflow_run": run_id,
            "datasets": {r["slug"]: {label: {k: v[k] for k in ("ndcg@10", "gini@10")}
                                        for label, _, v, _ in main_rows(r)} for r in results}}
