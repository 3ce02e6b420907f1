"""The ``popsteer`` command line. Thin: each subcommand calls one library function.

Bad input raises PopSteerError; ``main`` prints it as one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from popsteer.errors import PopSteerError

log = logging.getLogger("popsteer")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", "--data_dir", dest="data_dir", default="datasets",
                   help="folder holding <dataset>/<dataset>.inter (ml-100k falls back to the embedded copy)")
    p.add_argument("--out-dir", "--out_dir", dest="out_dir", default="saved", help="where checkpoints go")
    p.add_argument("-v", "--verbose", action="store_true")


def add_train_recommender(sub) -> None:
    p = sub.add_parser("train-recommender", help="train SASRec on a dataset and save a checkpoint")
    p.add_argument("--dataset", default="ml-100k", help="ml-100k (embedded), ml-1m or lastfm")
    p.add_argument("--trainer", default="allpos", help="allpos (fast, default) or recbole (RecBole's per-prefix trainer)")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--learning-rate", "--learning_rate", dest="learning_rate", type=float, default=1e-3)
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=4096)
    p.add_argument("--stopping-step", "--stopping_step", dest="stopping_step", type=int, default=10)
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--stride", type=int, default=25, help="window stride of all-position training on long sequences")
    p.add_argument("--time-budget-min", dest="time_budget_min", type=float, default=None,
                   help="stop training after this many minutes (best epoch kept)")
    p.add_argument("--lr-schedule", dest="lr_schedule", default="constant",
                   help="constant, or cosine: warm-up then decay to 0 at the last epoch or the time budget")
    p.add_argument("--warmup", type=float, default=0.02, help="fraction of training warming the learning rate up (cosine)")
    p.add_argument("--precision", default="fp32", help="fp32, or bf16 autocast (faster on CPUs with AVX512-BF16/AMX)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (allpos trainer)")
    p.add_argument("--ema-decay", dest="ema_decay", type=float, default=None,
                   help="also score an exponential moving average of the weights (decay per step, e.g. 0.999) "
                        "each epoch; the best of raw and averaged is kept")
    p.add_argument("--windows-per-user", dest="windows_per_user", type=int, default=None,
                   help="allpos: each epoch trains on at most N random windows per user (heavy users weigh less; "
                        "all windows are drawn over epochs)")
    p.add_argument("--eval-every", dest="eval_every", type=int, default=1,
                   help="score valid every N epochs (and at the last one)")
    p.add_argument("--small", action="store_true",
                   help="a CI-sized SASRec (1 layer, 1 head, hidden 32, inner 64, max length 20)")
    _common(p)


def add_import(sub) -> None:
    p = sub.add_parser("import-checkpoint", help="import a foreign RecBole SASRec .pth (a pickle) as a PopSteer checkpoint")
    p.add_argument("path", help="RecBole .pth checkpoint")
    p.add_argument("--dataset", required=True)
    p.add_argument("--trust-pickle", dest="trust_pickle", action="store_true",
                   help="allow unpickling: only for files from a source you trust")
    p.add_argument("--out", default=None, help="output .safetensors path")
    p.add_argument("--reference-dir", dest="reference_dir", default=None,
                   help="folder with the authors' item files used to map their item ids")
    _common(p)


def add_data(sub) -> None:
    p = sub.add_parser("data", help="dataset utilities")
    dsub = p.add_subparsers(dest="data_cmd", required=True, parser_class=_Parser)
    f = dsub.add_parser("fetch", help="download a public dataset into the data folder")
    f.add_argument("name", help="ml-1m")
    f.add_argument("--url", default=None, help="override the download URL")
    _common(f)


def add_sae_commands(sub) -> None:
    p = sub.add_parser("train-sae", help="train a TopK SAE on a SASRec checkpoint's user representations")
    p.add_argument("-p", "--pretrained_path", "--pretrained-path", dest="pretrained_path", required=True)
    p.add_argument("--top_k", "--top-k", dest="top_k", type=int, default=32)
    p.add_argument("--scale", type=int, default=64)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--min-epochs", "--min_epochs", dest="min_epochs", type=int, default=50)
    p.add_argument("--time-budget-min", dest="time_budget_min", type=float, default=None,
                   help="stop SAE training after this many minutes (best epoch kept)")
    p.add_argument("--decode", default="dense", choices=["dense", "sparse"],
                   help="SAE decoder: dense z @ W_dec or sparse (embedding_bag over the K kept latents)")
    p.add_argument("--prefix-stride", dest="prefix_stride", type=int, default=10,
                   help="training prefixes are encoded by all-position passes over windows with this stride "
                        "(prefixes longer than max length see >= max_len - stride + 1 items; 1 = exact, slow)")
    p.add_argument("--sasrec-train-mode", dest="sasrec_train_mode", action="store_true",
                   help="QUIRK of the reference: encode users with SASRec's dropout active")
    _common(p)

    a = sub.add_parser("analyze", help="Cohen's d of every SAE neuron from synthetic popular/unpopular users")
    a.add_argument("-p", "--pretrained_path", "--pretrained-path", dest="pretrained_path", required=True)
    a.add_argument("--seed", type=int, default=2020)
    a.add_argument("--dataset", default=None, help="refuse an SAE of another dataset")
    _common(a)

    for name, helptext in (("steer", "evaluate SASRec, the SAE and the steered SAE side by side"),
                           ("tune-steering", "pick N and alpha on validation, report on test")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("-p", "--pretrained_path", "--pretrained-path", dest="pretrained_path", required=True)
        if name == "steer":
            s.add_argument("--num_neurons", "--num-neurons", dest="num_neurons", type=int, default=4096)
            s.add_argument("--alpha", type=float, default=1.5)
            s.add_argument("--split", default="test", choices=["valid", "test"])
        s.add_argument("--dataset", default=None, help="refuse an SAE of another dataset")
        s.add_argument("--swap-sigma-quirk", dest="swap_sigma", action="store_true",
                       help="QUIRK of the reference: boost with the popular group's sigma, suppress with the unpopular one's")
        _common(s)


def add_pipeline(sub) -> None:
    p = sub.add_parser("pipeline", help="run every step on one dataset (the quick start's main job)")
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--epochs", type=int, default=200, help="SASRec epochs (early stopping on valid NDCG@10)")
    p.add_argument("--time-budget-min", dest="time_budget_min", type=float, default=None)
    p.add_argument("--small", action="store_true", help="the CI-sized SASRec")
    p.add_argument("--top_k", "--top-k", dest="top_k", type=int, default=32)
    p.add_argument("--scale", type=int, default=64)
    p.add_argument("--sae-epochs", dest="sae_epochs", type=int, default=300)
    p.add_argument("--num_neurons", "--num-neurons", dest="num_neurons", type=int, default=4096)
    p.add_argument("--alpha", type=float, default=1.5)
    p.add_argument("--seed", type=int, default=2020)
    _common(p)


def add_report(sub) -> None:
    p = sub.add_parser("report", help="results report: SASRec, PopSteer and the tuned re-ranking baselines on test")
    p.add_argument("-p", "--pretrained_path", "--pretrained-path", dest="pretrained_path", action="append",
                   required=True, help="an analysed SAE checkpoint; repeat for one section per dataset")
    p.add_argument("--out", default="docs/RESULTS.md", help="the markdown report; plots and grid CSVs go beside it")
    p.add_argument("--tiny", action="store_true",
                   help="CI-sized grids: 3 points per baseline, N in {512, max}, alpha in {1, default, 4}")
    p.add_argument("--shared-dir", dest="shared_dir", default=None,
                   help="folder with <dataset>/reference/popsteer_cohens_d.csv.gz (the authors' files) for the "
                        "fidelity checks; default $POPSTEER_SHARED_DATASETS or ../shared/datasets")
    p.add_argument("--seed", type=int, default=2020, help="seed of the random re-ranker")
    p.add_argument("--swap-sigma-quirk", dest="swap_sigma", action="store_true",
                   help="QUIRK of the reference: boost with the popular group's sigma, suppress with the unpopular one's")
    p.add_argument("--mlflow", action="store_true",
                   help="also log the report, plots and test metrics to an MLflow run (needs MLFLOW_TRACKING_URI)")
    _common(p)


def add_status(sub) -> None:
    p = sub.add_parser("status", help="list a dataset's checkpoints, reports and last sweep")
    p.add_argument("--dataset", default=None, help="only this dataset (default: all)")
    _common(p)


def status(args: argparse.Namespace) -> None:
    from popsteer.app.status import status_text

    print(status_text(args.dataset, args.data_dir, args.out_dir))


def add_mlflow(sub) -> None:
    p = sub.add_parser("mlflow", help="MLflow utilities")
    msub = p.add_subparsers(dest="mlflow_cmd", required=True, parser_class=_Parser)
    s = msub.add_parser("sync", help="replay the MLflow journal a sweep wrote while its tracking server was down")
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--journal", default=None, help="a journal: <experiment>/mlflow_journal or its journal.jsonl")
    where.add_argument("--dir", default=None,
                       help="a sweep's experiment folder (or any folder above): every journal under it")
    s.add_argument("--tracking-uri", dest="tracking_uri", default=None,
                   help="the server to replay into (default: the one the sweep used)")
    s.add_argument("-v", "--verbose", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="popsteer", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    add_train_recommender(sub)
    add_sae_commands(sub)
    add_import(sub)
    add_data(sub)
    add_pipeline(sub)
    add_report(sub)
    add_status(sub)
    add_mlflow(sub)
    return parser


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("numba", "urllib3", "matplotlib", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def dispatch(args: argparse.Namespace) -> int:
    from popsteer.stages import steps

    handlers = {
        "train-recommender": steps.train_recommender,
        "train-sae": steps.train_sae,
        "analyze": steps.analyze,
        "steer": steps.steer,
        "tune-steering": steps.tune_steering,
        "import-checkpoint": steps.import_checkpoint,
        "data": steps.data,
        "pipeline": steps.pipeline,
        "status": status,
        "mlflow": lambda a: __import__("popsteer.platform.journal", fromlist=["sync_step"]).sync_step(a),  # lazy: ray
        "report": lambda a: __import__("popsteer.stages.report", fromlist=["report_step"]).report_step(a),  # lazy: matplotlib
    }
    result = handlers[args.cmd](args)
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


def run(args: argparse.Namespace) -> int:
    setup_logging(getattr(args, "verbose", False))
    try:
        return dispatch(args)
    except PopSteerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
