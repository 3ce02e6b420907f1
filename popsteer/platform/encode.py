"""The encode stage on Ray Data: the blocks of ``popsteer.stages.encode`` over an actor pool.

``RayDataEncoder`` is an executor of ``ensure_encoded``: ``map_batches`` runs
``encode_block`` (the same function the in-process ``LocalEncoder`` runs) in actors that each
load the checkpoint once, and ``write_parquet`` writes ``<staging>/part=<name>/*.parquet``;
``ensure_encoded`` then publishes each part with its manifest. Actors take a GPU each when
asked to (``gpus_per_actor``; default 1 when the cluster has GPUs).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa

from popsteer.models.registry import model_of
from popsteer.stages.config import EncodeConfig
from popsteer.stages.encode import encode_block

log = logging.getLogger(__name__)


class BlockEncoder:
    """Ray Data class UDF: loads the checkpoint once per actor, encodes batches of input rows."""

    def __init__(self, checkpoint_path: str, batch_size: int, train_mode_parts: tuple[str, ...], seed: int) -> None:
        from popsteer.models.io import load_recommender
        from popsteer.platform.cluster import torch_device

        model, meta = load_recommender(checkpoint_path)
        device = torch_device()
        self.model = model.to(device)  # encode_users / encode_windows move inputs to it, outputs back
        spec, arch = model_of(meta, checkpoint_path)
        self.d = spec.d(arch)
        self.batch_size = batch_size
        self.window_batch = 512 if device.type == "cpu" else 8192  # windows per forward
        self.train_mode_parts = tuple(train_mode_parts)
        self.seed = seed

    def __call__(self, batch: pa.Table) -> pa.Table:
        return encode_block(self.model, batch, self.d, self.batch_size, self.window_batch, self.train_mode_parts,
                            self.seed)


class RayDataEncoder:
    """An executor of the encode stage on the connected Ray cluster."""

    def __init__(self, actors: int = 2, cpus_per_actor: float = 0.5, gpus_per_actor: float | None = None) -> None:
        self.actors, self.cpus_per_actor, self.gpus_per_actor = actors, cpus_per_actor, gpus_per_actor

    def run(self, checkpoint_path: str, blocks: list[pa.Table], out: Path, cfg: EncodeConfig,
            train_mode_parts: tuple[str, ...]) -> None:
        import ray
        from ray.data import ActorPoolStrategy

        from popsteer.platform.cluster import cluster_gpus

        gpus = self.gpus_per_actor if self.gpus_per_actor is not None else (1.0 if cluster_gpus() >= 1 else 0.0)
        ds = ray.data.from_arrow(blocks)
        encoded = ds.map_batches(
            BlockEncoder,
            fn_constructor_kwargs={"checkpoint_path": str(checkpoint_path), "batch_size": cfg.batch_size,
                                   "train_mode_parts": tuple(train_mode_parts), "seed": cfg.profile_seed},
            batch_size=cfg.batch_size,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(size=self.actors),
            num_cpus=self.cpus_per_actor,
            **({"num_gpus": gpus} if gpus > 0 else {}),
        )
        encoded.write_parquet(str(out), partition_cols=["part"])
        log.info("Ray Data encoded %d blocks on %d actors (%s GPU each)", len(blocks), self.actors, gpus)
