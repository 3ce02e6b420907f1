"""Connecting to Ray: a running cluster when there is one, else a local instance."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def connect(num_cpus: int | None = None) -> str:
    """``ray.init`` once: ``$RAY_ADDRESS`` if set, else a running cluster ("auto"), else a local one.

    Sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (unless set) so that a local instance listens on
    127.0.0.1 only. Returns how it connected: "address", "auto" or "local".
    """
    import ray

    if ray.is_initialized():
        return "existing"
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        log.info("connected to the Ray cluster at %s", address)
        return "address"
    try:
        ray.init(address="auto", log_to_driver=True)
        log.info("connected to the running Ray cluster")
        return "auto"
    except ConnectionError:
        pass
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
    log.info("no Ray cluster running: started a local one (%s CPUs)", ray.cluster_resources().get("CPU"))
    return "local"


def cluster_gpus() -> float:
    """GPUs in the connected cluster (0 when none)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def torch_device():
    """cuda when this process was given a GPU, else cpu."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
