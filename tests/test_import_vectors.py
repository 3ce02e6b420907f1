"""Any model's vectors (``popsteer import-vectors``, ``export-vectors``): GRU4Rec's own vectors, exported and
imported as foreign vectors, give the native path's SAE, Cohen's d and grid rows exactly; the files' checks
(each bad file: exit 2, one error line, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from popsteer.app.cli import main


def cli(argv: list[str], capsys) -> tuple[int, dict | None, str]:
    """``popsteer ARGV`` in this process: (exit code, its JSON output, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 and out.strip() else None), err


def where(w: Path) -> list[str]:
    return ["--data-dir", str(w / "datasets"), "--out-dir", str(w / "saved")]


@pytest.fixture(scope="module")
def exported(gru4rec, tmp_path_factory):
    """GRU4Rec's vectors exported as Parquet by the library function export-vectors calls (its encoded store
    in the work folder): (work folder, the export's result)."""
    from popsteer.stages.config import Workspace
    from popsteer.stages.config_vectors import ExportVectorsConfig
    from popsteer.stages.vectors import export_vectors

    w = tmp_path_factory.mktemp("vectors")
    out = export_vectors(ExportVectorsConfig(base=str(gru4rec[1]), folder=str(w / "exp"),
                                             where=Workspace(str(w / "datasets"), str(w / "saved"))))
    return w, out


def test_exported_vectors_imported_give_the_native_grid_rows(gru4rec, exported, capsys):
    """train-sae, analyze --probe users and tune-steering on GRU4Rec and on its own vectors imported as foreign
    ones: the same SAE report, the same Cohen's d and the same grid rows, every metric, to the last bit."""
    w, exp = exported
    assert exp["d"] == 32 and exp["max_len"] == 20 and not exp["mask_history"] and not exp["bias"]
    code, imp, err = cli(["import-vectors", "--items", exp["items"], "--users", exp["users"], "--dataset", "ml-100k",
                          "--max-len", "20", "--out", str(w / "saved" / "Vectors.safetensors"), *where(w)], capsys)
    assert code == 0, err
    assert imp["train_rows"] == exp["train_rows"] and imp["users"] == 943 and imp["items"] == 1349
    from popsteer.util import checkpoint

    meta = checkpoint.read_meta(imp["checkpoint"])
    assert meta["model"] == "vectors" and meta["arch"] == {"d": 32, "max_len": 20, "mask_history": False, "bias": False}
    results = {}
    for name, base in (("native", str(gru4rec[1])), ("imported", imp["checkpoint"])):
        code, sae, err = cli(["train-sae", "-p", base, "--top-k", "8", "--scale", "8", "--epochs", "3",
                              "--min-epochs", "3", *where(w)], capsys)
        assert code == 0, err
        code, analysis, err = cli(["analyze", "-p", sae["checkpoint"], "--probe", "users", *where(w)], capsys)
        assert code == 0, err
        code, _, err = cli(["tune-steering", "-p", sae["checkpoint"], "--ns", "16", "64", "--alphas", "1", "2.5",
                            *where(w)], capsys)
        assert code == 0, err
        folder = Path(analysis["folder"])
        results[name] = (sae, pd.read_csv(folder / "cohens_d.csv"), pd.read_csv(folder / "steering_grid.csv"))
    (sae_n, d_n, grid_n), (sae_i, d_i, grid_i) = results["native"], results["imported"]
    assert Path(sae_i["checkpoint"]).name.startswith("Vectors_SAE-")
    assert {k: v for k, v in sae_n.items() if k != "checkpoint" and k != "train_minutes"} == \
           {k: v for k, v in sae_i.items() if k != "checkpoint" and k != "train_minutes"}
    pd.testing.assert_frame_equal(d_n, d_i, check_exact=True)
    assert len(grid_n) == 8 and set(grid_n["split"]) == {"valid", "test"}
    pd.testing.assert_frame_equal(grid_n, grid_i, check_exact=True)
    # learned steering pairs each user's valid x with each of its training items (no next item per train row)
    from popsteer.stages.config import SAERef, Workspace
    from popsteer.stages.context import load_sae_context
    from popsteer.stages.learned import training_pairs

    ctx = load_sae_context(SAERef(path=sae_i["checkpoint"], where=Workspace(str(w / "datasets"), str(w / "saved"))))
    x, items = training_pairs(ctx)
    data = ctx.data
    assert len(x) == len(items) == int((data.lengths - 2).sum()) and x.shape[1] == 32
    first = int(data.lengths[0] - 2)
    valid = ctx.base.encodings([]).read("valid")
    assert np.array_equal(x[:first].numpy(), np.repeat(valid[:1], first, 0))
    assert np.array_equal(items[:first].numpy(), data.sequence(0)[:-2])
    # a model-less base refuses what needs a model: synthetic profiles, with one line
    code, _, err = cli(["analyze", "-p", sae_i["checkpoint"], "--probe", "synthetic", *where(w)], capsys)
    assert code == 2 and err.count("\n") == 1 and "--probe users" in err


def test_npz_with_bias_and_masked_history(gru4rec, exported, tmp_path, capsys):
    """export-vectors --format npz writes the Parquet export's columns; the .npz form with an item bias and
    --mask-history: the header records both, the checkpoint holds the bias, and masking the history changes
    the imported model's ranking."""
    w, exp = exported
    items, users = pq.read_table(exp["items"]), pq.read_table(exp["users"])
    vec = lambda t: t["vector"].combine_chunks().flatten().to_numpy().reshape(len(t), -1)  # noqa: E731
    code, npz, err = cli(["export-vectors", "-p", str(gru4rec[1]), "--out", str(tmp_path / "npz"), "--format", "npz",
                          *where(w)], capsys)
    assert code == 0, err
    with np.load(npz["users"]) as got:
        assert np.array_equal(got["vector"], vec(users)) and list(got["split"]) == users["split"].to_pylist()
        assert list(got["user_id"]) == users["user_id"].to_pylist()
    bias = np.linspace(-0.1, 0.1, len(items)).astype(np.float32)
    np.savez(tmp_path / "items.npz", item_id=items["item_id"].to_numpy().astype(str), vector=vec(items), bias=bias)
    np.savez(tmp_path / "users.npz", user_id=users["user_id"].to_numpy().astype(str),
             split=users["split"].to_numpy().astype(str), vector=vec(users).astype(np.float64))
    out = {}
    for mask in (False, True):
        code, out[mask], err = cli(["import-vectors", "--items", str(tmp_path / "items.npz"), "--users",
                                    str(tmp_path / "users.npz"), "--dataset", "ml-100k", "--max-len", "20",
                                    *(["--mask-history"] if mask else []), "--data-dir", str(w / "datasets"),
                                    "--out-dir", str(tmp_path / "saved")], capsys)
        assert code == 0, err
    from popsteer.util import checkpoint

    tensors, meta = checkpoint.load(out[True]["checkpoint"])
    assert meta["arch"]["mask_history"] and meta["arch"]["bias"] and out[True]["bias"]
    assert np.allclose(tensors["item_bias"][1:].numpy(), bias) and float(tensors["item_bias"][0]) == 0.0
    assert out[True]["valid_ndcg@10"] != out[False]["valid_ndcg@10"]


def _small_files(exp: dict, folder: Path) -> tuple[pa.Table, pa.Table]:
    """The exported tables with 300 train rows (every valid and test row): fast bad-file cases."""
    users = pq.read_table(exp["users"])
    split = users["split"].to_numpy()
    keep = np.r_[np.flatnonzero(split == "train")[:300], np.flatnonzero(split != "train")]
    return pq.read_table(exp["items"]), users.take(pa.array(keep))


def _set(table: pa.Table, name: str, column) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, column)


def _vectors(table: pa.Table) -> np.ndarray:
    return table["vector"].combine_chunks().flatten().to_numpy().reshape(len(table), -1).copy()


def _with_vectors(table: pa.Table, v: np.ndarray) -> pa.Table:
    return _set(table, "vector", pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), v.shape[1]))


def _edit_ids(table: pa.Table, name: str, row: int, value: str) -> pa.Table:
    ids = table[name].to_numpy().astype(object)
    ids[row] = value
    return _set(table, name, pa.array(ids.astype(str)))


def _nan(table: pa.Table, row: int, value: float = np.nan) -> pa.Table:
    v = _vectors(table)
    v[row, 3] = value
    return _with_vectors(table, v)


def _valid_rows(users: pa.Table) -> np.ndarray:
    return np.flatnonzero(users["split"].to_numpy() == "valid")


BAD = {  # case -> (edit of (items, users), what the error line says)
    "wrong dimension": (lambda i, u: (i, _with_vectors(u, np.c_[_vectors(u), np.zeros(len(u), np.float32)])),
                        "d=33, the item table d=32"),
    "ragged vector": (lambda i, u: (_set(i, "vector", pa.array([list(r) for r in _vectors(i)[:-1]] + [[0.5] * 31],
                                                                pa.list_(pa.float32()))), u), "wrong dimension"),
    "unknown item": (lambda i, u: (_edit_ids(i, "item_id", 5, "no-such-item"), u), "unknown item id(s), e.g. 'no-such-item'"),
    "unknown user": (lambda i, u: (i, _edit_ids(u, "user_id", 0, "ghost")), "unknown user id(s), e.g. 'ghost'"),
    "NaN item": (lambda i, u: (_nan(i, 7), u), "row 7 of column 'vector' is NaN or infinite"),
    "inf user": (lambda i, u: (i, _nan(u, 2, np.inf)), "row 2 of column 'vector' is NaN or infinite"),
    "float64 overflow": (lambda i, u: (i, _set(u, "vector", pa.array([list(r) for r in _vectors(u).astype(np.float64)
                                                                       * np.r_[1e300, np.ones(len(u) - 1)][:, None]],
                                                                      pa.list_(pa.float64())))), "NaN or infinite"),
    "duplicate item": (lambda i, u: (_edit_ids(i, "item_id", 1, i["item_id"][0].as_py()), u), "appears more than once"),
    "duplicate valid user": (lambda i, u: (i, _edit_ids(u, "user_id", int(_valid_rows(u)[1]),
                                                        u["user_id"][int(_valid_rows(u)[0])].as_py())),
                             "more than one valid row"),
    "missing item": (lambda i, u: (i.slice(1), u), "have no vector"),
    "missing valid row": (lambda i, u: (i, u.take(pa.array(np.delete(np.arange(len(u)), _valid_rows(u)[4])))),
                          "no valid row"),
    "no train rows": (lambda i, u: (i, u.filter(pc.not_equal(u["split"], "train"))), "no train rows"),
    "bad split": (lambda i, u: (i, _edit_ids(u, "split", 0, "training")), "split 'training'"),
    "int vectors": (lambda i, u: (_set(i, "vector", pa.array((_vectors(i) * 100).astype(np.int32).tolist())), u),
                    "expected a list of floats"),
    "float ids": (lambda i, u: (_set(i, "item_id", pa.array(np.arange(len(i), dtype=np.float64))), u),
                  "expected integers or strings"),
    "missing column": (lambda i, u: (i, u.drop_columns(["split"])), "no column 'split'"),
    "null bias": (lambda i, u: (i.append_column("bias", pa.array([None] + [0.0] * (len(i) - 1), pa.float32())), u),
                  "nulls"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files_are_one_line_exit_2_nothing_written(exported, tmp_path, capsys, case):
    w, exp = exported
    edit, says = BAD[case]
    items, users = edit(*_small_files(exp, tmp_path))
    pq.write_table(items, tmp_path / "items.parquet")
    pq.write_table(users, tmp_path / "users.parquet")
    (tmp_path / "saved").mkdir()
    code, _, err = cli(["import-vectors", "--items", str(tmp_path / "items.parquet"), "--users",
                        str(tmp_path / "users.parquet"), "--dataset", "ml-100k", "--max-len", "20",
                        "--data-dir", str(w / "datasets"), "--out-dir", str(tmp_path / "saved")], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert says in err, err
    assert not any((tmp_path / "saved").iterdir())  # no checkpoint, no encoded part, no temporary file


def test_npz_object_arrays_are_refused(exported, tmp_path, capsys):
    """A .npz with an object array (a pickle inside) is refused without unpickling it."""
    w, exp = exported
    np.savez(tmp_path / "items.npz", item_id=np.array(["1", 2], dtype=object), vector=np.zeros((2, 32)))
    code, _, err = cli(["import-vectors", "--items", str(tmp_path / "items.npz"), "--users", exp["users"],
                        "--dataset", "ml-100k", "--data-dir", str(w / "datasets"), "--out-dir", str(tmp_path / "s")],
                       capsys)
    assert code == 2 and err.count("\n") == 1 and "object array" in err and not (tmp_path / "s").exists()
