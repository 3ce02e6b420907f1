"""The base recommenders PopSteer knows, by name: how to build, train and read each (no RecBole import here).

PopSteer needs of a model only its user representation x, its item table E (and an item bias
where it has one): scores are ``x @ E.T (+ b)``. An entry names RecBole's class, its
architecture config (field names are RecBole's config keys, but ``max_len`` =
``MAX_ITEM_LIST_LENGTH``), which field is d, and a CI-sized variant. The RecBole adapter builds
the class; ``popsteer.models.outputs`` reads x from it (``user_output``, ``sequence_output``).
A recommender checkpoint's header records ``model`` and ``arch``.

Checked (``tests/test_models.py``): ``sasrec`` and ``gru4rec``, both sequential, both scored by
``full_sort_predict`` as ``x @ item_embedding.weight.T`` without history masking, both trained by
the all-position trainer or RecBole's own; ``bert4rec`` (bidirectional: RecBole's masked-item
trainer; x = the output at the appended mask token; scores ``x @ E[:-1].T + output_bias``);
``lightgcn`` (general and transductive: RecBole's BPR trainer; its checkpoint holds the propagated
user and item tables, x = the user's row; RecBole masks the user's history when ranking).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from popsteer.errors import PopSteerError
from popsteer.models.config import SASRecConfig
from popsteer.util.configs import CONFIG, validate


@dataclass
class GRU4RecConfig:
    """GRU4Rec architecture (RecBole's defaults): item embeddings of width ``embedding_size`` (= d, the
    GRU's output is projected back to it), ``num_layers`` GRU layers of width ``hidden_size``,
    ``dropout_prob`` on the input embeddings, histories of at most ``max_len`` items."""

    __pydantic_config__ = CONFIG

    embedding_size: int = 64
    hidden_size: int = 128
    num_layers: int = 1
    dropout_prob: float = 0.3
    max_len: int = 50

    @classmethod
    def small(cls) -> "GRU4RecConfig":
        return cls(embedding_size=32, hidden_size=64, max_len=20)


@dataclass
class BERT4RecConfig(SASRecConfig):
    """BERT4Rec architecture: SASRec's transformer, bidirectional (RecBole's defaults for BERT4Rec)."""

    hidden_dropout_prob: float = 0.2
    attn_dropout_prob: float = 0.2
    mask_ratio: float = 0.2
    """Share of training positions replaced by the mask token (the cloze task)."""


@dataclass
class LightGCNConfig:
    """LightGCN architecture (RecBole's defaults): user and item embeddings of width ``embedding_size``
    (= d) propagated over ``n_layers`` layers (x and E: the mean of the layer outputs), L2 weight
    ``reg_weight``. ``max_len`` only shapes the dataset's sequence views (the same leave-one-out splits)."""

    __pydantic_config__ = CONFIG

    embedding_size: int = 64
    n_layers: int = 2
    reg_weight: float = 1e-5
    require_pow: bool = False
    max_len: int = 50

    @classmethod
    def small(cls) -> "LightGCNConfig":
        return cls(embedding_size=32, max_len=20)


@dataclass
class VectorsConfig:
    """Imported vectors (``popsteer import-vectors``): any model's item table E (width ``d``, an item bias
    where ``bias``) and its user vectors, written straight into the encoded store. ``mask_history``: the
    model ranks a user's earlier items out, as a general model does (LightGCN); a sequential one does not.
    ``max_len`` only shapes the dataset's history views (the probe's groups, the browser's histories)."""

    __pydantic_config__ = CONFIG

    d: int = 64
    max_len: int = 50
    mask_history: bool = False
    bias: bool = False

    @classmethod
    def small(cls) -> "VectorsConfig":
        return cls(d=32, max_len=20)


# the batch keys RecBole's mask_itemseq transform writes (read by BERT4Rec.calculate_loss)
_BERT4REC_KEYS = {"MASK_ITEM_SEQ": "Mask_item_id_list", "POS_ITEMS": "Pos_item_id", "NEG_ITEMS": "Neg_item_id",
                  "MASK_INDEX": "MASK_INDEX", "transform": "mask_itemseq", "ft_ratio": 0.5}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    """The name users give (``--model``)."""
    recbole_class: str
    recbole_module: str
    arch: type
    """Its architecture config dataclass (with a ``small()`` CI-sized variant)."""
    d_field: str
    """The architecture field that is d, the width of x and E."""
    all_positions: bool = True
    """Its output at every position is that prefix's x (causal): the all-position trainer and
    windowed prefix encoding apply. Otherwise prefixes are encoded one by one and RecBole trains it."""
    table_key: str = "item_embedding.weight"
    """The checkpoint tensor holding E."""
    drop_last_row: bool = False
    """E's last row is not an item (BERT4Rec's mask token)."""
    bias_key: str | None = None
    """The checkpoint tensor holding the item bias b, if the model has one."""
    general: bool = False
    """A general (non-sequential) model: RecBole masks the user's history when ranking, and x is
    one vector per user (no profile can be encoded: probe with real user groups)."""
    imported: bool = False
    """Its user vectors were imported (``popsteer import-vectors``): the encoded store's train, valid and
    test parts were written at import, nothing is encoded, and no profile can be (probe with real users)."""

    @property
    def transductive(self) -> bool:
        """No new profile can be encoded: a general model, or imported vectors."""
        return self.general or self.imported

    @property
    def trainers(self) -> tuple[str, ...]:
        return ("allpos", "recbole") if self.all_positions else ("recbole",)

    @property
    def default_probe(self) -> str:
        return "users" if self.transductive else "synthetic"

    def item_table(self, tensors: dict, source: str = ""):
        """E (and b) of a checkpoint's tensors, an ``ItemTable``; scores are ``x @ E.T (+ b)``."""
        from popsteer.eval.evaluator import ItemTable  # torch: not at import (``popsteer status`` stays light)

        for key in (self.table_key, self.bias_key):
            if key is not None and key not in tensors:
                raise PopSteerError(f"{source}: no tensor '{key}' ({self.recbole_class}'s item table)")
        emb = tensors[self.table_key].float()
        if self.drop_last_row:
            emb = emb[:-1]
        bias = tensors[self.bias_key].float() if self.bias_key else None
        return ItemTable(emb, bias, general=self.general)

    def architecture(self, small: bool = False) -> Any:
        return self.arch.small() if small else self.arch()

    def d(self, arch: Any) -> int:
        return int(getattr(arch, self.d_field))

    def recbole_keys(self, arch: Any) -> dict:
        """RecBole config keys of the architecture (CE loss over all items)."""
        keys = {f.name: getattr(arch, f.name) for f in dataclasses.fields(arch) if f.name != "max_len"}
        return {**keys, **self.extra_keys, "MAX_ITEM_LIST_LENGTH": arch.max_len, "loss_type": "CE"}

    @property
    def extra_keys(self) -> dict:
        return _BERT4REC_KEYS if self.recbole_class == "BERT4Rec" else {}

    @property
    def pipeline_keys(self) -> dict:
        """RecBole pipeline keys the model needs (a general model's BPR training: one uniform negative)."""
        if not self.general:
            return {}
        return {"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1, "alpha": 1.0,
                                          "dynamic": False, "candidate_num": 0}}


MODELS: dict[str, ModelSpec] = {
    "sasrec": ModelSpec("sasrec", "SASRec", "recbole.model.sequential_recommender.sasrec", SASRecConfig, "hidden_size"),
    "gru4rec": ModelSpec("gru4rec", "GRU4Rec", "recbole.model.sequential_recommender.gru4rec", GRU4RecConfig,
                         "embedding_size"),
    "bert4rec": ModelSpec("bert4rec", "BERT4Rec", "recbole.model.sequential_recommender.bert4rec", BERT4RecConfig,
                          "hidden_size", all_positions=False, drop_last_row=True, bias_key="output_bias"),
    "lightgcn": ModelSpec("lightgcn", "LightGCN", "recbole.model.general_recommender.lightgcn", LightGCNConfig,
                          "embedding_size", all_positions=False, table_key="item_table", general=True),
}


VECTORS = ModelSpec("vectors", "Vectors", "", VectorsConfig, "d", all_positions=False, table_key="item_table",
                    imported=True)
"""Imported vectors: not a RecBole model, never built nor trained (not in ``MODELS``: no ``--model`` names it);
a checkpoint's header names it (``model_of``)."""


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise PopSteerError(f"unknown model '{name}': choose {', '.join(MODELS)}") from None


def spec_for(module) -> ModelSpec:
    """The entry of a built RecBole model (by its class)."""
    name = getattr(module, "recbole_class", type(module).__name__)
    for spec in MODELS.values():
        if spec.recbole_class == name:
            return spec
    raise PopSteerError(f"no registry entry for RecBole's {name}")


def of_recbole_class(name: str | None) -> ModelSpec:
    """The entry of a RecBole model class name (a foreign checkpoint's config); SASRec when unnamed."""
    for spec in MODELS.values():
        if spec.recbole_class == (name or "SASRec"):
            return spec
    raise PopSteerError(f"RecBole model {name} is not supported: choose one of "
                        f"{', '.join(s.recbole_class for s in MODELS.values())}")


def model_of(meta: dict, source: str = "") -> tuple[ModelSpec, Any]:
    """(entry, architecture) of a recommender checkpoint's header (headers from before ``model``: SASRec)."""
    spec = VECTORS if meta.get("model") == VECTORS.name else get_model(meta.get("model", "sasrec"))
    arch = meta.get("arch", meta.get("sasrec"))
    if arch is None:
        raise PopSteerError(f"{source}: the header has no architecture ('arch')")
    arch = validate(spec.arch, arch, source, "arch")
    if spec.imported:  # its history rule and bias are the import's
        spec = dataclasses.replace(spec, general=arch.mask_history, bias_key="item_bias" if arch.bias else None)
    return spec, arch
