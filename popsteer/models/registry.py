"""The base recommenders PopSteer knows, by name: how to build, train and read each (no RecBole import here).

PopSteer needs of a model only its user representation x, its item table E (and an item bias
where it has one): scores are ``x @ E.T (+ b)``. An entry names RecBole's class, its
architecture config (field names are RecBole's config keys, but ``max_len`` =
``MAX_ITEM_LIST_LENGTH``), which field is d, and a CI-sized variant. The RecBole adapter builds
the class and knows each model's all-position outputs (``recbole_adapter.sequence_output``).
A recommender checkpoint's header records ``model`` and ``arch``.

Checked (``tests/test_models.py``): ``sasrec`` and ``gru4rec``, both sequential, both scored by
``full_sort_predict`` as ``x @ item_embedding.weight.T`` without history masking, both trained by
the all-position trainer or RecBole's own.
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
    """GRU4Rec architecture (RecBole's defaults for GRU4Rec)."""

    __pydantic_config__ = CONFIG

    embedding_size: int = 64
    """Width d of the item embeddings and of the user representation x (the GRU's output is projected to it)."""
    hidden_size: int = 128
    """The GRU's hidden width."""
    num_layers: int = 1
    dropout_prob: float = 0.3
    """Dropout on the input item embeddings."""
    max_len: int = 50
    """Maximum history length."""

    @classmethod
    def small(cls) -> "GRU4RecConfig":
        return cls(embedding_size=32, hidden_size=64, max_len=20)


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

    def architecture(self, small: bool = False) -> Any:
        return self.arch.small() if small else self.arch()

    def d(self, arch: Any) -> int:
        return int(getattr(arch, self.d_field))

    def recbole_keys(self, arch: Any) -> dict:
        """RecBole config keys of the architecture (CE loss over all items)."""
        keys = {f.name: getattr(arch, f.name) for f in dataclasses.fields(arch) if f.name != "max_len"}
        return {**keys, "MAX_ITEM_LIST_LENGTH": arch.max_len, "loss_type": "CE"}


MODELS: dict[str, ModelSpec] = {
    "sasrec": ModelSpec("sasrec", "SASRec", "recbole.model.sequential_recommender.sasrec", SASRecConfig, "hidden_size"),
    "gru4rec": ModelSpec("gru4rec", "GRU4Rec", "recbole.model.sequential_recommender.gru4rec", GRU4RecConfig,
                         "embedding_size"),
}


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise PopSteerError(f"unknown model '{name}': choose {', '.join(MODELS)}") from None


def spec_for(module) -> ModelSpec:
    """The entry of a built RecBole model (by its class)."""
    name = type(module).__name__
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
    spec = get_model(meta.get("model", "sasrec"))
    arch = meta.get("arch", meta.get("sasrec"))
    if arch is None:
        raise PopSteerError(f"{source}: the header has no architecture ('arch')")
    return spec, validate(spec.arch, arch, source, "arch")
