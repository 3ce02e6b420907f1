"""Bad input, table-driven, for the classes of issue 36 (tests/test_bad_inputs.py holds the first table).

Each case ends with exit code 2, exactly one ``error:`` line naming the input (and none of the
misleading words in ``absent``), no traceback, and no file created or changed. ``sub`` cases run
``python -m popsteer.app.cli`` in a real process and require stderr to be that one line alone.
The sweep-file bomb runs under a memory cap; ``popsteer status`` is checked on odd files.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from cli_util import ROOT
from test_bad_inputs import (HEADER, Ctx, Setup, both, check, dense_rows, inter_file, pickle_file, prepare, resave, run_main,
                             snapshot, sweep_file, tiny_checkpoints, write)

# ------------------------------------------------------------------ input makers


def edit_meta(fn: Callable[[dict], None]) -> Callable:
    def meta_fn(meta: dict, w: Path) -> None:
        fn(meta)
    return meta_fn


def pop(key: str) -> Callable:
    return edit_meta(lambda m: m.pop(key))


def put(key: str, value) -> Callable:
    return edit_meta(lambda m: m.__setitem__(key, value))


def sliced(name: str, rows: int) -> Callable:
    def fn(tensors: dict) -> None:
        tensors[name] = tensors[name][:rows].clone()
    return fn


def analysis_copy(change: Callable[[Path], None]) -> Setup:
    """``<w>/adata``: the fixture's analysed data folder, the SAE's own folder removed (so the seed's files are
    read) and ``change`` applied to the seed's folder."""
    def setup(w: Path, ctx: Ctx) -> None:
        shutil.copytree(ctx["adata"], w / "adata")
        seed = w / "adata" / "ml-100k"
        shutil.rmtree(seed / "analysis")
        change(seed)
    return setup


def cut_json(seed: Path) -> None:
    text = (seed / "analysis.json").read_text()
    (seed / "analysis.json").write_text(text[: len(text) // 2])


def drop_field(field: str) -> Callable[[Path], None]:
    def change(seed: Path) -> None:
        summary = json.loads((seed / "analysis.json").read_text())
        del summary[field]
        (seed / "analysis.json").write_text(json.dumps(summary))
    return change


def bad_value(name: str, column: str, neuron: int, value: str) -> Callable[[Path], None]:
    def change(seed: Path) -> None:
        lines = (seed / name).read_text().splitlines()
        header = lines[0].split(",")
        cells = lines[neuron + 1].split(",")
        cells[header.index(column)] = value
        lines[neuron + 1] = ",".join(cells)
        (seed / name).write_text("\n".join(lines) + "\n")
    return change


def low_disk(free: int) -> Callable:
    def patch(monkeypatch) -> None:
        real = shutil.disk_usage
        monkeypatch.setattr("popsteer.util.writable.shutil.disk_usage", lambda p: real(p)._replace(free=free))
    return patch


AFILE = write("afile", "not a folder\n")

# ------------------------------------------------------------------ the table

D = ("--data-dir", "{w}/datasets", "--out-dir", "{w}/saved")
P = ("--data-dir", "{w}/datasets", "--out-dir", "{fx}/saved")  # the fixture's encodings: steering writes nothing
A2 = ("--data-dir", "{w}/adata", "--out-dir", "{fx}/saved")
STEER = ("--num_neurons", "8", "--alpha", "1")
SAE_CUT = ("evaluate", "-p", "{w}/s.safetensors", *D)


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    expect: tuple[str, ...]
    setup: Setup | None = None
    env: tuple[tuple[str, str], ...] = ()
    entry: str = "cli"
    """cli / sweep: main(argv) in this process; sub: ``python -m popsteer.app.cli`` (stderr must be one line)."""
    absent: tuple[str, ...] = ()
    """Words the error line must not hold (a misleading message)."""
    patch: Callable | None = None


def sae_case(id_: str, expect: tuple[str, ...], tensors_fn=None, meta_fn=None, argv=SAE_CUT) -> Case:
    return Case(id_, argv, expect, resave("sae", "s.safetensors", tensors_fn, meta_fn))


CASES = [
    # ---- class 2: untrusted sweep files (YAML anchors and aliases, size, depth)
    Case("yaml-anchor", ("{w}/sweep.yaml",), ("sweep.yaml", "line 1", "YAML anchor '&n'"),
         sweep_file(text="name: &n bad\ndataset: ml-100k\n"), entry="sweep"),
    Case("yaml-alias", ("{w}/sweep.yaml",), ("sweep.yaml", "line 2", "YAML alias '*k'"),
         sweep_file(text="name: x\nk: *k\n"), entry="sweep"),
    Case("yaml-merge-key", ("{w}/sweep.yaml",), ("line 1", "anchor '&base'"),
         sweep_file(text="base: &base {k: [4]}\nsearch:\n  <<: *base\n"), entry="sweep"),
    Case("yaml-too-deep", ("{w}/sweep.yaml",), ("sweep.yaml", "nested deeper than 64"),
         sweep_file(text="name: " + "[" * 500 + "]" * 500 + "\n"), entry="sweep"),
    Case("yaml-too-large", ("{w}/sweep.yaml",), ("sweep.yaml", "larger than 1024 KB"),
         sweep_file(text="name: x\n" + "# padding\n" * 120_000), entry="sweep"),
    Case("yaml-set-alias", ("{w}/sweep.yaml", "--set", "name=*x"), ("--set name", "YAML alias '*x'"), sweep_file(),
         entry="sweep"),

    # ---- class 3: output locations, checked before any stage runs
    Case("out-dir-through-file", ("train-sae", "-p", "{sasrec}", "--out-dir", "{w}/afile/sub", "--data-dir", "{w}/datasets"),
         ("--out-dir {w}/afile/sub", "runs through the file {w}/afile"), AFILE),
    Case("out-dir-is-file", ("train-recommender", "--data-dir", "{w}/datasets", "--out-dir", "{w}/afile"),
         ("--out-dir {w}/afile: is a file, not a folder",), AFILE),
    Case("data-dir-is-file-analyze", ("analyze", "-p", "{sae}", "--data-dir", "{w}/afile", "--out-dir", "{w}/saved"),
         ("--data-dir {w}/afile: is a file",), AFILE),
    Case("encoded-dir-through-file", ("train-sae", "-p", "{sasrec}", "--encoded-dir", "{w}/afile/enc", *D),
         ("--encoded-dir {w}/afile/enc", "runs through the file"), AFILE),
    Case("report-out-through-file", ("report", "-p", "{sae}", "--tiny", "--out", "{w}/afile/R.md", *D),
         ("--out {w}/afile/R.md", "runs through the file"), AFILE),
    Case("import-out-is-folder", ("import-checkpoint", "{w}/model.pth", "--dataset", "ml-100k", "--trust-pickle",
                                  "--out", "{w}/saved", *D), ("--out {w}/saved", "is a folder"), pickle_file),
    Case("out-dir-unwritable", ("train-sae", "-p", "{sasrec}", "--out-dir", "/sys/popsteer-out", "--data-dir", "{w}/datasets"),
         ("--out-dir /sys/popsteer-out", "not writable")),
    Case("out-dir-disk-full", ("train-sae", "-p", "{sasrec}", *D), ("--out-dir {w}/saved", "1 MB free on its disk"),
         patch=low_disk(1_000_000)),
    Case("encoded-store-disk-full", ("train-sae", "-p", "{sasrec}", *D),  # room for the SAE, not for its inputs
         ("the encoded store {w}/saved/encoded", "20 MB free", "writes about 30 MB"), patch=low_disk(20_000_000)),
    Case("sweep-storage-through-file", ("{w}/sweep.yaml",), ("key 'storage'", "{w}/afile/sweeps", "runs through the file"),
         both(AFILE, sweep_file({"storage": "afile/sweeps"})), entry="sweep"),
    Case("data-import-through-file", ("data", "import", "{w}/s.txt", "--name", "x", "--data-dir", "{w}/afile/d"),
         ("--data-dir {w}/afile/d", "runs through the file"), both(AFILE, write("s.txt", "1 2 3 4\n"))),

    # ---- class 4: numeric settings outside their documented ranges
    Case("steer-alpha-1e308", ("steer", "-p", "{sae}", "--num_neurons", "8", "--alpha", "1e308", *P),
         ("alpha must be <= 1000", "1e+308")),
    Case("pipeline-num-neurons-huge", ("pipeline", "--small", "--num_neurons", "99999999", *D),
         ("num_neurons must be <= 1048576", "99999999")),
    Case("sae-lr-above-one", ("train-sae", "-p", "{sasrec}", "--lr", "5", *D), ("SAE lr must be <= 1", "5.0")),
    Case("seed-negative", ("train-recommender", "--seed", "-4", *D), ("seed must be in [0, 4294967294]", "-4")),
    Case("k-user-huge", ("train-recommender", "--k-user", "10000000", *D), ("k_user must be <= 1000000",)),
    Case("min-rating-nan", ("train-recommender", "--min-rating", "nan", *D), ("min_rating must be a finite number",)),
    Case("prefix-stride-huge", ("train-sae", "-p", "{sasrec}", "--prefix-stride", "100000", *D),
         ("--prefix-stride must be <= 10000", "100000"), absent=("encode.",)),
    Case("top-items-zero", ("analyze", "-p", "{sae}", "--top-items", "0", *D), ("top_items must be in [1, 10000]",)),
    Case("resamples-huge", ("report", "-p", "{sae}", "--resamples", "1000000000", *D), ("resamples must be <= 1000000",)),

    # ---- class 5: corrupt or edited artifacts
    sae_case("sae-header-missing-field", ("{w}/s.safetensors", "header field 'n_latents' is missing"), meta_fn=pop("n_latents")),
    sae_case("sae-header-wrong-type", ("{w}/s.safetensors", "header field 'd'", "valid integer", "'32'"),
             meta_fn=put("d", "32")),
    sae_case("sae-header-bad-sha", ("header field 'base_sha256'",), meta_fn=put("base_sha256", "not-a-hash")),
    sae_case("sae-header-config-unknown-key", ("{w}/s.safetensors", "sae.bogus"),
             meta_fn=edit_meta(lambda m: m["sae"].__setitem__("bogus", 1))),
    sae_case("sae-header-vs-its-config", ("header field 'n_latents' is 64", "4 * 32 = 128"),
             meta_fn=edit_meta(lambda m: m["sae"].__setitem__("scale", 4))),
    sae_case("sae-tensor-vs-header", ("tensor 'W_enc' has shape (32, 32)", "needs (64, 32)"), tensors_fn=sliced("W_enc", 32)),
    sae_case("sae-dataset-vs-base", ("header field 'dataset' is 'ml-1m'", "'ml-100k'"), meta_fn=put("dataset", "ml-1m")),
    Case("sasrec-tokens-vs-n-items", ("train-sae", "-p", "{w}/r.safetensors", *D),
         ("{w}/r.safetensors", "item_tokens: 5 tokens, but n_items is 1350"),
         resave("sasrec", "r.safetensors", meta_fn=edit_meta(lambda m: m.__setitem__("item_tokens", m["item_tokens"][:5])))),
    Case("sasrec-kind-unknown", ("train-sae", "-p", "{w}/r.safetensors", *D), ("header field 'kind' is 'bert'",),
         resave("sasrec", "r.safetensors", meta_fn=put("kind", "bert"))),
    Case("sasrec-tensor-vs-header", ("train-sae", "-p", "{w}/r.safetensors", *D),
         ("tensor 'position_embedding.weight' has shape (10, 32)", "needs (20, 32)"),
         resave("sasrec", "r.safetensors", sliced("position_embedding.weight", 10))),
    Case("sasrec-item-table-vs-header", ("evaluate", "-p", "{w}/r.safetensors", *D),
         ("item table has shape (100, 32)", "n_items is 1350"), resave("sasrec", "r.safetensors", sliced("item_embedding.weight", 100))),
    Case("analysis-json-truncated", ("steer", "-p", "{sae}", *STEER, *A2), ("analysis.json is not valid JSON",),
         analysis_copy(cut_json)),
    Case("analysis-json-missing-field", ("steer", "-p", "{sae}", *STEER, *A2), ("analysis.json", "'sae_sha256' is missing"),
         analysis_copy(drop_field("sae_sha256"))),
    Case("cohens-d-nan", ("steer", "-p", "{sae}", *STEER, *A2), ("cohens_d.csv", "neuron 3 is nan"),
         analysis_copy(bad_value("cohens_d.csv", "cohen_d", 3, "nan"))),
    Case("row-stats-inf", ("tune-steering", "-p", "{sae}", *A2), ("row_stats_popular.csv", "neuron 0 is inf"),
         analysis_copy(bad_value("row_stats_popular.csv", "std", 0, "inf"))),

    # ---- class 6: degenerate data, flags and environment
    Case("catalog-under-k", ("train-recommender", "--dataset", "ml-1m", *D),
         ("'ml-1m' has 8 items", "more items than k=10"), inter_file(HEADER + dense_rows(8, 8)), entry="sub"),
    Case("csv-user-col-is-item-col", ("data", "import", "--format", "csv", "{w}/r.csv", "--name", "x", "--user-col", "u",
                                      "--item-col", "u", *D), ("--user-col and --item-col", "'u'"),
         write("r.csv", "u,i,timestamp\n1,2,3\n")),
    Case("env-state-every-not-a-number", ("train-sae", "-p", "{sasrec}", *D), ("POPSTEER_SAE_STATE_EVERY_S", "'soon'"),
         env=(("POPSTEER_SAE_STATE_EVERY_S", "soon"),)),
    Case("env-progress-bogus", ("train-recommender", *D), ("POPSTEER_PROGRESS", "'maybe'"), env=(("POPSTEER_PROGRESS", "maybe"),)),
    Case("env-native-bogus", ("steer", "-p", "{sae}", *STEER, *P), ("POPSTEER_NATIVE", "'perhaps'"),
         env=(("POPSTEER_NATIVE", "perhaps"),)),
    Case("env-memory-negative", ("train-sae", "-p", "{sasrec}", *D), ("POPSTEER_MEMORY_GB", "> 0", "'-1'"),
         env=(("POPSTEER_MEMORY_GB", "-1"),)),
    Case("env-on-a-plain-command", ("data", "fetch", "ml-100k", *D), ("POPSTEER_SAE_STATE_EVERY_S", "'-3'"),
         env=(("POPSTEER_SAE_STATE_EVERY_S", "-3"),)),

    # ---- class 7: messages that mislead
    Case("data-dir-is-file-steer", ("steer", "-p", "{sae}", *STEER, "--data-dir", "{w}/afile", "--out-dir", "{fx}/saved"),
         ("--data-dir {w}/afile: is a file",), AFILE, absent=("no neuron analysis",)),
    Case("negative-id", ("data", "import", "{w}/s.txt", "--name", "x", *D), ("{w}/s.txt:2", "negative id '-5'"),
         write("s.txt", "1 2 3 4\n-5 6 7\n"), absent=("non-numeric",)),
    Case("hint-names-the-command", ("steer", "-p", "{sae}", *STEER, *P), ("run `popsteer analyze -p {sae}` first",),
         absent=("--analyze_neurons",), entry="sub"),
    Case("flag-not-internal-key", ("tune-steering", "-p", "{sae}", "--ns", "0", *A2), ("--ns must all be >= 1",),
         analysis_copy(lambda seed: None), absent=("stages.steering",)),
    Case("flag-not-internal-key-2", ("tune-steering", "-p", "{sae}", "--alpha-unpops", "-1", *A2),
         ("--alpha-unpops must be finite numbers >= 0",), analysis_copy(lambda seed: None), absent=("stages.steering",)),
    Case("one-line-before-any-stage", ("train-sae", "-p", "{sasrec}", "--out-dir", "{w}/afile/x", "--data-dir", "{w}/datasets"),
         ("runs through the file",), AFILE, entry="sub"),
]

# ------------------------------------------------------------------ fixtures and runner


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> Ctx:
    """The tiny SASRec and SAE (``<fx>/saved``), the SAE's analysis (``<fx>/datasets``) and the valid and test
    encodings in ``<fx>/saved/encoded`` (so a steering run on them writes nothing before its checks)."""
    from popsteer.app.cli import main

    fx = tmp_path_factory.mktemp("bad_inputs_2")
    (fx / "saved").mkdir()
    sasrec, sae = tiny_checkpoints(fx / "saved")
    where = ["--data-dir", str(fx / "datasets"), "--out-dir", str(fx / "saved")]
    assert main(["analyze", "-p", str(sae), *where]) == 0
    for split in ("valid", "test"):
        assert main(["evaluate", "-p", str(sae), "--split", split, *where]) == 0
    return {"sasrec": str(sasrec), "sae": str(sae), "adata": str(fx / "datasets"), "fx": str(fx), "port": "1"}


CLEAN_ENV = ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "POPSTEER_TRITON", "POPSTEER_ROOT", "POPSTEER_PROGRESS",
             "POPSTEER_NATIVE", "POPSTEER_MEMORY_GB", "POPSTEER_SAE_STATE_EVERY_S")


def run_case(case: Case, argv: list[str], env: dict[str, str], cwd: Path, capsys) -> tuple[int, str]:
    if case.entry == "sub":
        proc = subprocess.run([sys.executable, "-m", "popsteer.app.cli", *argv], cwd=cwd, capture_output=True,
                              text=True, timeout=120, env={**os.environ, **env})
        return proc.returncode, proc.stderr
    return run_main(case.entry, argv, capsys)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ctx: Ctx, tmp_path: Path, monkeypatch, capsys):
    w, values, argv, env, roots, before = prepare(case, ctx, tmp_path, monkeypatch, CLEAN_ENV, case.entry != "sub")
    capsys.readouterr()
    code, stderr = run_case(case, argv, env, w, capsys)
    check(code, stderr, case.expect, values, roots, before, only_line=case.entry == "sub", absent=case.absent)


def test_cases_cover_every_class():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


# ------------------------------------------------------------------ class 2: the alias bomb, under a memory cap

BOMB = "name: bomb\na: &a [" + ",".join(['"lol"'] * 9) + "]\n" + "".join(
    f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")) + "search: {k: *i}\n"
CAP_BYTES = 3 << 30
"""Address space of the sweep process: its imports fit (~1 GB), the bomb's 9**9 strings (~23 GB) do not."""


def test_yaml_alias_bomb_is_refused_fast_under_a_memory_cap(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB) < 1500

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CAP_BYTES, CAP_BYTES))

    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "popsteer.sweep", str(path)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, preexec_fn=cap, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [f"error: {path}: line 2: YAML anchor '&a' is not allowed (write the value out)"]
    assert time.monotonic() - t0 < 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.yaml"]


# ------------------------------------------------------------------ class 5: `popsteer status` on odd files


def test_status_lists_odd_files_instead_of_crashing(ctx, tmp_path, capsys):
    from popsteer.app.cli import main
    from popsteer.util import checkpoint

    out, data = tmp_path / "saved", tmp_path / "datasets"
    shutil.copytree(Path(ctx["fx"]) / "saved", out, ignore=shutil.ignore_patterns("encoded"))
    (out / "dangling.safetensors").symlink_to(tmp_path / "gone.safetensors")
    (out / "folder.safetensors").mkdir()
    meta = checkpoint.read_meta(ctx["sasrec"])
    from safetensors.torch import load_file
    checkpoint.save(out / "odd-metrics.safetensors", load_file(ctx["sasrec"]), {**meta, "metrics": {"valid": ["ndcg@10"]}})
    checkpoint.save(out / "no-tokens.safetensors", load_file(ctx["sasrec"]), {**meta, "item_tokens": None})
    (data / "ml-100k" / "analysis" / "x").mkdir(parents=True)
    (data / "ml-100k" / "analysis" / "x" / "analysis.json").write_text("[1, 2")
    (data / "ml-100k" / "cohens_d.csv").write_bytes(b"\xff\xfe\x00garbage")
    sweep = out / "sweeps" / "s1"
    sweep.mkdir(parents=True)
    (sweep / "sweep_summary.json").write_text(json.dumps({"sweep": [1, 2], "steering": "none"}))
    capsys.readouterr()
    code = main(["status", "--data-dir", str(data), "--out-dir", str(out)])
    text, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in err, err
    rows = {line.split()[2] if len(line.split()) > 2 else line: line for line in text.splitlines()}
    assert "unreadable" in rows["dangling.safetensors"] and "not found" in rows["dangling.safetensors"]
    assert "is a folder" in rows["folder.safetensors"]
    assert "unreadable" in rows["odd-metrics.safetensors"]
    assert "header field 'item_tokens'" in rows["no-tokens.safetensors"]
    assert "not valid JSON" in rows["ml-100k/analysis/x/analysis.json"]
    assert "unreadable" in rows["ml-100k/cohens_d.csv"]
    assert "unreadable" in rows["s1"]
    assert "SASRec" in rows["SASRec-test-ml-100k.safetensors"]
