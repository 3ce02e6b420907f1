"""What the stages after training load: a recommender checkpoint with its dataset, or an SAE with its base.

``load_base`` reads a recommender checkpoint's header and item table (no model is built:
the stages after training only need the item table; encoding loads the model itself) and
the dataset it belongs to. ``load_sae_context`` adds the SAE, checks that its base is the
file it was trained on (path inside the allowed roots, SHA-256 unchanged) and of the
dataset asked for, and knows where the SAE's results live.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from popsteer.data import SequenceData, check_catalog, load_dataset
from popsteer.errors import PopSteerError
from popsteer.eval.evaluator import Evaluator, ItemTable
from popsteer.models.io import data_config
from popsteer.models.registry import ModelSpec, model_of
from popsteer.sae.io import load_sae
from popsteer.sae.model import TopKSAE
from popsteer.stages.config import EncodeConfig, SAERef, Workspace
from popsteer.stages.encode import Encoder, encoded_root, ensure_encoded
from popsteer.stages.encoded import Encodings, Part
from popsteer.steering import results
from popsteer.steering.steer import NeuronScores
from popsteer.util import checkpoint
from popsteer.util.safepaths import base_roots, check_inside

@dataclass
class BaseContext:
    """A recommender checkpoint, its dataset and its item table."""

    path: Path
    meta: dict
    data: SequenceData
    table: ItemTable
    model: ModelSpec
    where: Workspace
    encode: EncodeConfig

    @property
    def item_emb(self) -> torch.Tensor:
        """(n_items, d), row 0 = padding."""
        return self.table.emb

    @property
    def d(self) -> int:
        return int(self.item_emb.shape[1])

    def evaluator(self, split: str, **kwargs) -> Evaluator:
        """The split's evaluator with this model's item bias and history rule."""
        return Evaluator.for_split(self.data, split, self.table, **kwargs)

    def encodings(self, parts: list[Part], executor: Encoder | None = None) -> Encodings:
        """The base's encoded parts (computed where missing)."""
        return ensure_encoded(self.path, self.data, parts, encoded_root(self.encode, self.where.out_dir), self.encode,
                              executor)


def load_base(path: str | Path, where: Workspace, encode: EncodeConfig | None = None,
              data: SequenceData | None = None) -> BaseContext:
    """A recommender checkpoint with its dataset (checked: same items) and item table."""
    path = Path(path)
    tensors, meta = checkpoint.load(path, kind="sasrec")
    if data is None:
        data = load_dataset(meta["dataset"], where.data_dir, max_len=model_of(meta, str(path))[1].max_len,
                            cfg=data_config(meta, str(path)))
    if meta["dataset"] != data.name:
        raise PopSteerError(f"{path} was trained on '{meta['dataset']}', not '{data.name}'")
    if meta["item_tokens"] != data.item_tokens.tolist():
        raise PopSteerError(f"{path}: its item ids do not match dataset '{data.name}' as loaded now")
    check_catalog(data)
    spec = model_of(meta, str(path))[0]
    table = spec.item_table(tensors, str(path))
    if table.emb.shape[0] != meta["n_items"]:
        raise PopSteerError(f"checkpoint {path}: its item table has shape {tuple(table.emb.shape)}, the header's "
                            f"n_items is {meta['n_items']}")
    return BaseContext(path, meta, data, table, spec, where, encode or EncodeConfig())


@dataclass
class SAEContext:
    """An SAE, its header and its base recommender's context."""

    path: Path
    sae: TopKSAE
    meta: dict
    base: BaseContext

    @property
    def data(self) -> SequenceData:
        return self.base.data

    @property
    def results_dir(self) -> Path:
        """The SAE's own results folder (``popsteer.steering.results``)."""
        return results.sae_dir(self.base.where.data_dir, self.data.name, self.path)

    def scores(self) -> NeuronScores:
        """The SAE's analysis (its own folder, else the seed's), checked against its hash."""
        folder = results.analysis_dir(self.base.where.data_dir, self.data.name, self.path)
        return results.read_scores(folder, self.path, self.meta["n_latents"])


def base_of(sae_path: Path, meta: dict, where: Workspace) -> Path:
    """The SAE's base recommender: inside the allowed roots, present and unchanged since training."""
    roots = [*base_roots(), sae_path.resolve().parent, where.data_dir, where.out_dir, *where.allowed_roots]
    base = check_inside("base_checkpoint", meta["base_checkpoint"], roots, str(sae_path))
    if not base.exists():
        raise PopSteerError(f"the SAE's base recommender {base} is missing")
    if checkpoint.file_sha256(base) != meta["base_sha256"]:
        raise PopSteerError(f"the SAE's base recommender {base} changed since the SAE was trained (hash differs)")
    return base


def load_sae_context(ref: SAERef, data: SequenceData | None = None) -> SAEContext:
    """The SAE of ``ref``, its base (checked by hash) and the dataset they belong to."""
    path = Path(ref.path)
    sae, meta = load_sae(path)
    if ref.dataset and ref.dataset != meta["dataset"]:
        raise PopSteerError(f"{path} is an SAE of dataset '{meta['dataset']}', not '{ref.dataset}'")
    base = load_base(base_of(path, meta, ref.where), ref.where, ref.encode, data)
    if meta.get("base_model", base.model.name) != base.model.name:
        raise PopSteerError(f"{path} is an SAE of a {meta['base_model']} model, its base is {base.model.name}")
    if int(meta["d"]) != base.d:
        raise PopSteerError(f"{path} has d={meta['d']}, its base's item table d={base.d}")
    if meta["dataset"] != base.data.name:
        raise PopSteerError(f"{path}: header field 'dataset' is '{meta['dataset']}', its base recommender "
                            f"{base.path} was trained on '{base.data.name}'")
    return SAEContext(path, sae, meta, base)
