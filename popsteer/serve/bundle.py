"""The serving bundle: one folder with everything ``popsteer serve`` needs, and nothing pickled.

    bundle.json            what it is: dataset, model, d, width, the steering defaults, the index, hashes
    sae.safetensors        the SAE checkpoint (a copy)
    recommender.safetensors  its base recommender (a copy): encodes histories; a general model's user table
    tables.safetensors     item_emb (n_items, d), [item_bias (n_items,)], user_indptr (U+1,), user_items,
                           cohen_d, sigma_pop, sigma_unpop (n,)
    items.parquet          item_token, title (row i = internal item id i; row 0 = padding)
    users.parquet          user_token (row u = internal user index u)
    neurons.parquet        neuron, cohen_d, label ("" where unlabelled)
    index/                 the item index's own files (``popsteer.retrieval``)
    learned.safetensors    learned steering's fitted deltas (P, n) and their lams (P,), where the SAE has them

Learned steering (docs/METHOD.md §4b) is served from the deltas ``tune-steering --variant learned`` (or the
report) fitted for this SAE (``learned_deltas.safetensors`` of its results folder, checked by the SAE's hash);
its default lam is that grid's validation pick (``steering_pick-learned.json``).

The steering defaults are the validation-tuned pick of the SAE's grid (``steering_pick.json``, replace
variant) where that grid belongs to this SAE, else the paper's defaults (N = min(4096, width), alpha = 1.5).
The bundle is written to a temporary sibling folder and renamed into place whole. Logged to MLflow as a
pyfunc model by ``popsteer.serve.mlflow_model``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import save_file

from popsteer.errors import PopSteerError
from popsteer.retrieval import build_index
from popsteer.stages.config import SAERef
from popsteer.steering.steer import DEFAULT_ALPHA, DEFAULT_NUM_NEURONS
from popsteer.util import checkpoint

log = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.json"
VERSION = 1


def steering_defaults(results_dir: Path, sae_sha256: str, width: int) -> dict:
    """The validation pick of this SAE's grid, else the paper's defaults; ``source`` says which."""
    from popsteer.browse.tradeoff import validation_pick

    pick, swap, _ = validation_pick(results_dir, sae_sha256)
    if pick:
        return {"variant": "replace", **pick, "swap_sigma": swap, "source": str(results_dir / "steering_pick.json")}
    return {"variant": "replace", "num_neurons": min(DEFAULT_NUM_NEURONS, width), "alpha": DEFAULT_ALPHA,
            "alpha_unpop": None, "swap_sigma": False, "source": "paper defaults (no validation pick of this SAE)"}


def learned_steering(results_dir: Path, sae_sha256: str) -> dict | None:
    """This SAE's fitted learned deltas: {"lams" (P,), "deltas" (P, n), "pick" lam or None}; None without any."""
    from safetensors.torch import load_file

    from popsteer.stages.learned import DELTAS_FILE, IDENTITY_FILE

    try:
        saved = json.loads((results_dir / IDENTITY_FILE).read_text())
        if saved["identity"]["sae_sha256"] != sae_sha256:
            return None
        tensors = load_file(results_dir / DELTAS_FILE)
        lams = [float(f["lam"]) for f in saved["fits"]]
        deltas = torch.stack([tensors[f"lam_{i}"] for i in range(len(lams))]).float()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    pick = None
    try:
        pick = json.loads((results_dir / "steering_pick-learned.json").read_text()).get("pick") or None
    except (OSError, ValueError):
        pass
    lam = None if pick is None else float(pick.get("lam"))
    return {"lams": torch.tensor(lams, dtype=torch.float64), "deltas": deltas, "pick": lam if lam in lams else None}


def _titles(ctx) -> np.ndarray:
    from popsteer.browse.metadata import item_metadata
    from popsteer.models.item_ids import shared_datasets_dir

    try:
        return item_metadata(ctx.data, ctx.base.where.data_dir, shared_datasets_dir()).titles.astype(str)
    except PopSteerError as exc:
        log.warning("no item titles: %s", exc)
        return ctx.data.item_tokens.astype(str)


def _neuron_labels(ctx, sha: str) -> list[str]:
    from popsteer.report.neurons import read_labels

    labels = read_labels(ctx.results_dir, sha)
    out = [""] * int(ctx.meta["n_latents"])
    if labels is not None:
        for j, text in zip(labels["neuron"], labels["label"]):
            out[int(j)] = str(text)
    return out


def _write_parquet(path: Path, columns: dict) -> None:
    pq.write_table(pa.table(columns), path)


def build_bundle(ref: SAERef, out: str | Path, index: str = "exact", index_params: dict | None = None) -> Path:
    """Write the serving bundle of the analysed SAE of ``ref`` to the folder ``out`` (replacing an earlier
    bundle there; any other existing folder is refused)."""
    from popsteer.stages.context import load_sae_context

    out = Path(out)
    check_dest(out)
    ctx = load_sae_context(ref)
    scores = ctx.scores()  # an unanalysed SAE is refused before anything is written
    sha = checkpoint.file_sha256(ctx.path)
    width = int(ctx.meta["n_latents"])
    table, data = ctx.base.table, ctx.data
    return write_bundle(
        out, sae_path=ctx.path, base_path=ctx.base.path, emb=table.emb, bias=table.bias,
        sequences=(data.offsets, data.items), item_tokens=data.item_tokens.astype(str).tolist(),
        titles=_titles(ctx).tolist(), user_tokens=data.user_tokens.astype(str).tolist(),
        scores={"cohen_d": scores.d, "sigma_pop": scores.sigma_pop, "sigma_unpop": scores.sigma_unpop},
        labels=_neuron_labels(ctx, sha), steering=steering_defaults(ctx.results_dir, sha, width), index=index,
        index_params=index_params, learned=learned_steering(ctx.results_dir, sha),
        facts={"dataset": data.name, "model": ctx.base.model.name, "general": bool(table.general),
               "max_len": int(data.max_len), "sae_checkpoint": str(ctx.path.resolve()), "sae_sha256": sha,
               "base_checkpoint": str(ctx.base.path.resolve()), "base_sha256": ctx.meta["base_sha256"]})


def check_dest(out: Path) -> None:
    if out.exists() and not (out / BUNDLE_FILE).is_file():
        raise PopSteerError(f"--bundle-dir {out} exists and is not a serving bundle: give a new folder")


def write_bundle(out: str | Path, *, sae_path: Path, base_path: Path | None, emb: torch.Tensor,
                 bias: torch.Tensor | None, sequences: tuple[np.ndarray, np.ndarray] | None, item_tokens: list[str],
                 titles: list[str], user_tokens: list[str], scores: dict[str, np.ndarray], labels: list[str],
                 steering: dict, index: str, facts: dict, index_params: dict | None = None,
                 learned: dict | None = None) -> Path:
    """The bundle folder from its parts (module docstring). ``base_path`` None: a vector-only bundle (no
    recommender: requests must carry a vector). ``sequences``: CSR ``(indptr (U+1,), items)`` of the users'
    sequences. ``scores``: cohen_d, sigma_pop, sigma_unpop, each (n,)."""
    from popsteer.sae.io import load_sae

    out = Path(out)
    check_dest(out)
    sae, meta = load_sae(sae_path)
    emb = emb.detach().float().contiguous()  # (n_items, d)
    bias = None if bias is None else bias.detach().float().contiguous()  # (n_items,)
    idx = build_index(emb.numpy(), None if bias is None else bias.numpy(), kind=index, **(index_params or {}))
    indptr, items = sequences if sequences is not None else (np.zeros(1, np.int64), np.zeros(0, np.int64))
    info = {"version": VERSION, "kind": "popsteer-serving-bundle", **facts, "d": int(emb.shape[1]),
            "n_latents": int(meta["n_latents"]), "sae_k": int(sae.k), "n_items": int(emb.shape[0]),
            "n_users": len(user_tokens), "recommender": base_path is not None, "steering": steering,
            "index": idx.params(),
            "learned": None if learned is None else {"lams": learned["lams"].tolist(), "pick": learned["pick"]},
            "created": _dt.datetime.now().isoformat(timespec="seconds")}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copyfile(sae_path, tmp / "sae.safetensors")
        if base_path is not None:
            shutil.copyfile(base_path, tmp / "recommender.safetensors")
        tensors = {"item_emb": emb, "user_indptr": torch.from_numpy(np.asarray(indptr, dtype=np.int64)),
                   "user_items": torch.from_numpy(np.asarray(items, dtype=np.int64)),
                   **{k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)) for k, v in scores.items()}}
        if bias is not None:
            tensors["item_bias"] = bias
        save_file(tensors, str(tmp / "tables.safetensors"))
        _write_parquet(tmp / "items.parquet", {"item_token": item_tokens, "title": titles})
        _write_parquet(tmp / "users.parquet", {"user_token": pa.array(user_tokens, type=pa.string())})
        _write_parquet(tmp / "neurons.parquet", {"neuron": np.arange(len(labels), dtype=np.int64),
                                                 "cohen_d": np.asarray(scores["cohen_d"]), "label": labels})
        if learned is not None:
            save_file({"lams": learned["lams"], "deltas": learned["deltas"].contiguous()}, str(tmp / "learned.safetensors"))
        (tmp / "index").mkdir()
        idx.save(tmp / "index")
        (tmp / BUNDLE_FILE).write_text(json.dumps(info, indent=2))  # last: the folder is complete
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("serving bundle of %s -> %s (steering defaults: %s)", Path(sae_path).name, out, steering["source"])
    return out


def read_info(folder: str | Path) -> dict:
    """``bundle.json`` of a bundle folder, with one clear line when it is not one."""
    path = Path(folder) / BUNDLE_FILE
    try:
        info = json.loads(path.read_text())
    except OSError:
        raise PopSteerError(f"{folder} is not a serving bundle (no readable {BUNDLE_FILE})") from None
    except ValueError as exc:
        raise PopSteerError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(info, dict) or info.get("kind") != "popsteer-serving-bundle":
        raise PopSteerError(f"{path} does not describe a PopSteer serving bundle")
    if info.get("version") != VERSION:
        raise PopSteerError(f"{path}: bundle version {info.get('version')}, this PopSteer reads {VERSION}")
    return info
