"""Approximate retrieval: a FAISS (faiss-cpu) index over the item table, candidates re-scored exactly.

The model's score ``q . e_i + b_i`` is an inner product of augmented vectors, ``[q, 1] . [e_i, b_i]``
(no bias: the plain vectors). HNSW searches that inner product directly. For IVF, maximum inner
product search is turned into nearest-neighbour search (Bachrach et al., 2014) when ``L2_FOR``
says so: each item gets one more coordinate ``sqrt(M - |v_i|^2)`` (M the largest squared norm),
each query a 0, so ``|u - v_i|^2 = |u|^2 + M - 2 u . v_i`` and the nearest items are the best
scored. The index finds ``candidates`` items per query; they are scored again exactly (fp32 dot
products of the original vectors, bias added) and the best k kept. Padding item 0 is never in the index. Steering moves
only the query, so the same index serves every alpha.

A query whose probed cells hold fewer than k items is answered by the exact index instead.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from popsteer.errors import PopSteerError
from popsteer.retrieval.exact import ExactIndex, check_queries, check_table, exact_scores, write_params
from popsteer.util.atomic import atomic_path

log = logging.getLogger(__name__)

INDEX_FILE = "items.faiss"
DEFAULTS = {
    "ivf": {"nlist": None, "nprobe": 64, "candidates": 100, "train_size": None, "seed": 0},
    "hnsw": {"m": 32, "ef_construction": 40, "ef_search": 768, "candidates": 100},
}
"""Per kind; ``nlist`` None: 4 sqrt(n_items) rounded to a power of two, ``train_size`` None: 64 per cell.
HNSW is the one that serves: on the synthetic 1M-item catalog of ``bench/large_catalog.py`` (d = 64,
near-isotropic vectors), 500 users' recall@10 went 0.64 / 0.78 / 0.88 / 0.95 at ef_search 64 / 128 / 256
/ 512 (m 32, ef_construction 40; build 342 s on 2 busy cores), while IVF (4,096 cells) reached
0.23 at nprobe 64 and 0.52 at nprobe 256, inner product or L2 form alike."""


def _faiss():
    try:
        import faiss
    except ImportError:
        raise PopSteerError("approximate retrieval needs faiss-cpu (pip install faiss-cpu==1.15.1)") from None
    return faiss


L2_FOR = {"ivf": True, "hnsw": False}
"""Whether a kind searches the L2 form (else the inner product itself)."""


def augmented_items(item_emb: np.ndarray, bias: np.ndarray | None, l2: bool) -> np.ndarray:
    """(n_items - 1, d') items 1.. (padding left out): [e, b?], with l2 [e, b?, sqrt(M - |[e, b?]|^2)]."""
    v = item_emb[1:] if bias is None else np.hstack([item_emb[1:], bias[1:, None]])
    if l2:
        sq = np.einsum("nd,nd->n", v.astype(np.float64), v.astype(np.float64))
        v = np.hstack([v, np.sqrt(np.maximum(sq.max() - sq, 0.0))[:, None]])
    return np.ascontiguousarray(v, dtype=np.float32)


def augmented_queries(queries: np.ndarray, bias: bool, l2: bool) -> np.ndarray:
    """(B, d') [q, 1?] (with l2 [q, 1?, 0]): the queries in the items' form."""
    cols = [queries] + ([np.ones((len(queries), 1), np.float32)] if bias else [])
    cols += [np.zeros((len(queries), 1), np.float32)] if l2 else []
    return np.ascontiguousarray(np.hstack(cols), dtype=np.float32)


def resolve_params(kind: str, n_items: int, params: dict) -> dict:
    """The kind's defaults with ``params`` over them, checked; PopSteerError naming a bad one."""
    if kind not in DEFAULTS:
        raise PopSteerError(f"kind: expected one of exact, {', '.join(DEFAULTS)}; got {kind!r}")
    unknown = set(params) - set(DEFAULTS[kind])
    if unknown:
        raise PopSteerError(f"{kind} index: unknown setting(s) {', '.join(sorted(unknown))} "
                            f"(known: {', '.join(DEFAULTS[kind])})")
    p = {**DEFAULTS[kind], **params}
    n = n_items - 1
    if kind == "ivf":
        if p["nlist"] is None:
            p["nlist"] = int(min(n, 2 ** round(np.log2(max(1.0, 4 * np.sqrt(n))))))
        if p["train_size"] is None:
            p["train_size"] = int(min(n, 64 * p["nlist"]))
    bounds = {"nlist": (1, n), "nprobe": (1, p.get("nlist") or 1), "candidates": (1, 100_000), "train_size":
              (p.get("nlist") or 1, n), "seed": (0, 2**31 - 1), "m": (4, 256), "ef_construction": (8, 4096),
              "ef_search": (8, 65536)}
    for name, value in p.items():
        lo, hi = bounds[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
            raise PopSteerError(f"{kind} index: {name} must be an integer in [{lo}, {hi}], got {value!r}")
        p[name] = int(value)
    return {"kind": kind, **p}


class AnnIndex:
    """FAISS IVF-Flat or HNSW-Flat over the augmented items (see the module docstring)."""

    def __init__(self, item_emb: np.ndarray, bias: np.ndarray | None, index, params: dict):
        self.emb, self.bias = item_emb, bias
        self.index, self._params = index, params
        self._exact = ExactIndex(item_emb, bias)
        self._set_search_params()

    @classmethod
    def build(cls, item_emb: np.ndarray, bias: np.ndarray | None = None, kind: str = "ivf", **params) -> "AnnIndex":
        emb, bias = check_table(item_emb, bias)
        p = resolve_params(kind, emb.shape[0], params)
        faiss = _faiss()
        l2 = L2_FOR[kind]
        xb = augmented_items(emb, bias, l2)  # (n - 1, d')
        metric = faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT
        if kind == "ivf":
            quantizer = faiss.IndexFlatL2(xb.shape[1]) if l2 else faiss.IndexFlatIP(xb.shape[1])
            index = faiss.IndexIVFFlat(quantizer, xb.shape[1], p["nlist"], metric)
            rng = np.random.default_rng(p["seed"])
            sample = xb[np.sort(rng.choice(len(xb), p["train_size"], replace=False))]
            index.cp.seed = p["seed"]
            index.train(sample)
        else:
            index = faiss.IndexHNSWFlat(xb.shape[1], p["m"], metric)
            index.hnsw.efConstruction = p["ef_construction"]
        index.add(xb)
        log.info("built a %s index over %d items (%s)", kind, len(xb), p)
        return cls(emb, bias, index, p)

    def _set_search_params(self) -> None:
        if self._params["kind"] == "ivf":
            self.index.nprobe = self._params["nprobe"]
        else:
            self.index.hnsw.efSearch = max(self._params["ef_search"], self._params["candidates"])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = check_queries(queries, self.emb.shape[1], k, self.emb.shape[0])
        c = max(k, self._params["candidates"])
        _, labels = self.index.search(augmented_queries(q, self.bias is not None, L2_FOR[self._params["kind"]]), c)  # (B, c), -1 = none
        found = labels >= 0
        ids = np.where(found, labels + 1, 0).astype(np.int64)  # index row i is item i + 1
        scores = exact_scores(q, self.emb, self.bias, ids)
        scores[~found] = -np.inf
        order = np.lexsort((ids, -scores), axis=1)[:, :k]  # best first, equal scores by lower id
        top_s, top_i = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        short = found.sum(1) < k
        if short.any():  # probed cells held fewer than k items: exact for those queries
            top_s[short], top_i[short] = self._exact.search(q[short], k)
        return top_s.astype(np.float32), top_i

    def params(self) -> dict:
        return dict(self._params)

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / INDEX_FILE) as tmp:
            _faiss().write_index(self.index, str(tmp))
        write_params(folder, self.params(), self.emb, self.bias)

    @classmethod
    def load(cls, folder: Path, item_emb: np.ndarray, bias: np.ndarray | None, params: dict) -> "AnnIndex":
        path = Path(folder) / INDEX_FILE
        if not path.is_file():
            raise PopSteerError(f"{path}: missing (the index file beside {folder}/index.json)")
        try:
            index = _faiss().read_index(str(path))
        except RuntimeError as exc:
            raise PopSteerError(f"{path}: not a FAISS index ({str(exc).splitlines()[0][:200]})") from None
        d_aug = item_emb.shape[1] + (bias is not None) + L2_FOR[params["kind"]]
        if index.ntotal != item_emb.shape[0] - 1 or index.d != d_aug:
            raise PopSteerError(f"{path}: holds {index.ntotal} vectors of dimension {index.d}, expected "
                                f"{item_emb.shape[0] - 1} of {d_aug} for this item table")
        return cls(item_emb, bias, index, params)
