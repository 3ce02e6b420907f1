"""Does steering win? The hypervolume ratios of issue 32 over the committed report sections.

Reads ``docs/results/<section>/section.json`` (written by ``popsteer report --sections``, e.g. through
``scripts/reproduce.sh``) for the four sections of the goal (ML-1M and Last.fm, ours and the authors')
and records, each the minimum over the sections present:

- ``steering_hv_over_best_baseline_min_top100``: serving setting, m = 100; the best steering form (learned
  steering + P-MMF on the steered top-100 included) over the best other method (goal >= 1);
- ``steering_alone_hv_over_best_baseline_min_top100``: the same with steering alone;
- ``steering_hv_over_best_nonpmmf_min``: full ranking, the best steering form over the best baseline but
  P-MMF (goal >= 1);
- ``steering_hv_over_pmmf_min``: full ranking, the best steering form over P-MMF, with the oracle bound
  (``steering_oracle_hv_over_pmmf_min``: a free per-user query shift fitted to P-MMF's lists over P-MMF on
  the same points).

    .venv/bin/python bench/steering_wins.py [--sections docs/results] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from results import record  # noqa: E402

from popsteer.report.findings_forms import section_ratios  # noqa: E402

GOAL_SECTIONS = ("ml-1m-sasrec-ours", "ml-1m-sasrec-authors", "lastfm-sasrec-ours", "lastfm-sasrec-authors")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", default=str(HERE.parent / "docs" / "results"))
    ap.add_argument("--dry-run", action="store_true", help="print, do not record")
    args = ap.parse_args(argv)
    ratios = {}
    for slug in GOAL_SECTIONS:
        path = Path(args.sections) / slug / "section.json"
        if path.is_file():
            ratios[slug] = section_ratios(json.loads(path.read_text()))
    if not ratios:
        print(f"no goal section under {args.sections}", file=sys.stderr)
        return 2
    missing = [s for s in GOAL_SECTIONS if s not in ratios]
    note_tail = f"; sections: {', '.join(ratios)}" + (f"; missing: {', '.join(missing)}" if missing else "")
    command = "python bench/steering_wins.py  (after scripts/reproduce.sh wrote docs/results/)"
    figures = []
    for name, key, goal in (("steering_hv_over_best_baseline_min_top100", "top100", ">= 1.0"),
                            ("steering_alone_hv_over_best_baseline_min_top100", "top100_alone", "recorded"),
                            ("steering_hv_over_best_nonpmmf_min", "full_nonpmmf", ">= 1.0")):
        per = {s: r[key] for s, r in ratios.items() if key in r}
        if not per:
            continue
        value = min(v["ratio"] for v in per.values())
        note = "; ".join(f"{s}: {v['form']} {1000 * v['form_hv']:.3f} vs {v['baseline']} {1000 * v['baseline_hv']:.3f}"
                         for s, v in per.items())
        met = (value >= 1.0 if not missing else None) if goal != "recorded" else None  # judged on all four only
        figures.append((name, round(value, 3), goal, met, note + note_tail))
    pmmf = {s: r["full"]["form_hv"] / r["oracle"]["hv_pmmf"] for s, r in ratios.items()
            if "oracle" in r and r["oracle"]["hv_pmmf"] > 0}
    if pmmf:
        oracle = {s: ratios[s]["oracle"] for s in pmmf}
        figures.append(("steering_hv_over_pmmf_min", round(min(pmmf.values()), 3), "recorded, with the oracle bound",
                        None, "; ".join(f"{s}: {v:.3f}" for s, v in pmmf.items()) + note_tail))
        figures.append(("steering_oracle_hv_over_pmmf_min", round(min(o["hv_oracle"] / o["hv_pmmf_points"]
                                                                      for o in oracle.values()), 3),
                        "recorded (the bound of any per-user query shift aimed at P-MMF's lists)", None,
                        "; ".join(f"{s}: oracle {1000 * o['hv_oracle']:.3f} vs P-MMF {1000 * o['hv_pmmf_points']:.3f} "
                                  f"on the same points, {100 * o['recovered']:.0f}% of its items recovered"
                                  for s, o in oracle.items()) + note_tail))
    for name, value, goal, met, note in figures:
        print(f"{name}: {value} ({goal}) {note}")
        if not args.dry_run:
            record(name, value, "ratio of test hypervolumes", goal, met, command, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
