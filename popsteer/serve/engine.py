"""One recommendation request, steered, from a serving bundle (no Ray, no HTTP: the app and the MLflow
model both call it).

For a user x (1, d): a known user's x is its recommender's encoding of its whole sequence (its last
``max_len`` items; a general model's user table row), a history's the encoding of that history, a vector is
x itself. With the SAE's pre-activations h = W_enc (x - b_dec) + b_enc and Eq. 3-4's shift delta(N, alpha,
alpha_unpop) (``popsteer.steering.steer``):

    replace:  x' = decode(TopK(ReLU(h + delta)))
    preserve: x' = x + decode(TopK(ReLU(h + delta))) - decode(TopK(ReLU(h)))
    learned:  preserve with the delta fitted at the request's lam (docs/METHOD.md §4b; the bundle's deltas)

the same functions the offline grid uses, so a user's list equals the grid's at that point (preserve with
delta = 0 is x itself, so the SAE is skipped: the unsteered baseline of a request costs no SAE work). Items are
ranked by x' @ E.T (+ bias) through the item index; a general model's known user has its history removed
(the index is asked for k + |history| and those are filtered out). ``moved``: the neurons whose activation
changed most, |z'_j - z_j| with z = TopK(ReLU(h)), z' = TopK(ReLU(h + delta)).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file

from popsteer.errors import PopSteerError
from popsteer.sae.io import load_sae
from popsteer.sae.topk import topk_relu
from popsteer.retrieval import load_index
from popsteer.serve.bundle import read_info
from popsteer.serve.schemas import RecommendRequest, RequestError
from popsteer.steering.steer import NeuronScores, steered_reconstruction, steering_delta

log = logging.getLogger(__name__)

MOVED = 8
"""Neurons reported per request: those whose activation steering changed most."""


class ServingEngine:
    """A loaded serving bundle answering ``recommend`` requests."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.info = read_info(folder)
        self.sae, _ = load_sae(folder / "sae.safetensors")
        t = load_file(str(folder / "tables.safetensors"))
        self.item_emb = t["item_emb"].numpy()  # (n_items, d)
        self.bias = t["item_bias"].numpy() if "item_bias" in t else None  # (n_items,)
        self.indptr, self.user_items = t["user_indptr"].numpy(), t["user_items"].numpy()  # CSR of sequences
        self.scores = NeuronScores(t["cohen_d"].numpy(), t["sigma_pop"].numpy(), t["sigma_unpop"].numpy())
        items = pq.read_table(folder / "items.parquet").to_pydict()
        self.item_tokens, self.titles = items["item_token"], items["title"]
        self.item_id = {tok: i for i, tok in enumerate(self.item_tokens) if i > 0}
        self.user_id = {tok: u for u, tok in enumerate(pq.read_table(folder / "users.parquet")["user_token"].to_pylist())}
        self.neurons = pq.read_table(folder / "neurons.parquet").to_pylist()
        self.index = load_index(folder / "index", self.item_emb, self.bias)
        self.learned = None  # learned steering: (lams (P,), deltas (P, n)) where the bundle has them
        if self.info.get("learned"):
            t = load_file(str(folder / "learned.safetensors"))
            self.learned = (t["lams"].numpy(), t["deltas"].float())
        self.model = None  # a vector-only bundle has no recommender
        if self.info.get("recommender", True):
            from popsteer.models.io import load_recommender

            self.model, _ = load_recommender(folder / "recommender.safetensors")
        self.d, self.width = int(self.info["d"]), int(self.info["n_latents"])
        self.general = bool(self.info["general"])
        log.info("serving %s (%s, %d items, %d neurons)", self.info["dataset"], self.info["model"],
                 len(self.item_tokens) - 1, self.width)

    # -- inputs ------------------------------------------------------------------------------------
    def _encode(self, seq: np.ndarray) -> torch.Tensor:
        """x (1, d) of a sequence of internal item ids, its last ``max_len`` items."""
        from popsteer.models.encode import encode_users

        seq = seq[-int(self.info["max_len"]):]
        padded = np.zeros((1, int(self.info["max_len"])), dtype=np.int64)
        padded[0, : len(seq)] = seq
        return encode_users(self.model, padded, np.array([len(seq)], dtype=np.int64))

    def user_input(self, req: RecommendRequest) -> tuple[torch.Tensor, np.ndarray]:
        """(x (1, d), the item ids never returned) of the request's user."""
        none = np.zeros(0, dtype=np.int64)
        if req.vector is not None:
            if len(req.vector) != self.d:
                raise RequestError("vector", f"has length {len(req.vector)}, the model's d is {self.d}")
            return torch.tensor([req.vector], dtype=torch.float32), none
        if self.model is None:
            field = "user_id" if req.user_id is not None else "history"
            raise RequestError(field, "this bundle has no recommender (vectors only): give vector")
        if req.user_id is not None:
            u = self.user_id.get(req.user_id)
            if u is None:
                raise RequestError("user_id", f"unknown user id {req.user_id!r}")
            seq = self.user_items[self.indptr[u] : self.indptr[u + 1]]
            if self.general:  # a transductive model: the user's row, its history masked
                return self.model.user_table[u : u + 1].clone(), np.unique(seq)
            return self._encode(seq), none
        if self.general:
            raise RequestError("history", f"the {self.info['model']} model cannot encode a history; give "
                                          "user_id or vector")
        unknown = [tok for tok in req.history if tok not in self.item_id]
        if unknown:
            raise RequestError("history", f"unknown item id(s) {unknown[:5]} ({len(unknown)} in all)")
        return self._encode(np.array([self.item_id[tok] for tok in req.history], dtype=np.int64)), none

    def setting(self, req: RecommendRequest) -> dict:
        """The request's steering knobs, the bundle's defaults where not given."""
        base = self.info["steering"]
        n = req.num_neurons if req.num_neurons is not None else min(int(base["num_neurons"]), self.width)
        if n > self.width:
            raise RequestError("num_neurons", f"must be <= {self.width} (the SAE's width), got {n}")
        if req.k > len(self.item_tokens) - 1:
            raise RequestError("k", f"must be <= {len(self.item_tokens) - 1} (the catalogue), got {req.k}")
        variant = req.variant or ("learned" if req.lam is not None else base["variant"])
        if variant == "learned":
            return {"variant": "learned", "lam": self.learned_lam(req.lam)}
        if req.lam is not None:
            raise RequestError("lam", f"is learned steering's weight; the variant is {variant}")
        alpha = req.alpha if req.alpha is not None else float(base["alpha"])
        unpop = req.alpha_unpop if req.alpha_unpop is not None else (
            base["alpha_unpop"] if req.alpha is None and req.num_neurons is None else None)
        return {"variant": variant, "num_neurons": int(n), "alpha": float(alpha),
                "alpha_unpop": None if unpop is None else float(unpop)}

    def learned_lam(self, lam: float | None) -> float:
        """The fitted lam a learned request asks for (default: the bundle's validation pick)."""
        if self.learned is None:
            raise RequestError("variant", "this bundle has no learned steering (run tune-steering --variant learned "
                                          "on the SAE, then build the bundle again)")
        lams = self.learned[0]
        if lam is None:
            lam = (self.info["learned"] or {}).get("pick")
            if lam is None:
                raise RequestError("lam", f"no validation pick of learned steering in this bundle: give one of "
                                          f"{[float(v) for v in lams]}")
        if not np.isclose(lams, lam, rtol=1e-9, atol=0).any():
            raise RequestError("lam", f"no learned delta fitted at lam {lam:g}; this bundle has "
                                      f"{[float(v) for v in lams]}")
        return float(lams[np.isclose(lams, lam, rtol=1e-9, atol=0)][0])

    @functools.lru_cache(maxsize=256)
    def delta(self, num_neurons: int, alpha: float, alpha_unpop: float | None) -> torch.Tensor:
        """Eq. 4's shift (n,) at one setting (cached: a few settings serve most requests)."""
        return steering_delta(self.scores, num_neurons, alpha, bool(self.info["steering"]["swap_sigma"]),
                              alpha_unpop)

    # -- the request ---------------------------------------------------------------------------------
    def recommend(self, req: RecommendRequest) -> dict:
        out = self.recommend_many([req])[0]
        if isinstance(out, RequestError):
            raise out
        return out

    def recommend_many(self, reqs: list[RecommendRequest]) -> list[dict | RequestError]:
        """Answer several requests with one index search over their stacked queries (one pass over the
        item table for all of them: exact scoring is bound by reading the table, so a batch of 8 costs
        about what one does). Each answer is the one ``recommend`` gives alone, or its ``RequestError``."""
        out: list[dict | RequestError] = [None] * len(reqs)
        ready = []  # (position, x' (1, d), masked ids, setting, moved)
        for i, req in enumerate(reqs):
            try:
                ready.append((i, *self._steer(req)))
            except RequestError as exc:
                out[i] = exc
        if ready:
            want = min(max(reqs[i].k + len(masked) for i, _, masked, _, _ in ready), len(self.item_tokens) - 1)
            queries = torch.cat([x for _, x, _, _, _ in ready]).numpy().astype(np.float32)  # (B, d)
            scores, ids = self.index.search(queries, want)  # (B, want) each
            for row, (i, _, masked, s, moved) in enumerate(ready):
                out[i] = {"items": self._items(scores[row], ids[row], masked, reqs[i].k), "steering": s,
                          "moved_neurons": moved}
        return out

    def _steer(self, req: RecommendRequest) -> tuple[torch.Tensor, np.ndarray, dict, list[dict]]:
        """(x' (1, d), the item ids never returned, the setting, the neurons moved) of one request."""
        x, masked = self.user_input(req)  # (1, d)
        s = self.setting(req)
        if s["variant"] == "learned":
            lams, deltas = self.learned
            delta = deltas[int(np.flatnonzero(lams == s["lam"])[0])]  # (n,)
        else:
            delta = self.delta(s["num_neurons"], s["alpha"], s["alpha_unpop"])  # (n,)
        preserve = s["variant"] in ("preserve", "learned")
        if preserve and not delta.any():  # x' = x bit for bit (preserve_error): no SAE work
            return x, masked, s, []
        with torch.no_grad():
            h = self.sae.preact(x)  # (1, n)
            x_new = steered_reconstruction(self.sae, h, delta, x=x if preserve else None)
            moved = self.moved(topk_relu(h, self.sae.k)[0], topk_relu(h + delta, self.sae.k)[0])  # z, z' (n,)
        return x_new, masked, s, moved

    def _items(self, scores: np.ndarray, ids: np.ndarray, masked: np.ndarray, k: int) -> list[dict]:
        """The best k of one row's (want,) search results, the masked items dropped."""
        if len(masked):
            keep = ~np.isin(ids, masked)
            scores, ids = scores[keep], ids[keep]
        return [{"item_id": self.item_tokens[i], "title": self.titles[i], "score": float(v)}
                for i, v in zip(ids[:k].tolist(), scores[:k].tolist())]

    def moved(self, z0: torch.Tensor, z1: torch.Tensor) -> list[dict]:
        change = z1 - z0  # (n,)
        order = torch.argsort(change.abs(), descending=True, stable=True)[:MOVED]
        return [{"neuron": int(j), "cohen_d": float(self.scores.d[j]), "before": float(z0[j]),
                 "after": float(z1[j]), "change": float(change[j])} for j in order.tolist() if change[j] != 0]

    def neuron_table(self) -> list[dict]:
        """Every analysed neuron (id, Cohen's d, label), top |d| first."""
        return sorted(self.neurons, key=lambda r: -abs(r["cohen_d"]))

    def health(self) -> dict:
        return {"status": "ok", "dataset": self.info["dataset"], "model": self.info["model"],
                "n_items": len(self.item_tokens) - 1, "n_neurons": self.width, "index": self.info["index"],
                "steering": self.info["steering"], "learned": self.info.get("learned")}


def check_bundle(folder: str | Path) -> None:
    """Refuse a folder that is not a bundle before any server starts."""
    if not Path(folder).is_dir():
        raise PopSteerError(f"serving bundle {folder} not found")
    read_info(folder)
