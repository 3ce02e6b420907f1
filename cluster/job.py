"""Job entry: the whole PopSteer chain on a Ray cluster, one stage at a time.

    ray job submit --address http://HEAD:8265 --working-dir . \
        --runtime-env cluster/runtime_env.yaml -- \
        python cluster/job.py sweeps/steer_grid.yaml --set storage=/shared/sweeps --set data_dir=/shared/datasets

Stages: train recommender -> encode -> SAE sweep -> analysis -> steering grid. Each stage
writes ``<storage>/<name>/stages/<stage>.json`` and the next stage reads it, so a failed job
is resubmitted with ``--from STAGE`` and continues where it stopped (the sweep stage itself
resumes with Tuner.restore). Several sweep files run one after another.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir

from popsteer.errors import PopSteerError  # noqa: E402
from popsteer.platform.spec import load_spec  # noqa: E402
from popsteer.platform.sweep import STAGES, SweepInterrupted, run_sweep  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from popsteer.app.cli import _Parser, setup_logging

    p = _Parser(prog="cluster/job.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("specs", nargs="+", help="sweep files, run in order")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override keys of every sweep file (e.g. storage=/shared/sweeps)")
    p.add_argument("--from", dest="first", choices=STAGES, default=STAGES[0], help="first stage (earlier ones from files)")
    args = p.parse_args(argv)
    setup_logging(False)
    try:
        for path in args.specs:
            spec = load_spec(path, args.overrides)
            for stage in STAGES[STAGES.index(args.first):]:
                summary = run_sweep(spec, first=stage, last=stage)
                print(json.dumps({"sweep": spec.name, "stage": stage, "seconds": summary["seconds"],
                                  "result_file": str(spec.experiment_dir / "stages" / f"{stage}.json")}), flush=True)
    except SweepInterrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 130
    except PopSteerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
