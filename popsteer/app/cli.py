"""The ``popsteer`` command line. Thin: each subcommand builds one typed config and calls one stage.

Flags, their defaults and ``--help`` come from the config dataclasses (``popsteer.app.flags``).
Bad input raises PopSteerError; ``main`` prints it as one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Callable

from popsteer.app import commands
from popsteer.app.flags import Flag, add_flags, config_from
from popsteer.errors import PopSteerError, path_error
from popsteer.models.registry import MODELS
from popsteer.stages import config as C
from popsteer.stages import config_report as R
from popsteer.stages import config_browse as B
from popsteer.stages import config_serve as S
from popsteer.stages import config_vectors as V
from popsteer.util.env import check_environment
from popsteer.util.logs import begin_work, drop_held, setup_logging


WHERE = [Flag("where.data_dir", ("--data-dir", "--data_dir")), Flag("where.out_dir", ("--out-dir", "--out_dir"))]
P = ("-p", "--pretrained_path", "--pretrained-path")
SAE_REF = [Flag("ref.path", P), Flag("ref.dataset"), *(Flag("ref." + f.path, f.names) for f in WHERE)]
SWAP = ("--swap-sigma-quirk",)
TRAIN = [Flag(f"train.{name}") for name in ("trainer", "epochs", "learning_rate", "batch_size", "stopping_step", "seed",
                                            "stride", "time_budget_min", "lr_schedule", "warmup", "precision", "device",
                                            "ema_decay", "windows_per_user", "eval_every")]
SAE = [Flag("sae.k", ("--top_k", "--top-k")), Flag("sae.scale")]
DATA = [Flag(f"data.{name}") for name in ("user_field", "item_field", "time_field", "k_user", "k_item", "rating_field",
                                          "min_rating")]


@dataclass(frozen=True)
class Command:
    config: type
    flags: list[Flag]
    run: Callable
    help: str


COMMANDS: dict[str, Command] = {
    "train-recommender": Command(C.RecommenderConfig, [Flag("dataset"), Flag("model", choices=tuple(MODELS)),
                                                       Flag("small"), *TRAIN, *DATA, *WHERE],
                                 commands.train_recommender, "train SASRec on a dataset and save a checkpoint"),
    "train-sae": Command(C.SAEStageConfig, [
        Flag("base", P), *SAE, Flag("sae.max_epochs", ("--epochs",)), Flag("sae.min_epochs", ("--min-epochs", "--min_epochs")),
        Flag("sae.patience"), Flag("sae.lr", ("--lr",)), Flag("sae.batch_size", ("--batch-size", "--batch_size")),
        Flag("sae.seed"), Flag("sae.time_budget_min"), Flag("sae.decode", choices=("dense", "sparse")),
        Flag("sae.stream_buffer_rows"),
        Flag("encode.prefix_stride"), Flag("encode.sasrec_train_mode"), Flag("encode.dir", ("--encoded-dir",)),
        Flag("device"), *WHERE], commands.train_sae, "train a TopK SAE on a SASRec checkpoint's user representations"),
    "analyze": Command(C.AnalysisConfig, [*SAE_REF, Flag("seed"), Flag("top_items"),
                                          Flag("probe", choices=("auto", "synthetic", "users")), Flag("user_share")],
                       commands.analyze, "Cohen's d of every SAE neuron from popular/unpopular profiles or users"),
    "steer": Command(C.SteerConfig, [*SAE_REF, Flag("num_neurons", ("--num_neurons", "--num-neurons")), Flag("alpha"),
                                     Flag("split", choices=C.SPLITS), Flag("swap_sigma", SWAP)],
                     commands.steer, "evaluate SASRec, the SAE and the steered SAE side by side"),
    "tune-steering": Command(C.GridStageConfig, [*SAE_REF, Flag("grid.ns"), Flag("grid.alphas"),
                                                 Flag("grid.swap_sigma", SWAP), Flag("grid.max_ndcg_drop"),
                                                 Flag("grid.variant", choices=("replace", "preserve", "learned")),
                                                 Flag("grid.alpha_unpops"),
                                                 *(Flag(f"grid.learned.{name}", (f"--learned-{name.replace('_', '-')}",))
                                                   for name in ("lambdas", "refine", "surrogate", "tau", "steps", "batch_size", "lr",
                                                                "l1", "init", "seed"))],
                             commands.tune_steering, "pick the steering point on validation, report on test"),
    "evaluate": Command(R.EvaluateConfig, [Flag("path", P), Flag("split", choices=C.SPLITS), *WHERE],
                        commands.evaluate, "score a recommender or SAE checkpoint on a split"),
    "import-checkpoint": Command(C.ImportConfig, [Flag("path", positional=True), Flag("dataset"),
                                                  Flag("trust_pickle", ("--trust-pickle",)), Flag("out"),
                                                  Flag("reference_dir", ("--reference-dir",)),
                                                  Flag("model", choices=tuple(MODELS)), *WHERE],
                                 commands.import_checkpoint,
                                 "import a foreign RecBole SASRec .pth (a pickle) as a PopSteer checkpoint"),
    "import-vectors": Command(V.ImportVectorsConfig, [
        Flag("items"), Flag("users"), Flag("dataset"), Flag("mask_history"), Flag("max_len"), Flag("out"), *DATA,
        Flag("encode.dir", ("--encoded-dir",)), *WHERE], commands.import_vectors,
        "import any model's item table and user vectors (Parquet or .npz) as a base recommender"),
    "export-vectors": Command(V.ExportVectorsConfig, [
        Flag("base", P), Flag("folder", ("--out",)), Flag("fmt", ("--format",), choices=("parquet", "npz")),
        Flag("encode.prefix_stride"), Flag("encode.dir", ("--encoded-dir",)), *WHERE], commands.export_vectors,
        "export a recommender's item table and user vectors in the files import-vectors reads"),
    "pipeline": Command(C.PipelineConfig, [
        Flag("recommender.dataset"), Flag("recommender.train.epochs", help="SASRec epochs (early stopping on valid NDCG@10)."),
        Flag("recommender.train.time_budget_min", help="Stop SASRec training after this many minutes."),
        Flag("recommender.model", choices=tuple(MODELS)), Flag("recommender.small"), *(Flag("recommender." + f.path, f.names) for f in DATA), *SAE, Flag("sae.max_epochs", ("--sae-epochs",), help="SAE epochs at most."),
        Flag("sae.time_budget_min", ("--sae-time-budget-min",), help="Stop SAE training after this many minutes."),
        Flag("num_neurons", ("--num_neurons", "--num-neurons")), Flag("alpha"), Flag("seed"),
        Flag("probe", choices=("auto", "synthetic", "users")), *(Flag("recommender." + f.path, f.names) for f in WHERE)],
        commands.pipeline, "run every step on one dataset (the quick start's main job)"),
    "report": Command(R.ReportConfig, [
        Flag("saes", ("-p", "--pretrained_path", "--pretrained-path"), action="append",
             help="An analysed SAE checkpoint; repeat for one section per dataset."),
        Flag("out"), Flag("tiny"), Flag("shared_dir", ("--shared-dir",)), Flag("seed"), Flag("swap_sigma", SWAP),
        Flag("mlflow"), Flag("resamples"), Flag("oracle", choices=("auto", "on", "off")),
        Flag("sections"), Flag("assemble"), Flag("walltimes"), *WHERE], commands.report,
        "results report: SASRec, PopSteer and the tuned re-ranking baselines on test"),
    "browse": Command(B.BrowseConfig, [*SAE_REF, Flag("site", ("--out",)), Flag("tags"), Flag("shared_dir", ("--shared-dir",)),
                                       Flag("pages"), Flag("users"), Flag("seed"), Flag("fdr"),
                                       Flag("min_tag_items"), Flag("mlflow")], commands.browse,
                      "a static neuron browser of an analysed SAE (opens from disk, no network)"),
    "serve": Command(S.ServeConfig, [Flag("path", P), Flag("model_uri", ("--model-uri",)), Flag("dataset"),
                                     Flag("host"), Flag("port"), Flag("replicas"), Flag("replica_cpus"),
                                     Flag("index", choices=("exact", "ivf", "hnsw")), Flag("bundle_dir"),
                                     Flag("register"), Flag("build_only"), *WHERE], commands.serve,
                     "serve an analysed SAE's steered recommendations over HTTP (Ray Serve, 127.0.0.1)"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="popsteer", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.config.__doc__)
        add_flags(p, command.config, command.flags)
        p.add_argument("-v", "--verbose", action="store_true")
    commands.add_plain_commands(sub, WHERE, _Parser)
    return parser


def dispatch(args: argparse.Namespace) -> int:
    command = COMMANDS.get(args.cmd)
    if command is not None:
        from popsteer.app.outputs import check_outputs
        from popsteer.sae.topk import triton_flag

        check_environment()
        triton_flag()  # a bad environment is refused before any work
        cfg = config_from(command.config, args, command.flags)
        check_outputs(cfg)  # every output folder: a folder, writable, with room, before any stage runs
        result = command.run(cfg)
    else:
        check_environment()
        result = commands.run_plain(args)
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


def run(args: argparse.Namespace) -> int:
    setup_logging(getattr(args, "verbose", False), defer=True)  # held until the first long step (util.progress)
    try:
        return dispatch(args)
    except PopSteerError as exc:
        drop_held()  # a refused run prints its one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if (err := path_error(exc)) is None:  # a fault, not a bad name: its traceback is the report
            raise
        drop_held()
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        begin_work()
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        begin_work()  # a run without a long step shows its lines at its end


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
