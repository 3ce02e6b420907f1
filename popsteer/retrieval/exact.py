"""The item-index protocol, and its exact member: brute-force scoring through the fused kernel.

Every index answers ``search(queries, k)`` with the k best items by the model's own score
``q . e_i + b_i`` (padding item 0 never returned), best first, with exact fp32 scores. Steering
moves only the query, so one index, built once from the item table, serves every alpha.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from popsteer.errors import PopSteerError
from popsteer.eval.evaluator import MIN_ROWS, rank_topk
from popsteer.util.atomic import write_text

PARAMS_FILE = "index.json"
FORMAT = 1


@runtime_checkable
class ItemIndex(Protocol):
    """What serving calls: exact or approximate top-k retrieval over one item table."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (B, d) float32 -> scores (B, k) float32, item ids (B, k) int64, best first, exact scores."""
        ...

    def params(self) -> dict:
        """JSON-able settings (kind, nlist, nprobe, candidates, ...)."""
        ...

    def save(self, folder: Path) -> None:
        """Write the index into ``folder`` (faiss.write_index + JSON; nothing pickled)."""
        ...


def check_table(item_emb: np.ndarray, bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The item table as contiguous float32 (n_items, d) and (n_items,) bias; PopSteerError on bad input."""
    emb = np.asarray(item_emb)
    if emb.ndim != 2 or emb.shape[0] < 2 or emb.shape[1] < 1:
        raise PopSteerError(f"item table: expected (n_items >= 2, d >= 1) vectors (row 0 = padding), got shape {emb.shape}")
    if not np.issubdtype(emb.dtype, np.floating) or not np.isfinite(emb).all():
        raise PopSteerError("item table: vectors must be finite floating-point numbers")
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    if bias is not None:
        b = np.asarray(bias)
        if b.shape != (emb.shape[0],) or not np.issubdtype(b.dtype, np.floating) or not np.isfinite(b).all():
            raise PopSteerError(f"item bias: expected {emb.shape[0]} finite floats (one per item), got shape {b.shape}")
        bias = np.ascontiguousarray(b, dtype=np.float32)
    return emb, bias


def check_queries(queries: np.ndarray, d: int, k: int, n_items: int) -> np.ndarray:
    """(B, d) float32 queries; PopSteerError naming the bad input."""
    q = np.asarray(queries)
    if q.ndim != 2 or q.shape[1] != d:
        raise PopSteerError(f"queries: expected shape (B, {d}), got {q.shape}")
    if not np.issubdtype(q.dtype, np.floating) or not np.isfinite(q).all():
        raise PopSteerError("queries: must be finite floating-point numbers")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n_items - 1:
        raise PopSteerError(f"k: expected an integer in [1, {n_items - 1}] (the catalog less its padding item), got {k!r}")
    return np.ascontiguousarray(q, dtype=np.float32)


def exact_scores(queries: np.ndarray, item_emb: np.ndarray, bias: np.ndarray | None, ids: np.ndarray) -> np.ndarray:
    """(B, C) scores ``q . e_i + b_i`` of the given (B, C) item ids, summed in fp64 and rounded once to fp32.

    fp32 products are exact in fp64, so each score is the correctly rounded fp32 value of the true sum
    (but where it lies within ~1e-14 of a rounding boundary), whatever the shape of the batch: a served
    request's scores do not depend on the requests answered beside it (an fp32 einsum's kernel, hence its
    rounding, changes with B and C)."""
    e = torch.from_numpy(item_emb)[torch.from_numpy(ids)].double()  # (B, C, d)
    s = (e * torch.from_numpy(queries).double()[:, None, :]).sum(-1)  # (B, C)
    if bias is not None:
        s += torch.from_numpy(bias)[torch.from_numpy(ids)].double()
    return s.float().numpy()


class ExactIndex:
    """Brute force: every item scored, through ``rank_topk``'s fused kernel (exactly ``torch.topk`` of
    ``q @ E.T + b`` with the padding item at -inf, as the grid ranks), in blocks of ``batch_size``."""

    def __init__(self, item_emb: np.ndarray, bias: np.ndarray | None = None, batch_size: int = 256):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise PopSteerError(f"batch_size: expected a positive integer, got {batch_size!r}")
        self.emb, self.bias = check_table(item_emb, bias)
        self.batch_size = batch_size

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = check_queries(queries, self.emb.shape[1], k, self.emb.shape[0])
        bias = None if self.bias is None else torch.from_numpy(self.bias)
        with torch.no_grad():
            ids = rank_topk(torch.from_numpy(q), torch.from_numpy(self.emb), k, max(self.batch_size, MIN_ROWS),
                            bias=bias).numpy()  # (B, k)
        return exact_scores(q, self.emb, self.bias, ids), ids

    def params(self) -> dict:
        return {"kind": "exact", "batch_size": self.batch_size}

    def save(self, folder: Path) -> None:
        write_params(Path(folder), self.params(), self.emb, self.bias)


def table_fingerprint(item_emb: np.ndarray, bias: np.ndarray | None) -> dict:
    """What a saved index must be loaded beside: the table's shape and whether it has a bias."""
    return {"n_items": int(item_emb.shape[0]), "d": int(item_emb.shape[1]), "bias": bias is not None}


def write_params(folder: Path, params: dict, item_emb: np.ndarray, bias: np.ndarray | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, **params, "table": table_fingerprint(item_emb, bias)}
    write_text(folder / PARAMS_FILE, json.dumps(doc, indent=2) + "\n")


def read_params(folder: Path) -> dict:
    path = Path(folder) / PARAMS_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise PopSteerError(f"{path}: no index here (expected {PARAMS_FILE})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PopSteerError(f"{path}: not a readable index description ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "kind" not in doc or "table" not in doc:
        raise PopSteerError(f"{path}: not an index description of format {FORMAT}")
    return doc
