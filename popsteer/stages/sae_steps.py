"""Steps 2-4 of the pipeline: train the SAE, analyse its neurons, steer, tune the steering."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from popsteer.util import checkpoint
from popsteer.steering.analysis import analyze_neurons, top_items_per_neuron
from popsteer.util.atomic import write_csv, write_text
from popsteer.data import SequenceData, load_dataset
from popsteer.errors import PopSteerError
from popsteer.eval.evaluator import Evaluator
from popsteer.steering.grid import evaluate_grid, grid_points, pick_point, tradeoff
from popsteer.models.encode import encode_prefixes, encode_users
from popsteer.models.io import load_recommender
from popsteer.util.safepaths import base_roots, check_inside
from popsteer.sae.model import SAEConfig, TopKSAE
from popsteer.sae.train import sae_report, train_sae
from popsteer.steering.steer import NeuronScores, check_strength, steered_reconstruction, steering_delta

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ loading


def load_sae(path: str | Path) -> tuple[TopKSAE, dict]:
    tensors, meta = checkpoint.load(path, kind="sae")
    sae = TopKSAE(meta["d"], SAEConfig(**meta["sae"]))
    try:
        sae.load_state_dict(tensors)
    except RuntimeError as exc:
        raise PopSteerError(f"{path}: weights do not fit the SAE ({str(exc).splitlines()[0]})") from None
    sae.eval()
    return sae, meta


def load_sae_context(args: argparse.Namespace):
    """The SAE, its base SASRec (checked by hash) and the dataset they belong to."""
    sae, meta = load_sae(args.pretrained_path)
    roots = [*base_roots(), Path(args.pretrained_path).resolve().parent, args.data_dir, getattr(args, "out_dir", None)]
    base = check_inside("base_checkpoint", meta["base_checkpoint"], [r for r in roots if r], str(args.pretrained_path))
    if not base.exists():
        raise PopSteerError(f"the SAE's base recommender {base} is missing")
    if checkpoint.file_sha256(base) != meta["base_sha256"]:
        raise PopSteerError(f"the SAE's base recommender {base} changed since the SAE was trained (hash differs)")
    want = getattr(args, "dataset", None)
    if want and want != meta["dataset"]:
        raise PopSteerError(f"{args.pretrained_path} is an SAE of dataset '{meta['dataset']}', not '{want}'")
    sasrec_meta = checkpoint.read_meta(base)
    data = load_dataset(meta["dataset"], args.data_dir, max_len=sasrec_meta["sasrec"]["max_len"])
    sasrec, _ = load_recommender(base, data)
    return sae, meta, sasrec, data


def report_dir(data_dir: str | Path, dataset: str) -> Path:
    """The seed's analysis folder of a dataset (the latest analysed SAE's CSVs)."""
    return Path(data_dir) / dataset


def sae_analysis_dir(data_dir: str | Path, dataset: str, sae_path: str | Path) -> Path:
    """The analysis folder kept per SAE, so several SAEs of one dataset can be compared."""
    return report_dir(data_dir, dataset) / "analysis" / Path(sae_path).stem


def analysis_dir(data_dir: str | Path, dataset: str, sae_path: str | Path) -> Path:
    """Where this SAE's analysis is: its own folder when present, else the seed's folder."""
    own = sae_analysis_dir(data_dir, dataset, sae_path)
    return own if (own / "analysis.json").exists() else report_dir(data_dir, dataset)


# ------------------------------------------------------------------ step 2: SAE


def training_representations(sasrec, data: SequenceData, train_mode: bool = False,
                             stride: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """x for every training (prefix, target) pair, and for the validation users. (P, d), (U, d)."""
    x_train = encode_prefixes(sasrec, data, stride=min(stride, data.max_len), train_mode=train_mode)
    vseq, vln, _ = data.split("valid")
    return x_train, encode_users(sasrec, vseq, vln)


def train_sae_step(args: argparse.Namespace) -> dict:
    if getattr(args, "prefix_stride", 10) < 1:
        raise PopSteerError(f"--prefix-stride must be >= 1, got {args.prefix_stride}")
    base = Path(args.pretrained_path)
    sasrec_meta = checkpoint.read_meta(base)
    if sasrec_meta.get("kind") != "sasrec":
        raise PopSteerError(f"{base} is a {sasrec_meta.get('kind')!r} checkpoint, expected a recommender (SASRec) checkpoint")
    cfg = SAEConfig(k=args.top_k, scale=args.scale, max_epochs=args.epochs,
                    min_epochs=min(args.min_epochs, args.epochs), decode=getattr(args, "decode", "dense"),
                    time_budget_min=getattr(args, "time_budget_min", None))
    d = sasrec_meta["sasrec"]["hidden_size"]
    n = cfg.hidden(d)
    data = load_dataset(sasrec_meta["dataset"], args.data_dir, max_len=sasrec_meta["sasrec"]["max_len"])
    sasrec, _ = load_recommender(base, data)
    t0 = time.perf_counter()
    x_train, x_valid = training_representations(sasrec, data, args.sasrec_train_mode, getattr(args, "prefix_stride", 10))
    torch.manual_seed(cfg.seed)
    sae, history = train_sae(x_train, x_valid, cfg)
    report = sae_report(sae, x_valid)
    item_emb = sasrec.item_embedding.weight.detach()
    ev = Evaluator.for_split(data, "valid")
    with torch.no_grad():
        report["valid_ndcg@10_sasrec"] = ev(x_valid, item_emb)["ndcg@10"]
        report["valid_ndcg@10_sae"] = ev(sae(x_valid)[0], item_emb)["ndcg@10"]
    minutes = (time.perf_counter() - t0) / 60
    out = checkpoint.default_path(args.out_dir, f"SASRec_SAE-{checkpoint.seed_timestamp()}-k{cfg.k}-{cfg.scale}-{data.name}")
    meta = {"kind": "sae", "dataset": data.name, "d": d, "n_latents": n, "sae": asdict(cfg),
            "base_checkpoint": str(base.resolve()), "base_sha256": checkpoint.file_sha256(base),
            "sasrec_train_mode_quirk": bool(args.sasrec_train_mode),
            "prefix_stride": getattr(args, "prefix_stride", 10), "report": report, "history": history,
            "train_minutes": minutes, "created": _dt.datetime.now().isoformat(timespec="seconds")}
    checkpoint.save(out, sae.state_dict(), meta)
    log.info("SAE: FVU %.4f, dead %.2f%%, cosine %.4f, valid NDCG@10 %.4f (SASRec %.4f); saved %s",
             report["fvu"], 100 * report["dead_fraction"], report["cosine"], report["valid_ndcg@10_sae"],
             report["valid_ndcg@10_sasrec"], out)
    return {"checkpoint": str(out), "epochs": len(history), "train_minutes": round(minutes, 2), **report}


# ------------------------------------------------------------------ step 3: analysis

ANALYSIS_FILES = ("cohens_d.csv", "row_stats_popular.csv", "row_stats_unpopular.csv")


def analyze_step(args: argparse.Namespace) -> dict:
    sae, meta, sasrec, data = load_sae_context(args)
    d, pop, unpop = analyze_neurons(sasrec, sae, data, seed=args.seed)
    summary = {"sae_checkpoint": str(Path(args.pretrained_path).resolve()),
               "sae_sha256": checkpoint.file_sha256(args.pretrained_path),
               "n_neurons": int(len(d)), "n_positive": int((d > 0).sum()),
               "median_abs_d": float(np.median(np.abs(d))), "profiles_per_group": pop.count, "seed": args.seed}
    top_items = top_items_per_neuron(sasrec, sae, data)
    out = report_dir(args.data_dir, data.name)
    for folder in (sae_analysis_dir(args.data_dir, data.name, args.pretrained_path), out):
        write_csv(folder / "cohens_d.csv", pd.DataFrame({"cohen_d": d}))
        write_csv(folder / "row_stats_popular.csv", pop.frame())
        write_csv(folder / "row_stats_unpopular.csv", unpop.frame())
        write_csv(folder / "neuron_top_items.csv", top_items, index=False)
        write_text(folder / "analysis.json", json.dumps(summary, indent=2))  # last: marks the folder complete
    log.info("Cohen's d: %d of %d neurons > 0, median |d| %.3f; reports in %s",
             summary["n_positive"], len(d), summary["median_abs_d"], out)
    return {**summary, "reports": [str(out / f) for f in (*ANALYSIS_FILES, "neuron_top_items.csv")]}


def load_neuron_scores(args: argparse.Namespace, dataset: str, n: int) -> NeuronScores:
    """The analysis CSVs of this SAE (checked by hash in analysis.json)."""
    folder = analysis_dir(args.data_dir, dataset, args.pretrained_path)
    summary_path = folder / "analysis.json"
    if not summary_path.exists():
        raise PopSteerError(f"no neuron analysis in {folder}: run --analyze_neurons -p {args.pretrained_path} first")
    summary = json.loads(summary_path.read_text())
    if summary.get("sae_sha256") != checkpoint.file_sha256(args.pretrained_path):
        raise PopSteerError(f"the analysis in {folder} belongs to another SAE ({summary.get('sae_checkpoint')}): "
                            f"run --analyze_neurons -p {args.pretrained_path} first")
    try:
        d = pd.read_csv(folder / "cohens_d.csv", index_col=0)["cohen_d"].to_numpy()
        sp = pd.read_csv(folder / "row_stats_popular.csv", index_col=0)["std"].to_numpy()
        su = pd.read_csv(folder / "row_stats_unpopular.csv", index_col=0)["std"].to_numpy()
    except (OSError, KeyError, ValueError) as exc:
        raise PopSteerError(f"cannot read the analysis CSVs in {folder}: {exc}") from None
    if not len(d) == len(sp) == len(su) == n:
        raise PopSteerError(f"the analysis CSVs in {folder} have {len(d)} neurons, the SAE has {n}")
    return NeuronScores(d=d, sigma_pop=sp, sigma_unpop=su)


# ------------------------------------------------------------------ step 4: steering


class SplitCache:
    """A split's SASRec representations and SAE pre-activations, computed once."""

    def __init__(self, sasrec, sae, data: SequenceData, split: str) -> None:
        seq, ln, _ = data.split(split)
        self.x = encode_users(sasrec, seq, ln)  # (U, d)
        with torch.no_grad():
            self.h = sae.preact(self.x)  # (U, n)
        self.evaluator = Evaluator.for_split(data, split)
        self.item_emb = sasrec.item_embedding.weight.detach()

    def baselines(self, sae) -> dict[str, dict]:
        with torch.no_grad():
            recon = sae.decode(sae.encode(self.h))
        return {"sasrec": self.evaluator(self.x, self.item_emb), "sae": self.evaluator(recon, self.item_emb)}


def steer_step(args: argparse.Namespace) -> dict:
    check_strength(args.num_neurons, args.alpha)
    sae, meta, sasrec, data = load_sae_context(args)
    scores = load_neuron_scores(args, data.name, meta["n_latents"])
    delta = steering_delta(scores, args.num_neurons, args.alpha, args.swap_sigma)
    cache = SplitCache(sasrec, sae, data, args.split)
    rows = cache.baselines(sae)
    rows["popsteer"] = cache.evaluator(steered_reconstruction(sae, cache.h, delta), cache.item_emb)
    table = pd.DataFrame(rows).T
    log.info("%s split, N=%d alpha=%g:\n%s", args.split, args.num_neurons, args.alpha,
             table[["ndcg@10", "precision@10", "lt_coverage@10", "gini@10", "arp@10",
                    "ndcg_head@10", "ndcg_mid@10", "ndcg_tail@10"]].to_string(float_format=lambda v: f"{v:.4f}"))
    out = report_dir(args.data_dir, data.name) / f"steer_N{args.num_neurons}_a{args.alpha:g}_{args.split}.csv"
    write_csv(out, table)
    return {"split": args.split, "num_neurons": args.num_neurons, "alpha": args.alpha, "report": str(out), **rows}


def tune_step(args: argparse.Namespace) -> dict:
    sae, meta, sasrec, data = load_sae_context(args)
    scores = load_neuron_scores(args, data.name, meta["n_latents"])
    points = grid_points(meta["n_latents"])
    valid = SplitCache(sasrec, sae, data, "valid")
    base_valid = valid.baselines(sae)
    rows = evaluate_grid(sae, valid.h, valid.item_emb, valid.evaluator, scores, points, args.swap_sigma)
    pick = pick_point(rows, base_valid["sasrec"])
    folder = report_dir(args.data_dir, data.name)
    write_csv(folder / "steering_grid_valid.csv", pd.DataFrame(rows), index=False)
    result = {"grid_points": len(rows), "valid_baselines": base_valid, "pick": None}
    if pick is None:
        log.warning("no grid point keeps the NDCG@10 drop within 5%% of SASRec on validation")
        return result
    test = SplitCache(sasrec, sae, data, "test")
    delta = steering_delta(scores, pick["num_neurons"], pick["alpha"], args.swap_sigma)
    test_rows = test.baselines(sae)
    test_rows["popsteer_tuned"] = test.evaluator(steered_reconstruction(sae, test.h, delta), test.item_emb)
    gini_drop, ndcg_drop = tradeoff(pick, base_valid["sasrec"])
    write_csv(folder / "steering_tuned_test.csv", pd.DataFrame(test_rows).T)
    log.info("tuned on valid: N=%d alpha=%g (valid Gini drop %.1f%%, NDCG drop %.1f%%); test NDCG@10 %.4f Gini@10 %.4f",
             pick["num_neurons"], pick["alpha"], 100 * gini_drop, 100 * ndcg_drop,
             test_rows["popsteer_tuned"]["ndcg@10"], test_rows["popsteer_tuned"]["gini@10"])
    result.update({"pick": {"num_neurons": pick["num_neurons"], "alpha": pick["alpha"],
                            "valid_gini_drop": gini_drop, "valid_ndcg_drop": ndcg_drop}, "test": test_rows})
    return result
