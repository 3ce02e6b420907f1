"""``run.py``: the seed's flag interface, translated to ``popsteer`` subcommands."""

from __future__ import annotations

import sys

from popsteer.app.cli import build_parser, run

MODES = {
    "--train_recommender": "train-recommender",
    "--train_popsteer": "train-sae",
    "--analyze_neurons": "analyze",
    "--test_popsteer": "steer",
    "--tune_popsteer": "tune-steering",
}


def translate(argv: list[str]) -> list[str] | str:
    """Seed argv -> popsteer argv, or an error message."""
    modes = [a for a in argv if a in MODES]
    if len(modes) != 1:
        return f"give exactly one of {', '.join(MODES)}"
    rest = [a for a in argv if a not in MODES]
    return [MODES[modes[0]], *rest]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["-h"], ["--help"]):
        print(__doc__.strip() + "\n\nmodes: " + ", ".join(MODES))
        return 0
    translated = translate(argv)
    if isinstance(translated, str):  # no mode at all included: one error line, as for any bad input
        print(f"error: {translated} (see run.py --help)", file=sys.stderr)
        return 2
    return run(build_parser().parse_args(translated))
