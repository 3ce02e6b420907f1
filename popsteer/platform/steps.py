"""The stages of a sweep on Ray: each calls its stage function of ``popsteer.stages`` on workers.

recommender: ``train_recommender`` in a Ray task (cached under ``<experiment>/recommender``);
encode: ``ensure_encoded`` with the Ray Data executor; sweep: ``train_sae`` in Tune trials;
analysis: ``analyze`` on the steering stage's evaluator actors when the grid runs too (one
start-up for both stages), else in a Ray task per selected SAE; steering: ``steering_grid`` with
the evaluator pool over user shards; baselines: ``tune_baselines`` in a Ray task. Each returns
the JSON-able result the sweep writes to ``stages/<stage>.json``. The SAEs' results land where
the CLI puts them (``<data_dir>/<dataset>/analysis/<SAE stem>/``), so ``popsteer steer``,
``report`` and ``status`` read a sweep's output as it is.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from popsteer.data import SequenceData, load_dataset
from popsteer.models.io import data_config
from popsteer.models.registry import ModelSpec, model_of
from popsteer.platform import point_runs
from popsteer.platform.learned import TuneFitter
from popsteer.platform.spec import SweepSpec
from popsteer.stages.config import AnalysisConfig, GridConfig, GridStageConfig, RecommenderConfig, SAERef, Workspace
from popsteer.stages.analysis import probe_parts
from popsteer.stages.encode import training_parts
from popsteer.stages.encoded import Encodings, Part
from popsteer.util import checkpoint
from popsteer.util.safepaths import base_roots

log = logging.getLogger(__name__)


def task_cpus(requested: float | None) -> float:
    """The CPUs a single heavy task takes: as requested, else the largest node's (at most 8)."""
    if requested:
        return requested
    import ray

    sizes = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return float(min(8, max(sizes, default=1)))


def workspace(spec: SweepSpec) -> Workspace:
    """The sweep's data folder, its experiment folder as the output folder, and the driver's allowed
    roots (checked when the sweep file was read; the workers do not have the driver's environment)."""
    roots = [str(r) for r in base_roots()]
    if spec.base_checkpoint:
        roots.append(str(Path(spec.base_checkpoint).resolve().parent))
    return Workspace(data_dir=spec.data_dir, out_dir=str(spec.experiment_dir), allowed_roots=roots)


# ------------------------------------------------------------------ recommender


def recommender_config(spec: SweepSpec) -> RecommenderConfig:
    tr = spec.train_recommender
    return RecommenderConfig(dataset=spec.dataset, model=spec.model, small=tr.small, train=tr.train_config(), data=spec.data,
                             where=Workspace(data_dir=spec.data_dir, out_dir=str(spec.experiment_dir / "recommender")))


def _train_task(cfg: RecommenderConfig, threads: int) -> str:
    import torch

    from popsteer.stages.recommender import train_recommender
    from popsteer.util.logs import setup_logging

    setup_logging(False)
    torch.set_num_threads(max(1, threads))
    return train_recommender(cfg).checkpoint


def recommender_step(spec: SweepSpec) -> dict:
    """The base recommender: the given checkpoint, or one trained once by a Ray task (reused while its config holds)."""
    if spec.base_checkpoint:
        path = Path(spec.base_checkpoint)
    else:
        import ray

        cfg = recommender_config(spec)
        hp, train, data = asdict(cfg.architecture()), asdict(cfg.train), asdict(cfg.data)
        same = {"dataset": spec.dataset, "model": cfg.model, "arch": hp, "data": data}
        train["stride"] = min(train["stride"], hp["max_len"])
        folder = Path(cfg.where.out_dir)
        found = [p for p in sorted(folder.glob(f"*-{spec.dataset}.safetensors"), reverse=True)
                 if all((m := checkpoint.read_meta(p)).get(k) == v for k, v in same.items())
                 and m.get("train") and {**train, **m["train"]} == train]  # fields added since count as defaults
        if found:
            path = found[0]
            log.info("base recommender reused: %s", path)
        else:
            cpus = task_cpus(spec.train_recommender.cpus)
            log.info("training the base recommender (%s, %d epochs) as a Ray task on %g CPUs", spec.dataset,
                     cfg.train.epochs, cpus)
            path = Path(ray.get(ray.remote(num_cpus=cpus)(_train_task).remote(cfg, int(cpus))))
    path = path.resolve()
    spec, arch = model_of(checkpoint.read_meta(path), str(path))
    return {"checkpoint": str(path), "sha256": checkpoint.file_sha256(path), "model": spec.name,
            "max_len": arch.max_len, "d": spec.d(arch)}


def load_data(spec: SweepSpec, rec: dict) -> SequenceData:
    """The dataset as the base recommender was trained on it (its header's reading config)."""
    cfg = data_config(checkpoint.read_meta(rec["checkpoint"]), rec["checkpoint"])
    return load_dataset(spec.dataset, spec.data_dir, max_len=rec["max_len"], cfg=cfg)


# ------------------------------------------------------------------ encode


def sweep_parts(spec: SweepSpec, max_len: int, model: ModelSpec) -> list[Part]:
    """Every part a sweep's stages read: the SAE's inputs, the test users and the analysis' profiles
    (a general model's analysis reads only its users)."""
    return [*training_parts(spec.encode, max_len, model.imported), Part("test"),
            *probe_parts(model.default_probe, model.transductive, spec.encode.profile_seed)]


def encode_step(spec: SweepSpec, rec: dict, data: SequenceData) -> dict:
    from popsteer.platform.encode import RayDataEncoder
    from popsteer.stages.encode import ensure_encoded

    e = spec.encode
    parts = sweep_parts(spec, rec["max_len"], model_of(checkpoint.read_meta(rec["checkpoint"]), rec["checkpoint"])[0])
    store = ensure_encoded(rec["checkpoint"], data, parts, spec.encoded_root, e,
                           RayDataEncoder(e.actors, e.cpus_per_actor, e.gpus_per_actor))
    return {"encoded_dir": str(store.folder), "parts": {p.name: store.manifest(p) for p in parts}}


# ------------------------------------------------------------------ analysis


def sae_ref(spec: SweepSpec, path: str) -> SAERef:
    return SAERef(path=path, dataset=spec.dataset, where=workspace(spec), encode=spec.encode)


def _analysis_task(cfg: AnalysisConfig, encoded_dir: str, data: SequenceData):
    from popsteer.stages.analysis import analyze

    return analyze(cfg, data=data, encodings=Encodings(encoded_dir))


def evaluator_pool(spec: SweepSpec):
    """The steering stage's pool of evaluator actors (``stages.steering``)."""
    from popsteer.platform.evaluators import EvaluatorPool

    s = spec.stages.steering
    return EvaluatorPool(s.evaluators, s.cpus_per_evaluator, s.gpus_per_evaluator)


def analysis_step(spec: SweepSpec, enc: dict, sweep: dict, data: SequenceData, tracker, pool=None) -> dict:
    """Analyse each selected SAE (the seed's copy in <data_dir>/<dataset>/ is the CLI's alone): on the
    evaluator actors of ``pool`` when given (the steering stage's, started here once for both stages),
    else in a Ray task each with the trials' resources."""
    import ray

    trials = {t["trial_key"]: t for t in sweep["trials"]}
    data_ref = ray.put(data)
    cfgs = {key: AnalysisConfig(sae_ref(spec, trials[key]["sae_checkpoint"]), seed=spec.encode.profile_seed,
                                dataset_copy=False) for key in sweep["selected"]}
    if pool is not None:
        refs = {key: pool.actors[i % len(pool.actors)].analyze.remote(cfg, enc["encoded_dir"], data_ref)
                for i, (key, cfg) in enumerate(cfgs.items())}
    else:
        task = ray.remote(num_cpus=spec.resources.cpu, num_gpus=spec.resources.gpu)(_analysis_task)
        refs = {key: task.remote(cfg, enc["encoded_dir"], data_ref) for key, cfg in cfgs.items()}
    out = {}
    for key, ref in refs.items():
        res = ray.get(ref)
        out[key] = {"sae_checkpoint": trials[key]["sae_checkpoint"], "folder": res.folder, "files": res.files,
                    "n_positive": res.summary["n_positive"], "median_abs_d": res.summary["median_abs_d"]}
        log.info("analysis %s: %d of %d neurons with d > 0, median |d| %.3f", key, res.summary["n_positive"],
                 res.summary["n_neurons"], res.summary["median_abs_d"])
        if tracker is not None:
            tracker.log_artifacts(tracker.child_run(key, {}), res.files, "analysis")
            if len(refs) == 1:
                tracker.log_artifacts(tracker.parent_run_id, res.files, f"analysis/{key}")
    return out


# ------------------------------------------------------------------ steering grid


def grid_config(spec: SweepSpec) -> GridConfig:
    """The grid stage's config from the sweep's ``stages.steering``."""
    return GridConfig(**{f: getattr(spec.stages.steering, f) for f in GridConfig.__dataclass_fields__})


def steering_step(spec: SweepSpec, enc: dict, analysis: dict, data: SequenceData, tracker, pool=None) -> dict:
    """Every selected SAE's grid on one pool of evaluator actors over user shards (``pool``: the one the
    analysis ran on, see ``analysis_step``; else a new one); the pool is shut down at the end."""
    from popsteer.stages.grid import steering_grid

    grid = grid_config(spec)
    shared, pool = pool is not None, pool or evaluator_pool(spec)
    picks, files = {}, {}
    try:
        for key, a in analysis.items():
            ref = sae_ref(spec, a["sae_checkpoint"])
            fitter = (TuneFitter(ref, spec.storage, spec.name, spec.experiment_dir) if grid.variant == "learned"
                      else None)  # learned steering: one Tune trial per lam
            result = steering_grid(GridStageConfig(ref, grid), executor=pool, data=data,
                                   encodings=Encodings(enc["encoded_dir"]), fitter=fitter)
            picks[key] = {"pick": result.pick, "valid": result.picked("valid"), "test": result.picked("test"),
                          "min_valid_gini": min((r["gini@10"] for r in result.rows.get("valid", [])), default=None),
                          "valid_baselines": result.baselines["valid"], "test_baselines": result.baselines["test"]}
            files[key] = result.files
            if tracker is not None:
                tracker.log_artifacts(tracker.parent_run_id, result.files,
                                      "steering" if len(analysis) == 1 else f"steering/{key}")
                point_runs.log_steering(tracker, key, result, grid)
            if spec.stages.browser:
                files[f"{key}/browser"] = neuron_browser(spec, ref, key, tracker)
        log.info("steering grid: %d SAE(s) on %d evaluators (%d shards resubmitted)", len(analysis),
                 len(pool.actors), pool.resubmitted)
    finally:
        pool.shutdown()
    return {"points": len(result.points) if analysis else 0, "picks": picks, "files": files,
            "pool": {"evaluators": spec.stages.steering.evaluators, "shared_with_analysis": shared,
                     "resubmitted": pool.resubmitted}}


def neuron_browser(spec: SweepSpec, ref: SAERef, key: str, tracker) -> str:
    """The SAE's neuron browser (``popsteer.stages.browse``) in <experiment>/browser/<trial key>, logged under the
    trial's MLflow run as the artifact folder ``neuron_browser`` (every file, folders kept)."""
    from popsteer.browse.tracking import ARTIFACT_DIR
    from popsteer.stages.browse import browse
    from popsteer.stages.config_browse import BrowseConfig

    site = Path(spec.experiment_dir) / "browser" / key
    browse(BrowseConfig(ref, site=str(site)))
    if tracker is not None:
        run_id = tracker.child_run(key, {})
        by_folder: dict[str, list[Path]] = {}
        for f in sorted(p for p in site.rglob("*") if p.is_file()):
            rel = f.parent.relative_to(site)
            by_folder.setdefault(ARTIFACT_DIR + ("" if rel == Path(".") else f"/{rel.as_posix()}"), []).append(f)
        for folder, paths in by_folder.items():
            tracker.log_artifacts(run_id, paths, folder)
    return str(site)


# ------------------------------------------------------------------ baselines


def _baselines_task(spec: SweepSpec, rec: dict, encoded_dir: str, data: SequenceData,
                    span_gini: float | None = None) -> dict:
    import torch

    from popsteer.stages.baselines import baselines_dir, tune_baselines
    from popsteer.stages.context import load_base

    base = load_base(rec["checkpoint"], workspace(spec), spec.encode, data)
    encodings = Encodings(encoded_dir)
    base_valid = base.evaluator("valid")(torch.from_numpy(encodings.read("valid")), base.item_emb)
    methods = tune_baselines(base, spec.stages.baselines, base_valid, encodings=encodings, span_gini=span_gini)
    return {"folder": str(baselines_dir(base)),
            "picks": {name: {"params": m["params"], "test": m["test"]} for name, m in methods.items()}}


def baselines_step(spec: SweepSpec, rec: dict, enc: dict, data: SequenceData, tracker, steering: dict | None = None) -> dict:
    """Every re-ranker's grid in a Ray task; after a steering stage, extended toward the lowest validation
    Gini@10 of the selected SAEs' grids (``tune_baselines``' ``span_gini``), as the report does."""
    import ray

    span = min((p["min_valid_gini"] for p in (steering or {}).get("picks", {}).values()
                if p.get("min_valid_gini") is not None), default=None)
    out = ray.get(ray.remote(num_cpus=spec.resources.cpu)(_baselines_task).remote(spec, rec, enc["encoded_dir"], data,
                                                                                  span))
    if tracker is not None:
        folder = Path(out["folder"])
        tracker.log_artifacts(tracker.parent_run_id, [folder / "baselines_grid.csv", folder / "baselines.json"],
                              "baselines")
        point_runs.log_baselines(tracker, folder / "baselines.json")
    return out
