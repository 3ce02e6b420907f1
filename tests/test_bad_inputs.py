"""Bad input, table-driven: every place a user gives input (CLI flags, sweep files, dataset
files, checkpoints, environment) ends with exit code 2, exactly one ``error:`` line on stderr
naming the offending input, no traceback, and no file created or changed.

Most cases call the entry points' ``main(argv)`` in this process (importing torch once); the
``sub-*`` cases run a real interpreter for the paths only a fresh process exercises.
"""

from __future__ import annotations

import copy
import gzip
import importlib.util
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml

from cli_util import ROOT

Ctx = dict[str, str]
Setup = Callable[[Path, Ctx], None]

# ------------------------------------------------------------------ input makers

HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def dense_rows(n_users: int = 6, n_items: int = 6, ts: Callable[[int, int], str] | None = None) -> str:
    """Every user rates every item: 5-core survives when both counts are >= 5."""
    ts = ts or (lambda u, i: str(880000000 + 100 * u + i))
    return "".join(f"u{u}\ti{i}\t3\t{ts(u, i)}\n" for u in range(n_users) for i in range(n_items))


def inter_file(text: str | bytes, dataset: str = "ml-1m", suffix: str = ".inter") -> Setup:
    """Write ``<w>/datasets/<dataset>/<dataset><suffix>``."""
    def setup(w: Path, ctx: Ctx) -> None:
        path = w / "datasets" / dataset / f"{dataset}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode() if isinstance(text, str) else text)
    return setup


def cut_gzip(w: Path, ctx: Ctx) -> None:
    full = gzip.compress((HEADER + dense_rows(40, 40)).encode(), mtime=0)
    inter_file(full[: len(full) // 2], suffix=".inter.gz")(w, ctx)


def write(name: str, data: str | bytes) -> Setup:
    def setup(w: Path, ctx: Ctx) -> None:
        (w / name).write_bytes(data.encode() if isinstance(data, str) else data)
    return setup


def cut_file(src: str, name: str, keep: float | int) -> Setup:
    """A copy of the fixture ``src`` cut to ``keep`` bytes (int) or that share of its size (float)."""
    def setup(w: Path, ctx: Ctx) -> None:
        data = Path(ctx[src]).read_bytes()
        (w / name).write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    return setup


def resave(src: str, name: str, tensors_fn=None, meta_fn=None) -> Setup:
    """Save a changed copy of the fixture checkpoint ``src`` as ``<w>/<name>``."""
    def setup(w: Path, ctx: Ctx) -> None:
        from safetensors.torch import load_file, save_file

        from popsteer.util import checkpoint

        tensors, meta = load_file(ctx[src]), checkpoint.read_meta(ctx[src])
        if tensors_fn:
            tensors_fn(tensors)
        if meta_fn:
            meta_fn(meta, w)
        # written as an edited file would be: checkpoint.save itself refuses NaN tensors
        save_file(tensors, str(w / name), metadata={"popsteer": json.dumps(dict(meta, format=checkpoint.FORMAT))})
    return setup


def nan_first(tensors: dict) -> None:
    name = sorted(k for k, t in tensors.items() if t.is_floating_point())[0]
    tensors[name].view(-1)[0] = float("nan")


def nudge(tensors: dict) -> None:
    tensors["b_enc"] += 0.01


def base_elsewhere(changed: bool) -> Callable:
    """Bind the SAE to ``<w>/base.safetensors`` (a copy of the SASRec), missing or changed afterwards."""
    def meta_fn(meta: dict, w: Path) -> None:
        from popsteer.util import checkpoint

        base = w / "base.safetensors"
        base.write_bytes(Path(meta["base_checkpoint"]).read_bytes())
        meta["base_checkpoint"], meta["base_sha256"] = str(base), checkpoint.file_sha256(base)
        if changed:
            with open(base, "ab") as fh:
                fh.write(b"\0")
        else:
            base.unlink()
    return meta_fn


def plain_safetensors(metadata: dict | None) -> Setup:
    def setup(w: Path, ctx: Ctx) -> None:
        import torch
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(2)}, str(w / "plain.safetensors"), metadata=metadata)
    return setup


def pickle_file(w: Path, ctx: Ctx) -> None:
    import torch

    torch.save({"state_dict": {}, "config": {}}, w / "model.pth")


def both(*setups: Setup) -> Setup:
    def setup(w: Path, ctx: Ctx) -> None:
        for s in setups:
            s(w, ctx)
    return setup


DELETE = object()


def merge(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def sweep_file(changes: dict | None = None, text: str | None = None) -> Setup:
    """``<w>/sweep.yaml``: a valid small sweep with ``changes`` merged in (placeholders filled), or raw ``text``."""
    def setup(w: Path, ctx: Ctx) -> None:
        if text is not None:
            (w / "sweep.yaml").write_text(text)
            return
        base = {"name": "bad", "dataset": "ml-100k", "data_dir": "datasets", "storage": "saved/sweeps",
                "base_checkpoint": ctx["sasrec"], "mlflow": {"enabled": False},
                "search": {"k": [4], "scale": [2], "sae": {"max_epochs": 2, "min_epochs": 1}}}
        raw = yaml.safe_dump(merge(base, changes or {}))
        (w / "sweep.yaml").write_text(raw.replace("{port}", ctx["port"]))
    return setup


# ------------------------------------------------------------------ the table

D = ("--data-dir", "{w}/datasets", "--out-dir", "{w}/saved")  # empty data folder (ml-100k: the embedded copy)
A = ("--data-dir", "{adata}", "--out-dir", "{w}/saved")  # the data folder holding the fixture SAE's analysis
STEER = ("--num_neurons", "8", "--alpha", "1")


_HAS_CUDA = torch.cuda.is_available()


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    expect: tuple[str, ...]
    """Substrings of the error line (placeholders filled): the offending flag, file, key or value."""
    setup: Setup | None = None
    env: tuple[tuple[str, str], ...] = ()
    entry: str = "cli"
    """cli / seed / sweep / job: main(argv) in this process; sub-seed / sub-sweep: a subprocess."""


CASES = [
    # ---- dataset names and dataset files
    Case("unknown-dataset", ("train-recommender", "--dataset", "netflix", *D), ("unknown dataset 'netflix'",)),
    Case("dataset-file-missing", ("train-recommender", "--dataset", "ml-1m", *D),
         ("{w}/datasets/ml-1m/ml-1m.inter", "not found")),
    Case("inter-cut-mid-line", ("train-recommender", "--dataset", "ml-1m", *D), ("ml-1m.inter is truncated", "'u9\\ti"),
         inter_file(HEADER + dense_rows() + "u9\ti")),
    Case("inter-gz-cut-mid-stream", ("train-recommender", "--dataset", "ml-1m", *D), ("cannot parse", "ml-1m.inter.gz", "end-of-stream"),
         cut_gzip),
    Case("inter-short-row-mid-file", ("train-recommender", "--dataset", "ml-1m", *D), ("ml-1m.inter", "line 3"),
         inter_file(HEADER + "u0\ti0\t3\t1\nu0\ti1\t3\n" + dense_rows())),
    Case("inter-non-numeric-timestamp", ("train-recommender", "--dataset", "ml-1m", *D),
         ("ml-1m.inter", "non-numeric timestamp", "'yesterday'"),
         inter_file(HEADER + dense_rows(ts=lambda u, i: "yesterday" if (u, i) == (2, 3) else "5"))),
    Case("inter-empty-after-5-core", ("train-recommender", "--dataset", "ml-1m", *D),
         ("'ml-1m'", "empty after 5-core"), inter_file(HEADER + dense_rows(3, 3))),
    Case("inter-header-lacks-timestamp", ("train-recommender", "--dataset", "ml-1m", *D),
         ("ml-1m.inter", "lacks column(s) timestamp"),
         inter_file("user_id:token\titem_id:token\trating:float\n" + "u0\ti0\t3\n" * 3)),
    Case("inter-empty-file", ("train-recommender", "--dataset", "ml-1m", *D),
         ("ml-1m.inter", "lacks column(s) user_id, item_id, timestamp"), inter_file("")),
    Case("inter-binary-garbage", ("train-recommender", "--dataset", "ml-1m", *D), ("cannot read", "ml-1m.inter"),
         inter_file(b"\xff\xfe\x00\x81garbage\n")),
    Case("checkpoint-of-another-dataset-items", ("train-sae", "-p", "{sasrec}", *D),
         ("{sasrec}", "item ids do not match dataset 'ml-100k'"),
         inter_file(HEADER + dense_rows(), dataset="ml-100k")),

    # ---- checkpoints
    Case("sae-where-sasrec-expected", ("train-sae", "-p", "{sae}", *D), ("{sae}", "expected a recommender")),
    Case("sasrec-where-sae-expected", ("steer", "-p", "{sasrec}", *STEER, *A), ("{sasrec}", "expected an SAE")),
    Case("sasrec-to-analyze", ("analyze", "-p", "{sasrec}", *D), ("{sasrec}", "expected an SAE")),
    Case("sae-of-another-dataset", ("steer", "-p", "{sae}", "--dataset", "ml-1m", *STEER, *A),
         ("{sae}", "not 'ml-1m'")),
    Case("sae-of-another-dataset-analyze", ("analyze", "-p", "{sae}", "--dataset", "lastfm", *D),
         ("{sae}", "not 'lastfm'")),
    Case("safetensors-cut-in-data", ("train-sae", "-p", "{w}/cut.safetensors", *D), ("{w}/cut.safetensors", "not a readable safetensors", "incomplete"),
         cut_file("sasrec", "cut.safetensors", 0.6)),
    Case("safetensors-cut-in-header", ("steer", "-p", "{w}/cut.safetensors", *STEER, *D),
         ("{w}/cut.safetensors", "not a readable safetensors"), cut_file("sae", "cut.safetensors", 40)),
    Case("nan-weights-sae", ("steer", "-p", "{w}/nan.safetensors", *STEER, *A), ("{w}/nan.safetensors", "NaN"),
         resave("sae", "nan.safetensors", nan_first)),
    Case("nan-weights-sasrec", ("train-sae", "-p", "{w}/nan.safetensors", *D), ("{w}/nan.safetensors", "NaN"),
         resave("sasrec", "nan.safetensors", nan_first)),
    Case("checkpoint-missing", ("analyze", "-p", "{w}/nope.safetensors", *D), ("{w}/nope.safetensors", "not found")),
    Case("checkpoint-is-a-folder", ("train-sae", "-p", "{w}/saved", *D), ("{w}/saved", "is a folder")),
    Case("checkpoint-random-bytes", ("train-sae", "-p", "{w}/random.safetensors", *D),
         ("{w}/random.safetensors", "not a readable safetensors"), write("random.safetensors", os.urandom(3000))),
    Case("checkpoint-text-file", ("steer", "-p", "{w}/notes.txt", *STEER, *D),
         ("{w}/notes.txt", "not a readable safetensors"), write("notes.txt", "just some notes\n")),
    Case("safetensors-without-metadata", ("train-sae", "-p", "{w}/plain.safetensors", *D),
         ("{w}/plain.safetensors", "not a PopSteer checkpoint"), plain_safetensors(None)),
    Case("safetensors-corrupt-metadata", ("train-sae", "-p", "{w}/plain.safetensors", *D),
         ("{w}/plain.safetensors", "corrupt metadata"), plain_safetensors({"popsteer": "{not json"})),
    Case("pickle-given-as-checkpoint", ("steer", "-p", "{w}/model.pth", *STEER, *D),
         ("{w}/model.pth", "import-checkpoint"), pickle_file),
    Case("pickle-import-without-trust", ("import-checkpoint", "{w}/model.pth", "--dataset", "ml-100k", *D),
         ("{w}/model.pth", "--trust-pickle"), pickle_file),
    Case("import-missing-pth", ("import-checkpoint", "{w}/gone.pth", "--dataset", "ml-100k", "--trust-pickle", *D),
         ("{w}/gone.pth", "not found")),
    Case("sae-base-missing", ("analyze", "-p", "{w}/sae.safetensors", *D), ("{w}/base.safetensors", "missing"),
         resave("sae", "sae.safetensors", meta_fn=base_elsewhere(changed=False))),
    Case("sae-base-changed", ("analyze", "-p", "{w}/sae.safetensors", *D), ("{w}/base.safetensors", "changed"),
         resave("sae", "sae.safetensors", meta_fn=base_elsewhere(changed=True))),
    Case("sae-not-analysed-steer", ("steer", "-p", "{sae}", *STEER, *D), ("no neuron analysis", "{w}/datasets")),
    Case("sae-not-analysed-tune", ("tune-steering", "-p", "{sae}", *D), ("no neuron analysis", "{sae}")),
    Case("report-on-unanalysed-sae", ("report", "-p", "{sae}", "--tiny", "--out", "{w}/docs/R.md", *D),
         ("no neuron analysis", "{sae}")),
    Case("analysis-of-another-sae", ("steer", "-p", "{w}/other.safetensors", *STEER, *A),
         ("belongs to another SAE", "{w}/other.safetensors"), resave("sae", "other.safetensors", nudge)),

    # ---- flags
    Case("k-exceeds-hidden", ("train-sae", "-p", "{sasrec}", "--top_k", "999", "--scale", "2", *D),
         ("k=999", "exceeds the hidden width")),
    Case("top-k-zero", ("train-sae", "-p", "{sasrec}", "--top_k", "0", *D), ("SAE k must be >= 1, got 0",)),
    Case("scale-zero", ("train-sae", "-p", "{sasrec}", "--scale", "0", *D), ("SAE scale must be >= 1, got 0",)),
    Case("sae-epochs-negative", ("train-sae", "-p", "{sasrec}", "--epochs", "-3", *D), ("max_epochs", "-3")),
    Case("prefix-stride-zero", ("train-sae", "-p", "{sasrec}", "--prefix-stride", "0", *D), ("--prefix-stride", "0")),
    Case("sae-cannot-fit-in-memory", ("train-sae", "-p", "{sasrec}", "--scale", "4096", *D),
         ("SAE of 131,072 latents", "needs about", "GB of memory but", "available"), env=(("POPSTEER_MEMORY_GB", "0.5"),)),
    Case("scale-above-range", ("train-sae", "-p", "{sasrec}", "--scale", "100000", *D), ("SAE scale must be <= 4096",)),
    Case("grid-cannot-fit-in-memory", ("tune-steering", "-p", "{sae}", *A), ("needs about", "available"),
         env=(("POPSTEER_MEMORY_GB", "0.001"),)),
    Case("env-memory-gb-not-a-number", ("tune-steering", "-p", "{sae}", *A), ("POPSTEER_MEMORY_GB", "'lots'"),
         env=(("POPSTEER_MEMORY_GB", "lots"),)),
    Case("sae-time-budget-negative", ("train-sae", "-p", "{sasrec}", "--time-budget-min", "-1", *D),
         ("time_budget_min", "-1")),
    Case("epochs-negative", ("train-recommender", "--epochs", "-1", *D), ("epochs must be >= 1, got -1",)),
    Case("learning-rate-zero", ("train-recommender", "--learning-rate", "0", *D), ("learning_rate must be > 0",)),
    Case("batch-size-zero", ("train-recommender", "--batch-size", "0", *D), ("batch_size must be >= 1, got 0",)),
    Case("stride-zero", ("train-recommender", "--stride", "0", *D), ("stride must be >= 1, got 0",)),
    Case("unknown-trainer", ("train-recommender", "--trainer", "magic", *D), ("unknown trainer 'magic'",)),
    Case("time-budget-zero", ("train-recommender", "--time-budget-min", "0", *D), ("time_budget_min", "0")),
    Case("lr-schedule-unknown", ("train-recommender", "--lr-schedule", "linear", *D), ("unknown lr_schedule 'linear'",)),
    Case("warmup-one", ("train-recommender", "--lr-schedule", "cosine", "--warmup", "1", *D), ("warmup", "1")),
    Case("precision-unknown", ("train-recommender", "--precision", "fp8", *D), ("unknown precision 'fp8'",)),
    Case("device-unknown", ("train-recommender", "--device", "tpu", *D), ("device", "tpu")),
    Case("ema-decay-one", ("train-recommender", "--ema-decay", "1", *D), ("ema_decay must be in (0, 1), got 1.0",)),
    Case("ema-decay-recbole", ("train-recommender", "--trainer", "recbole", "--ema-decay", "0.9", *D),
         ("ema_decay needs the allpos trainer",)),
    Case("windows-per-user-zero", ("train-recommender", "--windows-per-user", "0", *D),
         ("windows_per_user must be >= 1, got 0",)),
    Case("windows-per-user-recbole", ("train-recommender", "--trainer", "recbole", "--windows-per-user", "2", *D),
         ("windows_per_user needs the allpos trainer",)),
    *([] if _HAS_CUDA else [Case("device-cuda-absent", ("train-recommender", "--device", "cuda", *D),
                                 ("--device cuda", "no CUDA GPU"))]),
    Case("alpha-negative", ("steer", "-p", "{sae}", "--num_neurons", "8", "--alpha", "-1", *A), ("alpha", "-1")),
    Case("alpha-nan", ("steer", "-p", "{sae}", "--num_neurons", "8", "--alpha", "nan", *A), ("alpha", "nan")),
    Case("alpha-inf", ("steer", "-p", "{sae}", "--num_neurons", "8", "--alpha", "inf", *A), ("alpha", "inf")),
    Case("num-neurons-exceeds-hidden", ("steer", "-p", "{sae}", "--num_neurons", "100000", "--alpha", "1", *A),
         ("num_neurons must be in", "100000")),
    Case("num-neurons-zero", ("steer", "-p", "{sae}", "--num_neurons", "0", "--alpha", "1", *A),
         ("num_neurons must be >= 1", "got 0")),
    Case("pipeline-top-k-zero", ("pipeline", "--small", "--top_k", "0", *D), ("SAE k must be >= 1, got 0",)),
    Case("pipeline-k-exceeds-hidden", ("pipeline", "--small", "--top_k", "5000", "--scale", "1", *D),
         ("k=5000", "exceeds the hidden width")),
    Case("pipeline-alpha-negative", ("pipeline", "--small", "--alpha", "-2", *D), ("alpha", "-2")),
    Case("int-flag-not-an-int", ("train-sae", "-p", "{sasrec}", "--top_k", "3.5", *D), ("--top_k", "'3.5'")),
    Case("float-flag-not-a-float", ("steer", "-p", "{sae}", "--alpha", "lots", *A), ("--alpha", "'lots'")),
    Case("unknown-flag", ("train-recommender", "--bogus", *D), ("unrecognized arguments: --bogus",)),
    Case("unknown-subcommand", ("frobnicate",), ("'frobnicate'",)),
    Case("missing-required-flag", ("steer", *A), ("-p/--pretrained_path",)),
    Case("bad-choice", ("steer", "-p", "{sae}", "--split", "train", *A), ("--split", "'train'")),

    # ---- environment
    Case("env-popsteer-triton-bogus", ("steer", "-p", "{sae}", *STEER, *A), ("POPSTEER_TRITON", "'bogus'"),
         env=(("POPSTEER_TRITON", "bogus"),)),

    # ---- data fetch
    Case("fetch-unknown-dataset", ("data", "fetch", "netflix", *D), ("unknown dataset 'netflix'",)),
    Case("fetch-lastfm-has-no-source", ("data", "fetch", "lastfm", *D), ("lastfm.inter",)),
    Case("fetch-url-closed-port", ("data", "fetch", "ml-1m", "--url", "http://127.0.0.1:{port}/ml-1m.zip", *D),
         ("cannot download http://127.0.0.1:{port}/ml-1m.zip", "refused")),

    # ---- data import (popsteer data import --format seq|csv|inter)
    Case("seq-non-numeric-id", ("data", "import", "{w}/s.txt", "--name", "x", *D), ("{w}/s.txt:2", "non-numeric id 'b7'"),
         write("s.txt", "1 2 3 4\n2 5 b7 8\n")),
    Case("seq-empty-line-mid-file", ("data", "import", "{w}/s.txt", "--name", "x", *D), ("{w}/s.txt:2", "empty line"),
         write("s.txt", "1 2 3 4\n\n2 5 6 7\n")),
    Case("seq-user-without-items", ("data", "import", "{w}/s.txt", "--name", "x", *D), ("{w}/s.txt:2", "user 2 has no items"),
         write("s.txt", "1 2 3 4\n2\n3 4 5\n")),
    Case("seq-duplicate-user", ("data", "import", "{w}/s.txt", "--name", "x", *D),
         ("{w}/s.txt:3", "user 1 already has a line (1)"), write("s.txt", "1 2 3 4\n2 5 6\n1 7 8\n")),
    Case("seq-truncated-gzip", ("data", "import", "{w}/s.txt.gz", "--name", "x", *D), ("cannot read {w}/s.txt.gz",),
         write("s.txt.gz", gzip.compress("".join(f"{u} 1 2 3 4 5\n" for u in range(2000)).encode(), mtime=0)[:900])),
    Case("import-file-missing", ("data", "import", "{w}/nope.txt", "--name", "x", *D), ("{w}/nope.txt", "not found")),
    Case("import-csv-missing-column", ("data", "import", "--format", "csv", "{w}/r.csv", "--name", "x", "--user-col", "uid", *D),
         ("cannot read {w}/r.csv", "uid"), write("r.csv", "userId,item_id,timestamp\n1,2,3\n")),
    Case("import-bad-name", ("data", "import", "{w}/s.txt", "--name", "../up", *D), ("--name", "'../up'"),
         write("s.txt", "1 2 3 4\n")),

    # ---- the seed's run.py flags
    Case("seed-two-modes", ("--train_recommender", "--test_popsteer"), ("exactly one of",), entry="seed"),
    Case("seed-sasrec-to-test-popsteer", ("--test_popsteer", "-p", "{sasrec}", *STEER, *A),
         ("{sasrec}", "expected an SAE"), entry="seed"),
    Case("seed-flag-of-another-mode", ("--analyze_neurons", "-p", "{sae}", "--top_k", "3", *D),
         ("unrecognized arguments: --top_k 3",), entry="seed"),
    Case("seed-run-py-alpha-negative", ("--test_popsteer", "-p", "{sae}", "--num_neurons", "8", "--alpha", "-1", *A),
         ("alpha must be", "-1"), entry="sub-seed"),

    # ---- sweep files (python -m popsteer.sweep, cluster/job.py)
    Case("sweep-file-missing", ("{w}/nope.yaml",), ("{w}/nope.yaml", "not found"), entry="sweep"),
    Case("sweep-unknown-key", ("{w}/sweep.yaml",), ("unknown key 'epochz'",), sweep_file({"epochz": 3}), entry="sweep"),
    Case("sweep-unknown-nested-key", ("{w}/sweep.yaml",), ("search.sae.bogus",),
         sweep_file({"search": {"sae": {"bogus": 1}}}), entry="sweep"),
    Case("sweep-yaml-syntax-error", ("{w}/sweep.yaml",), ("sweep.yaml", "not valid YAML"),
         sweep_file(text="name: x\nsearch: {k: [4, 8\n"), entry="sweep"),
    Case("sweep-top-level-list", ("{w}/sweep.yaml",), ("sweep.yaml", "top level must be a mapping"),
         sweep_file(text="- name: x\n- dataset: ml-100k\n"), entry="sweep"),
    Case("sweep-string-for-int", ("{w}/sweep.yaml",), ("'num_samples'", "'three'"),
         sweep_file({"num_samples": "three"}), entry="sweep"),
    Case("sweep-list-for-section", ("{w}/sweep.yaml",), ("'stages'", "wrong type"),
         sweep_file({"stages": ["analysis"]}), entry="sweep"),
    Case("sweep-missing-name", ("{w}/sweep.yaml",), ("missing key 'name'",), sweep_file({"name": DELETE}),
         entry="sweep"),
    Case("sweep-grid-empty", ("{w}/sweep.yaml",), ("search.k",), sweep_file({"search": {"k": []}}), entry="sweep"),
    Case("sweep-negative-alpha", ("{w}/sweep.yaml",), ("stages.steering.alphas", "-1"),
         sweep_file({"stages": {"steering": {"alphas": [1.0, -1.0]}}}), entry="sweep"),
    Case("sweep-storage-escapes", ("{w}/sweep.yaml",), ("key 'storage'", "/etc/popsteer", "outside"),
         sweep_file({"storage": "../../../../../../../../etc/popsteer"}), entry="sweep"),
    Case("sweep-data-dir-escapes", ("{w}/sweep.yaml",), ("key 'data_dir'", "/etc"),
         sweep_file({"data_dir": "/etc"}), entry="sweep"),
    Case("sweep-set-without-value", ("{w}/sweep.yaml", "--set", "storage"), ("--set expects KEY=VALUE", "'storage'"),
         sweep_file(), entry="sweep"),
    Case("sweep-mlflow-closed-port", ("{w}/sweep.yaml",), ("mlflow.tracking_uri", "127.0.0.1:{port}"),
         sweep_file({"mlflow": {"enabled": True, "tracking_uri": "http://127.0.0.1:{port}"}}), entry="sweep"),
    Case("env-mlflow-uri-closed-port", ("{w}/sweep.yaml",), ("MLFLOW_TRACKING_URI", "127.0.0.1:{port}"),
         sweep_file({"mlflow": {"enabled": True}}), env=(("MLFLOW_TRACKING_URI", "http://127.0.0.1:{port}"),),
         entry="sweep"),
    Case("env-mlflow-uri-bad-scheme", ("{w}/sweep.yaml",), ("MLFLOW_TRACKING_URI", "unsupported scheme 'gopher'"),
         sweep_file({"mlflow": {"enabled": True}}), env=(("MLFLOW_TRACKING_URI", "gopher://127.0.0.1/runs"),),
         entry="sweep"),
    Case("env-ray-address-refuses", ("{w}/sweep.yaml",), ("RAY_ADDRESS", "127.0.0.1:{port}"), sweep_file(),
         env=(("RAY_ADDRESS", "127.0.0.1:{port}"),), entry="sweep"),
    Case("env-ray-address-malformed", ("{w}/sweep.yaml",), ("RAY_ADDRESS", "'head node'"), sweep_file(),
         env=(("RAY_ADDRESS", "head node"),), entry="sweep"),
    Case("job-unknown-key", ("{w}/sweep.yaml",), ("unknown key 'epochz'",), sweep_file({"epochz": 3}), entry="job"),
    Case("job-bad-stage", ("{w}/sweep.yaml", "--from", "training"), ("--from", "'training'"), sweep_file(),
         entry="job"),
    Case("sub-sweep-ray-address-refuses", ("{w}/sweep.yaml",), ("RAY_ADDRESS", "127.0.0.1:{port}"), sweep_file(),
         env=(("RAY_ADDRESS", "127.0.0.1:{port}"),), entry="sub-sweep"),
]

# ------------------------------------------------------------------ fixtures and runners


def closed_port() -> int:
    """A loopback port nothing listens on: bound, read and closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_checkpoints(folder: Path) -> tuple[Path, Path]:
    """An untrained CI-sized ml-100k SASRec and a K=4, s=2 SAE bound to it, in ``train-sae``'s format."""
    import torch

    from popsteer.util import checkpoint
    from popsteer.models.config import SASRecConfig
    from popsteer.data import load_dataset
    from popsteer.models.recbole_adapter import build_sasrec
    from popsteer.models.io import save_recommender
    from popsteer.sae.io import sae_meta, save_sae
    from popsteer.sae.model import SAEConfig, TopKSAE

    torch.manual_seed(0)
    hp = SASRecConfig.small()
    data = load_dataset("ml-100k", None, max_len=hp.max_len)
    sasrec = save_recommender(folder / "SASRec-test-ml-100k.safetensors", build_sasrec(data.n_items, hp), data, hp, None)
    cfg = SAEConfig(k=4, scale=2, max_epochs=1, min_epochs=0)
    sae = TopKSAE(hp.hidden_size, cfg)
    meta = sae_meta(dataset=data.name, d=hp.hidden_size, cfg=cfg, base=sasrec, base_sha256=checkpoint.file_sha256(sasrec),
                    prefix_stride=10, train_mode_quirk=False, report={}, history=[], train_minutes=0)
    return sasrec, save_sae(folder / "SASRec_SAE-test-k4-2-ml-100k.safetensors", sae, meta)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> Ctx:
    """The tiny SASRec and SAE checkpoints (``<fx>/saved``) and the SAE's analysis (``<fx>/datasets``)."""
    from popsteer.app.cli import main

    fx = tmp_path_factory.mktemp("bad_inputs")
    (fx / "saved").mkdir()
    sasrec, sae = tiny_checkpoints(fx / "saved")
    assert main(["analyze", "-p", str(sae), "--data-dir", str(fx / "datasets"), "--out-dir", str(fx / "saved")]) == 0
    return {"sasrec": str(sasrec), "sae": str(sae), "adata": str(fx / "datasets"), "fx": str(fx),
            "port": str(closed_port())}


def snapshot(*roots: str | Path) -> dict[str, tuple]:
    """Every folder and file under ``roots`` with its size and modification time."""
    out: dict[str, tuple] = {}
    for root in roots:
        for folder, _, files in os.walk(root):
            out[folder] = ("dir",)
            for name in files:
                st = os.stat(os.path.join(folder, name))
                out[os.path.join(folder, name)] = (st.st_size, st.st_mtime_ns)
    return out


def _job_main(argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location("popsteer_cluster_job", ROOT / "cluster" / "job.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def _in_process(entry: str) -> Callable[[list[str]], int]:
    if entry == "cli":
        from popsteer.app.cli import main
    elif entry == "seed":
        from popsteer.app.seed_cli import main
    elif entry == "sweep":
        from popsteer.app.sweep_cli import main
    else:
        main = _job_main
    return main


def run_case(case: Case, argv: list[str], env: dict[str, str], cwd: Path, capsys) -> tuple[int, str]:
    """(exit code, stderr) of one case."""
    if case.entry.startswith("sub-"):
        entry = [str(ROOT / "run.py")] if case.entry == "sub-seed" else ["-m", "popsteer.sweep"]
        proc = subprocess.run([sys.executable, *entry, *argv], cwd=cwd, capture_output=True, text=True, timeout=120,
                              env={**os.environ, **env})
        return proc.returncode, proc.stderr
    try:
        code = _in_process(case.entry)(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    return code, capsys.readouterr().err


CLEAN_ENV = ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "POPSTEER_TRITON", "POPSTEER_ROOT")


def run_main(entry: str, argv: list[str], capsys) -> tuple[int, str]:
    """``main(argv)`` of an entry point (``sweep``, ``seed`` or the CLI) in this process: (exit code, stderr)."""
    if entry == "sweep":
        from popsteer.app.sweep_cli import main
    elif entry == "seed":
        from popsteer.app.seed_cli import main
    else:
        from popsteer.app.cli import main
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    return code, capsys.readouterr().err


def prepare(case, ctx: Ctx, tmp_path: Path, monkeypatch, clean_env: tuple[str, ...], env_in_process: bool):
    """A case's work folder, its formatted argv and environment, and the snapshot of what must not change:
    (work folder, values, argv, env, roots, before). Every round's table runs through this and ``check``."""
    w = tmp_path / "work"
    for folder in ("datasets", "saved"):
        (w / folder).mkdir(parents=True)
    values = {**ctx, "w": str(w)}
    if case.setup:
        case.setup(w, ctx)
    argv = [a.format(**values) for a in case.argv]
    env = {k: v.format(**values) for k, v in case.env}
    for name in clean_env:
        monkeypatch.delenv(name, raising=False)
    if env_in_process:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
    if getattr(case, "patch", None):
        case.patch(monkeypatch)
    monkeypatch.chdir(w)
    roots = (w, ctx["fx"])
    return w, values, argv, env, roots, snapshot(*roots)


def check(code: int, stderr: str, expect, values: dict, roots, before: dict, only_line: bool = False,
          absent=()) -> None:
    """Exit 2, one ``error:`` line holding every ``expect`` part (``only_line``: stderr is that line alone), no
    traceback, and nothing under ``roots`` new, changed or removed."""
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    if only_line:
        assert stderr.splitlines() == errors, stderr[-3000:]  # the one line, no log line before it
    for part in expect:
        assert part.format(**values) in errors[0], errors[0]
    for word in absent:
        assert word not in errors[0], errors[0]
    after = snapshot(*roots)
    assert after == before, {"new or changed": sorted(k for k in after if after[k] != before.get(k)),
                             "removed": sorted(set(before) - set(after))}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ctx: Ctx, tmp_path: Path, monkeypatch, capsys):
    w, values, argv, env, roots, before = prepare(case, ctx, tmp_path, monkeypatch, CLEAN_ENV,
                                                  not case.entry.startswith("sub-"))
    capsys.readouterr()
    code, stderr = run_case(case, argv, env, w, capsys)
    check(code, stderr, case.expect, values, roots, before)


def test_enough_cases():
    assert len(CASES) >= 34 and len({c.id for c in CASES}) == len(CASES)
