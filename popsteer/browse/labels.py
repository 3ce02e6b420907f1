"""Concept labels of SAE neurons from item metadata: tag enrichment among each neuron's top items.

For neuron j with top items T_j (``neuron_top_items.csv``: the items whose one-item profile
activates it most, |T_j| = n_j) and tag t carried by K_t of the catalogue's N items, the number
of tagged top items k_jt = |T_j ∩ items(t)| is, if T_j were a random n_j-subset of the catalogue,
hypergeometric; the one-sided enrichment p-value is

    p_jt = P[X >= k_jt],   X ~ Hypergeom(N, K_t, n_j)       (scipy.stats.hypergeom.sf(k - 1, N, K, n))

Every (tag, neuron) pair is one test (p = 1 when k = 0). The p-values of all of them are turned into
Benjamini-Hochberg q-values (``scipy.stats.false_discovery_control``):
q_(i) = min_{l >= i} min(1, m p_(l) / l) over the m tests sorted by p. A neuron's label is its tags
with q < fdr (default 0.05), ranked by q (then p, then more hits); a neuron with none is unlabelled.
No metadata, no labels.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import false_discovery_control, hypergeom

from popsteer.report.neurons import LABELS_FILE, LABELS_META, read_labels
from popsteer.util.atomic import write_csv, write_text

log = logging.getLogger(__name__)

__all__ = ["LABELS_FILE", "LABELS_META", "enrichment", "label_neurons", "read_labels", "write_labels"]
SHOWN_TAGS = 3
"""Tags joined into the short ``label`` (all significant ones are in ``tags``)."""


def enrichment(top_items: pd.DataFrame, tags: pd.DataFrame, n_items: int, n_neurons: int,
               min_tag_items: int = 1) -> pd.DataFrame:
    """Every (neuron, tag) test with k >= 1, with its p- and BH q-value over all n_neurons x tags tests.

    Args:
        top_items: columns ``neuron``, ``item_id`` (internal ids 1..n_items-1).
        tags: columns ``item_id``, ``tag``, distinct pairs.
        n_items: the catalogue size N (padding excluded).
        min_tag_items: tags carried by fewer items are not tested.
    Returns: columns neuron, tag, hits (k), n_top (n), tag_items (K), p, q; sorted by neuron, q, p.
    """
    support = tags.groupby("tag")["item_id"].nunique()
    kept = support[support >= min_tag_items].sort_index()
    empty = pd.DataFrame(columns=["neuron", "tag", "hits", "n_top", "tag_items", "p", "q"])
    if kept.empty or top_items.empty:
        return empty
    tag_col = {t: c for c, t in enumerate(kept.index)}
    sel = tags[tags["tag"].isin(tag_col)]
    n_rows = int(max(n_items, tags["item_id"].max(), top_items["item_id"].max()) + 1)
    member = sparse.csr_matrix((np.ones(len(sel)), (sel["item_id"].to_numpy(), sel["tag"].map(tag_col).to_numpy())),
                               shape=(n_rows, len(kept)))  # (items, tags)
    tops = sparse.csr_matrix((np.ones(len(top_items)), (top_items["neuron"].to_numpy(),
                                                        top_items["item_id"].to_numpy())),
                             shape=(n_neurons, n_rows))  # (neurons, items)
    hits = (tops @ member).toarray().astype(np.int64)  # (neurons, tags): k
    n_top = np.asarray(tops.sum(axis=1)).ravel().astype(np.int64)  # (neurons,): n
    K = kept.to_numpy().astype(np.int64)  # (tags,)
    p = np.ones_like(hits, dtype=np.float64)
    j, t = np.nonzero(hits)
    p[j, t] = hypergeom.sf(hits[j, t] - 1, n_items, K[t], n_top[j])
    q = false_discovery_control(p.ravel(), method="bh").reshape(p.shape)
    out = pd.DataFrame({"neuron": j, "tag": kept.index.to_numpy()[t], "hits": hits[j, t], "n_top": n_top[j],
                        "tag_items": K[t], "p": p[j, t], "q": q[j, t]})
    return out.sort_values(["neuron", "q", "p", "hits"], ascending=[True, True, True, False], kind="stable",
                           ignore_index=True)


def label_neurons(tests: pd.DataFrame, n_neurons: int, fdr: float = 0.05) -> pd.DataFrame:
    """One row per neuron: ``label`` (its best ``SHOWN_TAGS`` significant tags), and all its significant
    ``tags``, ``q_values``, ``p_values`` and ``hits`` (k/n), ';'-joined in q order; empty when none."""
    sig = tests[tests["q"] < fdr]
    rows = []
    for j, g in sig.groupby("neuron", sort=True):
        rows.append({"neuron": int(j), "label": ", ".join(g["tag"].head(SHOWN_TAGS)), "n_tags": len(g),
                     "best_q": float(g["q"].iloc[0]), "tags": ";".join(g["tag"]),
                     "q_values": ";".join(f"{v:.3g}" for v in g["q"]),
                     "p_values": ";".join(f"{v:.3g}" for v in g["p"]),
                     "hits": ";".join(f"{k}/{n}" for k, n in zip(g["hits"], g["n_top"]))})
    found = pd.DataFrame(rows, columns=["neuron", "label", "n_tags", "best_q", "tags", "q_values", "p_values", "hits"])
    table = pd.DataFrame({"neuron": np.arange(n_neurons)}).merge(found, on="neuron", how="left")
    for col in ("label", "tags", "q_values", "p_values", "hits"):
        table[col] = table[col].astype(object).where(table[col].notna(), "")
    table["n_tags"] = pd.to_numeric(table["n_tags"]).fillna(0).astype(np.int64)
    table["best_q"] = pd.to_numeric(table["best_q"]).astype(np.float64)
    return table


def write_labels(folder: Path, labels: pd.DataFrame, meta: dict) -> list[Path]:
    """``neuron_labels.csv`` and ``neuron_labels.json`` (source, tests, fdr, the SAE's hash) in the SAE's
    results folder, each atomically, the JSON last."""
    write_csv(folder / LABELS_FILE, labels, index=False)
    write_text(folder / LABELS_META, json.dumps(meta, indent=2))
    return [folder / LABELS_FILE, folder / LABELS_META]

