"""A serving bundle as an MLflow model: logged (and registered) as a pyfunc with the bundle folder as its
one artifact and ``popsteer/serve/pyfunc_model.py`` as its code (nothing of ours is pickled), and fetched
back from a ``models:/NAME/VERSION`` (or ``runs:/...``) URI for ``popsteer serve --model-uri``.
Needs MLFLOW_TRACKING_URI (a server, or a database store)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from popsteer.errors import PopSteerError
from popsteer.serve.bundle import read_info

log = logging.getLogger(__name__)

ARTIFACT = "bundle"
MODEL_NAME = "popsteer_serving"
"""The model's name inside its run."""
REQUIREMENTS = ["mlflow==3.17.2", "torch==2.13.0", "recbole==1.2.0", "pyarrow==25.0.1", "safetensors",
                "ray[serve]==2.60.0", "faiss-cpu"]


def check_tracking() -> None:
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        raise PopSteerError("MLFLOW_TRACKING_URI is not set: MLflow models need a tracking server or database")


def log_bundle(bundle: str | Path, register: str | None = None) -> dict:
    """Log the bundle as a pyfunc model in a new run (registered as ``register`` when given)."""
    import mlflow

    check_tracking()
    info = read_info(bundle)
    code = Path(__file__).with_name("pyfunc_model.py")
    with mlflow.start_run(run_name=f"serve-{Path(info['sae_checkpoint']).stem}") as run:
        mlflow.set_tags({"popsteer.kind": "serving_bundle", "popsteer.dataset": info["dataset"]})
        mlflow.log_params({"dataset": info["dataset"], "model": info["model"], "n_latents": info["n_latents"],
                           "index": info["index"]["kind"], "steering_variant": info["steering"]["variant"],
                           "num_neurons": info["steering"]["num_neurons"], "alpha": info["steering"]["alpha"]})
        logged = mlflow.pyfunc.log_model(name=MODEL_NAME, python_model=str(code), artifacts={ARTIFACT: str(bundle)},
                                         pip_requirements=REQUIREMENTS, registered_model_name=register)
    out = {"run_id": run.info.run_id, "model_uri": logged.model_uri}
    if register:
        out["registered"] = f"models:/{register}/{logged.registered_model_version}"
    log.info("serving bundle logged to MLflow: %s", out)
    return out


def fetch_bundle(model_uri: str, dest: str | Path) -> Path:
    """The bundle of a logged model, downloaded to ``dest`` (replaced if it holds an earlier copy)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    check_tracking()
    dest = Path(dest)
    if dest.exists():
        if not (dest / "MLmodel").is_file():
            raise PopSteerError(f"--bundle-dir {dest} exists and is not a downloaded serving bundle")
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dest)))
    except (MlflowException, OSError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise PopSteerError(f"--model-uri {model_uri}: {str(exc).splitlines()[0][:300]}") from None
    try:
        rel = mlflow.models.Model.load(str(local)).flavors["python_function"]["artifacts"][ARTIFACT]["path"]
    except (MlflowException, OSError, KeyError, TypeError):
        raise PopSteerError(f"--model-uri {model_uri} is not a PopSteer serving model (no '{ARTIFACT}' artifact)") from None
    bundle = local / rel
    read_info(bundle)  # a model of another kind is refused here
    return bundle


def bundle_dest(model_uri: str, out_dir: str | Path) -> Path:
    """Default download folder of a model URI: <out-dir>/serve/models/<name>-<version>."""
    tail = model_uri.split(":", 1)[-1].strip("/").replace("/", "-") or "model"
    return Path(out_dir) / "serve" / "models" / tail
