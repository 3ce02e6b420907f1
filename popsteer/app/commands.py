"""What each ``popsteer`` subcommand runs: a stage on its typed config, or a plain utility.

Stage modules are imported when their command runs, so ``popsteer --help`` and the light
commands do not pay for torch, RecBole, Ray or matplotlib.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from popsteer.errors import PopSteerError
from popsteer.stages import config as C
from popsteer.stages import config_report as R
from popsteer.stages import config_browse as B


def train_recommender(cfg: C.RecommenderConfig) -> dict:
    from popsteer.stages.recommender import train_recommender as run

    return run(cfg).summary()


def import_checkpoint(cfg: C.ImportConfig) -> dict:
    from popsteer.stages.recommender import import_recommender

    return {"checkpoint": str(import_recommender(cfg))}


def train_sae(cfg: C.SAEStageConfig) -> dict:
    from popsteer.stages.sae import train_sae as run

    return run(cfg, resumable=True).summary()


def analyze(cfg: C.AnalysisConfig) -> dict:
    from popsteer.stages.analysis import analyze as run
    from popsteer.steering.results import ANALYSIS_FILES

    result = run(cfg)
    folder = Path(result.folder).parents[1] if cfg.dataset_copy else Path(result.folder)  # the seed's folder
    return {**result.summary, "folder": result.folder, "reports": [str(folder / f) for f in ANALYSIS_FILES]}


def steer(cfg: C.SteerConfig) -> dict:
    from popsteer.stages.steer import steer as run

    return run(cfg)


def tune_steering(cfg: C.GridStageConfig) -> dict:
    from popsteer.stages.steer import tune_steering as run

    return run(cfg)


def evaluate(cfg: R.EvaluateConfig) -> dict:
    from popsteer.stages.evaluate import evaluate as run

    return run(cfg)


def import_vectors(cfg) -> dict:
    from popsteer.stages.vectors import import_vectors as run

    return run(cfg)


def export_vectors(cfg) -> dict:
    from popsteer.stages.vectors import export_vectors as run

    return run(cfg)


def pipeline(cfg: C.PipelineConfig) -> dict:
    from popsteer.stages.pipeline import pipeline as run

    return run(cfg)


def report(cfg: R.ReportConfig) -> dict:
    from popsteer.stages.report import report as run

    return run(cfg)


def serve(cfg) -> dict:
    from popsteer.serve.run import serve as run

    return run(cfg)


def browse(cfg: B.BrowseConfig) -> dict:
    from popsteer.stages.browse import browse as run

    return run(cfg)


# ------------------------------------------------------------------ plain commands (no stage config)


def add_plain_commands(sub, where_flags, parser_class) -> None:
    """``status``, ``data fetch`` and ``mlflow sync``."""
    def common(p: argparse.ArgumentParser) -> None:
        for flag in where_flags:
            default = C.Workspace().data_dir if flag.path.endswith("data_dir") else C.Workspace().out_dir
            p.add_argument(*flag.flag_names(), dest=flag.path.rsplit(".", 1)[-1], default=default)
        p.add_argument("-v", "--verbose", action="store_true")

    s = sub.add_parser("status", help="list a dataset's checkpoints, reports and last sweep")
    s.add_argument("--dataset", default=None, help="only this dataset (default: all)")
    common(s)
    d = sub.add_parser("data", help="dataset utilities")
    dsub = d.add_subparsers(dest="data_cmd", required=True, parser_class=parser_class)
    f = dsub.add_parser("fetch", help="download a public dataset into the data folder")
    f.add_argument("name", help="ml-1m")
    f.add_argument("--url", default=None, help="override the download URL")
    common(f)
    i = dsub.add_parser("import", help="convert your own interaction file into a dataset of the data folder")
    i.add_argument("path", help="the file: a sequence file (`user item item ...` per line), an atomic .inter, or a CSV")
    i.add_argument("--format", dest="fmt", choices=("seq", "inter", "csv"), default="seq",
                   help="seq (one line per user, in time order), inter (RecBole atomic) or csv (default: seq)")
    i.add_argument("--name", required=True, help="the dataset's name: written to <data-dir>/<name>/<name>.inter")
    i.add_argument("--user-col", default="user_id", help="csv: the user column (default: user_id)")
    i.add_argument("--item-col", default="item_id", help="csv: the item column (default: item_id)")
    i.add_argument("--time-col", default="timestamp", help="csv: the time column (default: timestamp)")
    i.add_argument("--sep", default=",", help="csv: the separator (default: ,)")
    common(i)
    m = sub.add_parser("mlflow", help="MLflow utilities")
    msub = m.add_subparsers(dest="mlflow_cmd", required=True, parser_class=parser_class)
    y = msub.add_parser("sync", help="replay the MLflow journal a sweep wrote while its tracking server was down")
    where = y.add_mutually_exclusive_group(required=True)
    where.add_argument("--journal", default=None, help="a journal: <experiment>/mlflow_journal or its journal.jsonl")
    where.add_argument("--dir", default=None, help="a sweep's experiment folder (or any folder above): every journal under it")
    y.add_argument("--tracking-uri", dest="tracking_uri", default=None,
                   help="the server to replay into (default: the one the sweep used)")
    y.add_argument("-v", "--verbose", action="store_true")


def run_plain(args: argparse.Namespace) -> dict | None:
    from popsteer.util.writable import check_folder

    if args.cmd == "data":
        check_folder("--data-dir", args.data_dir)  # before any download or conversion
    if args.cmd == "status":
        from popsteer.app.status import status_text

        for flag, folder in (("--out-dir", args.out_dir), ("--data-dir", args.data_dir)):
            if Path(folder).exists() and not Path(folder).is_dir():  # else "(none)" would read as an empty folder
                raise PopSteerError(f"{flag} {folder}: is a file, not a folder")

        print(status_text(args.dataset, args.data_dir, args.out_dir))
        return None
    if args.cmd == "data" and args.data_cmd == "import":
        from popsteer.data.imports import import_dataset

        return {"path": str(import_dataset(args.path, args.name, args.data_dir, args.fmt, args.user_col, args.item_col,
                                           args.time_col, args.sep))}
    if args.cmd == "data":
        from popsteer.data.fetch import fetch_dataset

        return {"path": str(fetch_dataset(args.name, Path(args.data_dir), args.url))}
    from popsteer.platform.replay import sync  # lazy: ray, mlflow

    return sync(args.journal, args.dir, args.tracking_uri)
