"""Bad input, table-driven, third round of issue 36 (tests/test_bad_inputs.py and _2.py hold the first two).

What a new user tried beyond those tables: unused or out-of-range flags that used to pass (a negative seed, the
learned-steering flags without ``--variant learned``, a drop limit of -1), output folders of ``browse --out`` and
``report --sections``, file names too long for the OS, FIFOs where files are expected, empty flag values, header-
only imports, non-ASCII digits, duplicate YAML keys and Ray resources that are NaN. Each case ends with exit code 2,
exactly one ``error:`` line naming the input, no traceback, and nothing created or changed. ``sub`` cases run a
real process (``tests/cli_util.py``; a FIFO would block an in-process run). An edited learned_deltas.json is
not an error but a cache miss (the deltas are fitted again: tests/test_learned_stage.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from cli_util import run_cli
from test_bad_inputs import (DELETE, HEADER, Ctx, Setup, both, check, dense_rows, pickle_file, prepare, run_main,
                             snapshot, sweep_file, write)
from test_bad_inputs_2 import AFILE, ctx  # noqa: F401  (the module-scoped fixture)

A = ("--data-dir", "{adata}", "--out-dir", "{fx}/saved")  # the fixture's analysis and encodings
D = ("--data-dir", "{w}/datasets", "--out-dir", "{w}/saved")
A2 = ("--data-dir", "{w}/adata", "--out-dir", "{fx}/saved")
LONG = "a" * 300
"""A file-name part over the 255 bytes the OS allows."""


def fifo(name: str) -> Setup:
    def setup(w: Path, c: Ctx) -> None:
        os.mkfifo(w / name)
    return setup


def dataset_x(w: Path, c: Ctx) -> None:
    """A good imported dataset ``x`` that a bad import must leave as it is."""
    (w / "datasets" / "x").mkdir(parents=True)
    (w / "datasets" / "x" / "x.inter").write_text(HEADER + dense_rows())


def section(record: str) -> Setup:
    def setup(w: Path, c: Ctx) -> None:
        (w / "sec" / "ml-100k-sasrec-ours").mkdir(parents=True)
        (w / "sec" / "ml-100k-sasrec-ours" / "section.json").write_text(record)
        (w / "sec" / "ml-100k-sasrec-ours" / "section.md").write_text("# ml-100k\n")
    return setup


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    expect: tuple[str, ...]
    setup: Setup | None = None
    env: tuple[tuple[str, str], ...] = ()
    entry: str = "cli"
    """cli / seed / sweep: main(argv) in this process; sub / sub-seed: a real process (stderr is the one line)."""
    marks: tuple = ()


GRID = ("tune-steering", "-p", "{sae}")

CASES = [
    # ---- flags that were accepted, unused or out of range
    Case("browse-seed-negative", ("browse", "-p", "{sae}", "--seed", "-1", "--out", "{w}/site", *A),
         ("--seed must be in [0, 4294967294]", "-1")),
    Case("learned-seed-negative", (*GRID, "--variant", "learned", "--learned-seed", "-5", *A), ("learned seed", "-5")),
    Case("learned-flags-without-variant", (*GRID, "--learned-lambdas", "0.5", *A), ("--variant learned", "'replace'")),
    Case("learned-with-alpha-unpops", (*GRID, "--variant", "learned", "--alpha-unpops", "1", *A),
         ("--alpha-unpops is unused by --variant learned",)),
    Case("max-ndcg-drop-negative", (*GRID, "--max-ndcg-drop", "-1", *A), ("--max-ndcg-drop must be in [0, 1]", "-1")),
    Case("max-ndcg-drop-nan", (*GRID, "--max-ndcg-drop", "nan", *A), ("--max-ndcg-drop must be in [0, 1]", "nan")),
    Case("grid-alpha-huge", (*GRID, "--ns", "8", "--alphas", "1e308", *A), ("--alphas must all be <= 1000",)),
    Case("grid-n-huge", (*GRID, "--ns", "99999999999", *A), ("--ns must all be <= 1048576",)),
    Case("sae-device-unknown", ("train-sae", "-p", "{sasrec}", "--device", "tpu", *D), ("--device must be", "'tpu'")),
    Case("pipeline-lightgcn-synthetic", ("pipeline", "--small", "--model", "lightgcn", "--probe", "synthetic", *D),
         ("LightGCN cannot encode synthetic profiles", "--probe users")),
    Case("import-out-named-pth", ("import-checkpoint", "{w}/model.pth", "--dataset", "ml-100k", "--trust-pickle",
                                  "--out", "{w}/new.pth", *D), ("--out {w}/new.pth", ".safetensors file name"), pickle_file),
    Case("import-out-is-input", ("import-checkpoint", "{w}/m.safetensors", "--dataset", "ml-100k", "--trust-pickle",
                                 "--out", "{w}/m.safetensors", *D), ("is the checkpoint being imported",),
         write("m.safetensors", "x")),
    Case("flag-value-empty", ("steer", "-p", "", "--num_neurons", "8", "--alpha", "1", *A), ("-p is empty",)),
    Case("dataset-empty", ("analyze", "-p", "{sae}", "--dataset", "", *D), ("--dataset is empty",)),
    Case("seed-flag-value-empty", ("--analyze_neurons", "-p", "", *D), ("-p is empty",), entry="seed"),
    Case("seed-no-mode-at-all", (), ("give exactly one of", "run.py --help"), entry="sub-seed"),
    Case("report-walltimes-without-sections", ("report", "-p", "{sae}", "--walltimes", "{w}/w.tsv", *D),
         ("--walltimes {w}/w.tsv", "--sections")),
    Case("report-walltimes-binary", ("report", "-p", "{sae}", "--sections", "{w}/sec", "--walltimes", "{w}/w.tsv", *D),
         ("--walltimes {w}/w.tsv", "UTF-8"), write("w.tsv", b"\x9c\xff\x00 binary")),
    Case("report-walltimes-folder", ("report", "-p", "{sae}", "--sections", "{w}/sec", "--walltimes", "{w}/saved", *D),
         ("--walltimes {w}/saved: not a regular file",)),
    Case("report-assemble-with-p", ("report", "-p", "{sae}", "--assemble", "{w}/saved", *D), ("--assemble", "without -p")),

    # ---- output folders named by other flags than --out-dir, and names too long for the OS
    Case("browse-out-unwritable", ("browse", "-p", "{sae}", "--out", "/proc/popsteer-site", *A),
         ("--out /proc/popsteer-site", "not writable")),
    Case("report-sections-unwritable", ("report", "-p", "{sae}", "--tiny", "--sections", "/proc/popsteer-sec", *D),
         ("--sections /proc/popsteer-sec", "not writable")),
    Case("report-sections-is-file", ("report", "-p", "{sae}", "--tiny", "--sections", "{w}/afile", *D),
         ("--sections {w}/afile: is a file",), AFILE),
    Case("name-too-long-checkpoint", ("steer", "-p", f"{{w}}/{LONG}.safetensors", *A), ("file name too long",)),
    Case("name-too-long-out-dir", ("train-recommender", "--out-dir", f"{{w}}/{LONG}/x", "--data-dir", "{w}/datasets"),
         ("--out-dir", "file name too long")),
    Case("name-too-long-report-out", ("report", "-p", "{sae}", "--out", f"{{w}}/{LONG}.md", *D),
         ("--out", "file name too long")),
    Case("name-too-long-import", ("data", "import", "{w}/s.txt", "--name", LONG, *D), ("file name too long",),
         write("s.txt", "1 2 3 4\n")),
    Case("name-too-long-sweep-file", (f"{{w}}/{LONG}.yaml",), ("file name too long",), entry="sweep"),

    # ---- weird files: FIFOs, folders, header-only files, non-ASCII digits
    Case("checkpoint-fifo", ("evaluate", "-p", "{w}/f.safetensors", *D), ("{w}/f.safetensors", "not a regular file"),
         fifo("f.safetensors"), entry="sub"),
    Case("tags-fifo", ("browse", "-p", "{sae}", "--tags", "{w}/t.csv", "--out", "{w}/site", *A),
         ("tags file {w}/t.csv is not a regular file",), fifo("t.csv"), entry="sub"),
    Case("import-fifo", ("data", "import", "{w}/f.txt", "--name", "x", *D), ("{w}/f.txt is not a regular file",),
         fifo("f.txt"), entry="sub"),
    Case("import-folder", ("data", "import", "{w}/saved", "--name", "x", *D), ("{w}/saved is a folder",)),
    Case("status-out-dir-is-file", ("status", "--out-dir", "{w}/afile", "--data-dir", "{w}/datasets"),
         ("--out-dir {w}/afile: is a file",), AFILE),
    Case("import-csv-header-only-over-good", ("data", "import", "--format", "csv", "{w}/r.csv", "--name", "x", *D),
         ("{w}/r.csv: no interactions", "nothing written"), both(dataset_x, write("r.csv", "user_id,item_id,timestamp\n"))),
    Case("import-inter-header-only", ("data", "import", "--format", "inter", "{w}/h.inter", "--name", "x", *D),
         ("no interactions",), write("h.inter", "user_id:token\titem_id:token\ttimestamp:float\n")),
    Case("import-arabic-digits", ("data", "import", "{w}/s.txt", "--name", "x", *D),
         ("{w}/s.txt:1", "not written in the digits 0-9"), write("s.txt", "١ ٢ ٣\n")),
    Case("import-superscript-digit", ("data", "import", "{w}/s.txt", "--name", "x", *D), ("{w}/s.txt:2", "'²'"),
         write("s.txt", "1 2 3\n2 3 ²\n")),
    *([] if torch.cuda.is_available() else [
        Case("env-triton-without-gpu", ("steer", "-p", "{sae}", "--num_neurons", "8", "--alpha", "1", *A),
             ("POPSTEER_TRITON=1 needs a CUDA GPU", "TRITON_INTERPRET=1"), env=(("POPSTEER_TRITON", "1"),))]),

    # ---- sweep files: duplicate keys, NaN or zero resources, learned settings
    Case("sweep-duplicate-key", ("{w}/sweep.yaml",), ("line 3", "key 'search' given twice (first on line 2)"),
         sweep_file(text="name: x\nsearch: {k: [4], scale: [2]}\nsearch: {k: [8]}\n"), entry="sweep"),
    Case("sweep-file-is-a-folder", ("{w}/saved",), ("sweep file {w}/saved is a folder",), entry="sweep"),
    Case("sweep-resources-nan", ("{w}/sweep.yaml", "--set", "resources.cpu=.nan"), ("resources.cpu must be a finite",),
         sweep_file(), entry="sweep"),
    Case("sweep-evaluator-cpus-nan", ("{w}/sweep.yaml",), ("stages.steering.cpus_per_evaluator", "nan"),
         sweep_file({"stages": {"steering": {"cpus_per_evaluator": float("nan")}}}), entry="sweep"),
    Case("sweep-reduction-factor-one", ("{w}/sweep.yaml",), ("scheduler.reduction_factor must be > 1",),
         sweep_file({"scheduler": {"type": "asha", "reduction_factor": 1.0}}), entry="sweep"),
    Case("sweep-grace-period-zero", ("{w}/sweep.yaml",), ("scheduler.grace_period", "> 0"),
         sweep_file({"scheduler": {"type": "asha", "grace_period": 0}}), entry="sweep"),
    Case("sweep-max-concurrent-zero", ("{w}/sweep.yaml",), ("max_concurrent_trials", "> 0"),
         sweep_file({"max_concurrent_trials": 0}), entry="sweep"),
    Case("sweep-train-cpus-negative", ("{w}/sweep.yaml",), ("train_recommender.cpus", "-2"),
         sweep_file({"base_checkpoint": DELETE, "train_recommender": {"small": True, "cpus": -2.0}}), entry="sweep"),
    Case("sweep-actor-gpus-negative", ("{w}/sweep.yaml",), ("encode.gpus_per_actor", ">= 0"),
         sweep_file({"encode": {"gpus_per_actor": -1.0}}), entry="sweep"),
    Case("sweep-learned-seed-negative", ("{w}/sweep.yaml",), ("learned seed", "-1"),
         sweep_file({"stages": {"steering": {"variant": "learned", "learned": {"seed": -1}}}}), entry="sweep"),
    Case("sweep-learned-without-variant", ("{w}/sweep.yaml",), ("stages.steering.learned", "'replace'"),
         sweep_file({"stages": {"steering": {"learned": {"lambdas": [1.0]}}}}), entry="sweep"),

    # ---- edited results
    Case("section-json-a-list", ("report", "--assemble", "{w}/sec", "--out", "{w}/R.md", *D), ("section.json",),
         section("[1, 2]")),
    Case("section-json-without-walltimes", ("report", "--assemble", "{w}/sec", "--out", "{w}/R.md", *D),
         ("section.json", "walltimes_s"), section(json.dumps({"format": 1, "title": "t", "slug": "s", "command": "c"}))),
]

CLEAN_ENV = ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "POPSTEER_TRITON", "POPSTEER_ROOT", "POPSTEER_PROGRESS",
             "POPSTEER_NATIVE", "POPSTEER_MEMORY_GB", "POPSTEER_SAE_STATE_EVERY_S", "TRITON_INTERPRET")


def run_case(case: Case, argv: list[str], env: dict[str, str], cwd: Path, capsys) -> tuple[int, str]:
    if case.entry.startswith("sub"):
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            proc = run_cli(argv, cwd, seed=case.entry == "sub-seed", timeout=120)
        finally:
            for k, v in old.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        return proc.returncode, proc.stderr
    if case.entry == "sweep":
        argv = [*argv, "--dry-run"]  # a sweep file that passes prints itself instead of starting Ray
    return run_main(case.entry, argv, capsys)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input(case: Case, ctx: Ctx, tmp_path: Path, monkeypatch, capsys):  # noqa: F811
    w, values, argv, env, roots, before = prepare(case, ctx, tmp_path, monkeypatch, CLEAN_ENV,
                                                  not case.entry.startswith("sub"))
    capsys.readouterr()
    code, stderr = run_case(case, argv, env, w, capsys)
    check(code, stderr, case.expect, values, roots, before, only_line=case.entry.startswith("sub"))


def test_enough_new_cases():
    assert len(CASES) >= 45 and len({c.id for c in CASES}) == len(CASES)


def test_status_lists_a_fifo_instead_of_blocking(ctx, tmp_path):  # noqa: F811
    os.mkfifo(tmp_path / "pipe.safetensors")
    proc = run_cli(["status", "--out-dir", str(tmp_path), "--data-dir", str(tmp_path / "none")], tmp_path, seed=False,
                   timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = [line for line in proc.stdout.splitlines() if "pipe.safetensors" in line]
    assert "unreadable" in row and "not a regular file" in row


def test_checkpoint_save_refuses_nan_and_keeps_the_old_file(tmp_path):
    from popsteer.errors import PopSteerError
    from popsteer.util import checkpoint

    good = tmp_path / "m.safetensors"
    checkpoint.save(good, {"w": torch.ones(3)}, {"kind": "x"})
    before = good.read_bytes()
    with pytest.raises(PopSteerError, match="tensor 'w' has NaN or infinite values; not written"):
        checkpoint.save(good, {"w": torch.tensor([1.0, float("nan")])}, {"kind": "x"})
    assert good.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_edited_neuron_labels_are_ignored_not_a_crash(tmp_path):
    from popsteer.report.neurons import read_labels

    (tmp_path / "neuron_labels.json").write_text(json.dumps({"sae_sha256": "abc"}))
    (tmp_path / "neuron_labels.csv").write_text("neuron,tag\n1,x\n")  # the label column renamed by hand
    assert read_labels(tmp_path, "abc") is None
    (tmp_path / "neuron_labels.json").write_text("[1, 2]")
    (tmp_path / "neuron_labels.csv").write_text("neuron,label\n1,x\n")
    assert read_labels(tmp_path, "abc") is None


def test_walltimes_not_yet_written_is_a_warning_not_an_error(tmp_path, caplog):
    from popsteer.stages.config_report import ReportConfig

    with caplog.at_level(logging.WARNING):  # a reproduction's first section can come before its first timed step
        ReportConfig(saes=["s.safetensors"], sections=str(tmp_path / "sec"), walltimes=str(tmp_path / "w.tsv"))
    assert "not found: the section's steps are not timed" in caplog.text
