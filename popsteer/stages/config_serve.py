"""The typed config of ``popsteer serve``: an analysed SAE's steered recommendations over HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from popsteer.errors import PopSteerError
from popsteer.stages.config import Workspace
from popsteer.util.configs import CONFIG


@dataclass
class ServeConfig:
    """Serve an analysed SAE (its serving bundle: the SAE, its recommender, the item table and index, the
    neuron table, the validation-tuned steering) on Ray Serve behind a FastAPI app: POST /recommend,
    GET /health, GET /neurons. Ray: $RAY_ADDRESS's cluster when set, else a local one."""

    __pydantic_config__ = CONFIG

    path: str | None = None
    """The analysed SAE checkpoint (.safetensors) whose bundle is built and served."""
    model_uri: str | None = None
    """Serve a bundle logged to MLflow instead, e.g. models:/NAME/1 (needs MLFLOW_TRACKING_URI)."""
    dataset: str | None = None
    """Refuse an SAE of another dataset."""
    host: str = "127.0.0.1"
    """Address the HTTP server binds."""
    port: int = 8000
    """Port of the HTTP server, in [1, 65535]."""
    replicas: int = 1
    """Model replicas (Ray actors), in [1, 64]."""
    replica_cpus: float = 1.0
    """CPUs reserved per model replica, in (0, 64]."""
    batch: int = 8
    """Requests a replica answers together, in [1, 256]: one index search (one pass over the item table) for
    all of them; the first waits at most 2 ms for company."""
    index: Literal["exact", "ivf", "hnsw"] = "exact"
    """Item retrieval: exact scores of every item, or a FAISS index (IVF, HNSW) whose candidates are re-scored
    exactly (popsteer.retrieval)."""
    bundle_dir: str | None = None
    """Where the bundle is written (replaced if it holds an earlier bundle); default
    <out-dir>/serve/<SAE file stem>-<index>, or <out-dir>/serve/models/<name>-<version> for --model-uri."""
    register: str | None = None
    """Also log the bundle as an MLflow model (pyfunc) and register it under this name."""
    build_only: bool = False
    """Write (and with --register, log) the bundle, then stop without serving."""
    where: Workspace = field(default_factory=Workspace)

    def __post_init__(self) -> None:
        if (self.path is None) == (self.model_uri is None):
            raise PopSteerError("give exactly one of -p SAE or --model-uri URI")
        if self.model_uri is not None and self.register:
            raise PopSteerError("--register logs a bundle built from -p SAE; --model-uri serves one already logged")
        if not 1 <= self.port <= 65535:
            raise PopSteerError(f"--port must be in [1, 65535], got {self.port}")
        if not 1 <= self.replicas <= 64:
            raise PopSteerError(f"--replicas must be in [1, 64], got {self.replicas}")
        if not 1 <= self.batch <= 256:
            raise PopSteerError(f"--batch must be in [1, 256], got {self.batch}")
        if not 0 < self.replica_cpus <= 64:
            raise PopSteerError(f"--replica-cpus must be in (0, 64], got {self.replica_cpus}")
        if not self.host.strip():
            raise PopSteerError("--host must name an address, e.g. 127.0.0.1")
        if self.register is not None and not self.register.strip():
            raise PopSteerError("--register must name a registered model")
