"""The ``popsteer serve`` stage: build (or fetch) the serving bundle, optionally log it to MLflow, serve it."""

from __future__ import annotations

import logging
from pathlib import Path

from popsteer.stages.config import SAERef
from popsteer.stages.config_serve import ServeConfig

log = logging.getLogger(__name__)


def prepare_bundle(cfg: ServeConfig) -> tuple[Path, dict]:
    """(the bundle folder, what was done): built from ``-p`` (and logged with ``--register``), or fetched
    from ``--model-uri``."""
    from popsteer.serve import mlflow_model
    from popsteer.serve.bundle import build_bundle

    if cfg.model_uri is not None:
        dest = Path(cfg.bundle_dir) if cfg.bundle_dir else mlflow_model.bundle_dest(cfg.model_uri, cfg.where.out_dir)
        return mlflow_model.fetch_bundle(cfg.model_uri, dest), {"model_uri": cfg.model_uri}
    if cfg.register:
        mlflow_model.check_tracking()  # before the bundle is built
    dest = Path(cfg.bundle_dir) if cfg.bundle_dir else (
        Path(cfg.where.out_dir) / "serve" / f"{Path(cfg.path).stem}-{cfg.index}")
    bundle = build_bundle(SAERef(cfg.path, cfg.dataset, cfg.where), dest, cfg.index)
    done = {"sae": cfg.path}
    if cfg.register:
        done["mlflow"] = mlflow_model.log_bundle(bundle, cfg.register)
    return bundle, done


def serve(cfg: ServeConfig, block: bool = True) -> dict:
    """Serve ``cfg``'s bundle until interrupted (``block``), or return once it is up (tests, benchmarks)."""
    bundle, done = prepare_bundle(cfg)
    out = {"bundle": str(bundle), **done}
    if cfg.build_only:
        return out
    from popsteer.serve.app import connect_ray, serve_forever, start_app

    connect_ray()
    url = start_app(bundle, host=cfg.host, port=cfg.port, replicas=cfg.replicas, replica_cpus=cfg.replica_cpus,
                    batch=cfg.batch)
    if block:
        serve_forever(url)
    return {**out, "url": url}
