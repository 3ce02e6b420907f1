"""Top-k retrieval over an item table: exact (the fused kernel) or approximate (FAISS), one protocol.

    index = build_index(item_emb, bias, kind="ivf")   # once per item table; serves every alpha
    scores, ids = index.search(queries, k=10)         # (B, d) -> (B, k), (B, k): best first, exact scores
    index.save(folder); index = load_index(folder, item_emb, bias)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from popsteer.errors import PopSteerError
from popsteer.retrieval.ann import AnnIndex, resolve_params
from popsteer.retrieval.exact import ExactIndex, ItemIndex, check_table, read_params, table_fingerprint

__all__ = ["AnnIndex", "ExactIndex", "ItemIndex", "build_index", "load_index"]

KINDS = ("exact", "ivf", "hnsw")


def build_index(item_emb: np.ndarray, bias: np.ndarray | None = None, kind: str = "exact", **params) -> ItemIndex:
    """An index over ``item_emb`` (n_items, d), row 0 the padding item (never returned), scores
    ``q . e_i + bias_i``. kind: "exact" (params: batch_size), "ivf" (nlist, nprobe, candidates,
    train_size, seed) or "hnsw" (m, ef_construction, ef_search, candidates)."""
    if kind not in KINDS:
        raise PopSteerError(f"kind: expected one of {', '.join(KINDS)}; got {kind!r}")
    if kind == "exact":
        unknown = set(params) - {"batch_size"}
        if unknown:
            raise PopSteerError(f"exact index: unknown setting(s) {', '.join(sorted(unknown))} (known: batch_size)")
        return ExactIndex(item_emb, bias, **params)
    return AnnIndex.build(item_emb, bias, kind, **params)


def load_index(folder: Path, item_emb: np.ndarray, bias: np.ndarray | None = None) -> ItemIndex:
    """The index saved in ``folder``, over the same item table (checked: size, dimension, bias)."""
    doc = read_params(Path(folder))
    emb, bias = check_table(item_emb, bias)
    if doc["table"] != table_fingerprint(emb, bias):
        raise PopSteerError(f"{Path(folder) / 'index.json'}: built for an item table {doc['table']}, "
                            f"given {table_fingerprint(emb, bias)}")
    kind = doc["kind"]
    params = {k: v for k, v in doc.items() if k not in ("format", "kind", "table")}
    if kind == "exact":
        return build_index(emb, bias, "exact", **params)
    if kind not in KINDS:
        raise PopSteerError(f"{Path(folder) / 'index.json'}: unknown index kind {kind!r}")
    return AnnIndex.load(folder, emb, bias, resolve_params(kind, emb.shape[0], params))
