"""Trade-off plots (NDCG@10 against Gini@10): one SAE's steering grid, and a report section's methods.

Both draw each grid's Pareto front (``popsteer.eval.tradeoff.pareto_front``), use the Agg
backend and write the PNG atomically. The steering stage writes ``grid_tradeoff`` into the
SAE's results folder (the sweep logs that file to MLflow); the report writes ``methods_tradeoff``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from popsteer.eval.tradeoff import pareto_front
from popsteer.util.atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    _pyplot().close(fig)
    return path


def _xy(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([r["gini@10"] for r in rows]), np.array([r["ndcg@10"] for r in rows])


def grid_tradeoff(rows: list[dict], path: str | Path, baselines: dict | None = None, pick: dict | None = None,
                  title: str = "") -> Path:
    """One grid's points, its Pareto front, the unsteered SASRec and SAE, and the pick."""
    plt = _pyplot()
    g, n = _xy(rows)
    front = pareto_front(g, n)
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    ax.scatter(g, n, s=18, c="tab:blue", alpha=0.6, label="grid points")
    ax.plot(g[front], n[front], "-o", c="tab:red", ms=5, label="Pareto front")
    for name, marker in (("sasrec", "s"), ("sae", "^")):
        if baselines and name in baselines:
            ax.scatter([baselines[name]["gini@10"]], [baselines[name]["ndcg@10"]], marker=marker, s=60, c="black",
                       label=f"{name} (unsteered)")
    if pick:
        ax.scatter([pick["gini@10"]], [pick["ndcg@10"]], marker="*", s=160, c="gold", edgecolors="black",
                   label="pick " + " ".join(f"{k}={pick[k]:g}" for k in ("num_neurons", "alpha", "alpha_unpop", "lam")
                                            if k in pick).replace("num_neurons", "N"))
    ax.set_xlabel("Gini@10 (lower is fairer)")
    ax.set_ylabel("NDCG@10")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path, 100)


def methods_tradeoff(res: dict, path: str | Path) -> Path:
    """A report section on validation and test: each method's grid, Pareto front and pick."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    colors = plt.get_cmap("tab10").colors
    for ax, split in zip(axes, ("valid", "test")):
        base = res[f"base_{split}"]["sasrec"]
        for c, m in zip(colors, res["methods"].values()):
            g, n = _xy(m[f"{split}_rows"])
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
    return _save(fig, path, 110)
