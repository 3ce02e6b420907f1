"""``python -m popsteer.sweep`` and ``cluster/job.py``: run sweep files through the platform's chain.

Each file gets one preflight, one Ray connection and one MLflow parent run, and runs its
stages in this driver (``popsteer.platform.sweep.run_sweep``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from popsteer.app.cli import _Parser
from popsteer.errors import PopSteerError, path_error
from popsteer.platform.sweep_file import load_spec
from popsteer.platform.sweep import STAGES, SweepInterrupted, _json_default, run_sweep
from popsteer.util.env import check_environment
from popsteer.util.logs import begin_work, drop_held, setup_logging


def build_parser(prog: str = "python -m popsteer.sweep", several: bool = False) -> argparse.ArgumentParser:
    from popsteer.platform import sweep

    p = _Parser(prog=prog, description=sweep.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if several:
        p.add_argument("specs", nargs="+", help="sweep files, run in order")
    else:
        p.add_argument("spec", help="the sweep file, e.g. sweeps/smoke.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the sweep file (dotted path, YAML value), e.g. --set storage=/data/sweeps")
    p.add_argument("--resume", action="store_true",
                   help="require an interrupted sweep to resume (without it, one is resumed when it exists)")
    p.add_argument("--from", dest="first", choices=STAGES, default=STAGES[0], help="first stage to run")
    p.add_argument("--to", dest="last", choices=STAGES, default=STAGES[-1], help="last stage to run")
    p.add_argument("--only", choices=STAGES, default=None, help="run one stage (from the files of the earlier ones)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved sweep file as JSON and exit")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def brief(summary: dict) -> dict:
    sweep = summary["sweep"] or {}
    return {"name": summary["name"], "experiment_dir": summary["experiment_dir"],
            "parent_run_id": summary["parent_run_id"], "seconds": summary["seconds"],
            "errors": sweep.get("errors"), "selected": sweep.get("selected"),
            "picks": {k: v.get("pick") for k, v in ((summary["steering"] or {}).get("picks") or {}).items()}}


def main(argv: list[str] | None = None, prog: str = "python -m popsteer.sweep", several: bool = False) -> int:
    args = build_parser(prog, several).parse_args(argv)
    setup_logging(args.verbose, defer=True)  # shown once the sweep file is accepted
    # a snapshot per finished trial is what resuming wants; Tune would warn about it on short trials
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    first, last = (args.only, args.only) if args.only else (args.first, args.last)
    errors = 0
    try:
        check_environment()
        for path in args.specs if several else [args.spec]:
            spec = load_spec(path, args.overrides)
            begin_work()
            if args.dry_run:
                print(json.dumps(spec.to_dict(), indent=2))
                continue
            summary = run_sweep(spec, args.resume, first, last)
            print(json.dumps(brief(summary), indent=2, default=_json_default), flush=True)
            errors += (summary["sweep"] or {}).get("errors") or 0
    except PopSteerError as exc:
        drop_held()
        print(f"error: {exc}", file=sys.stderr)
        return 130 if isinstance(exc, SweepInterrupted) else 2
    except OSError as exc:
        if (err := path_error(exc)) is None:
            raise
        drop_held()
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        begin_work()
        print("error: interrupted (run the same command again to resume)", file=sys.stderr)
        return 130
    finally:
        begin_work()
    return 1 if errors else 0
