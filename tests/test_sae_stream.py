"""Streamed SAE training rows (popsteer.sae.stream): the in-memory loss curve with a fixed order, the in-memory
path itself when the part fits the buffer, a bounded buffer, an order independent of the files' layout, and
the SAE stage (the sweep trial's path) reading its training part through it."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from popsteer.errors import PopSteerError
from popsteer.sae.model import SAEConfig
from popsteer.sae.stream import ParquetRows, TensorRows, batch_sizes
from popsteer.sae.train import fit_sae
from popsteer.stages.encoded import FORMAT, Encodings, Part, fixed_list

LOSS_KEYS = ("train_loss", "train_fvu", "valid_fvu", "valid_auxk", "valid_loss", "dead_fraction", "lr")
PART = Part("train", stride=10)


def _rows(n: int, d: int = 16, seed: int = 0) -> torch.Tensor:
    """(n, d) low-rank points off the origin; column 0 holds the row number (exact in float32)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g) @ torch.randn(4, d, generator=g) + 0.05 * torch.randn(n, d, generator=g) + 1.0
    x[:, 0] = torch.arange(n, dtype=torch.float32)
    return x


def _write(folder, x: torch.Tensor, group_rows: int, n_files: int = 1, scramble: bool = False) -> Encodings:
    """x as an encoded part, written as the local encoder writes (a ParquetWriter per file, one row group per
    write_table call) and published with its manifest; ``scramble``: groups in a random order across files and
    rows shuffled within each group, as Ray Data may write them."""
    rng = np.random.default_rng(1)
    rows = np.arange(len(x))
    groups = [rows[s : s + group_rows] for s in range(0, len(x), group_rows)]
    if scramble:
        groups = [rng.permutation(g) for g in (groups[i] for i in rng.permutation(len(groups)))]
    staged = folder / ".staging"
    staged.mkdir(parents=True)
    writers = {}
    for i, g in enumerate(groups):  # g: the row numbers of one row group
        table = pa.table({"row": pa.array(g.astype(np.int64)), "x": fixed_list(x[g].numpy())})
        f = i % n_files
        if f not in writers:
            writers[f] = pq.ParquetWriter(staged / f"part-{f}.parquet", table.schema)
        writers[f].write_table(table)
    for w in writers.values():
        w.close()
    store = Encodings(folder)
    store.publish(staged, PART, {"format": FORMAT, "checkpoint_sha256": "test", "inputs_sha256": folder.name,
                                 "rows": len(x), "d": x.shape[1], "part": PART.name})
    return store


def _source(store: Encodings, buffer_rows: int, shuffle: bool = True) -> ParquetRows:
    files, manifest = store.files(PART)
    return ParquetRows(files, buffer_rows, shuffle=shuffle, rows=manifest["rows"], d=manifest["d"])


def _curves(history: list[dict]) -> np.ndarray:
    return np.array([[r[k] for k in LOSS_KEYS] for r in history])


CFG = SAEConfig(k=4, scale=4, batch_size=256, max_epochs=3, min_epochs=3)


def test_fixed_order_streamed_loss_curve_equals_the_in_memory_one(tmp_path):
    x, x_valid = _rows(5000), _rows(600, seed=1)
    source = _source(_write(tmp_path / "a", x, group_rows=700), buffer_rows=1000, shuffle=False)
    assert not source.resident and source.rows == 5000 and source.d == 16
    _, streamed = fit_sae(source, x_valid, CFG)
    _, in_memory = fit_sae(TensorRows(x, shuffle=False), x_valid, CFG)
    assert len(streamed) == len(in_memory) == 3
    np.testing.assert_allclose(_curves(streamed), _curves(in_memory), rtol=0, atol=1e-6)
    assert source.peak_rows <= 1000 + CFG.batch_size and len(source._window) <= 1000


def test_a_part_that_fits_the_buffer_is_the_in_memory_path_bit_for_bit(tmp_path):
    x, x_valid = _rows(3000), _rows(500, seed=1)
    source = _source(_write(tmp_path / "a", x, group_rows=700, n_files=2, scramble=True), buffer_rows=3000)
    assert source.resident
    sae_s, streamed = fit_sae(source, x_valid, CFG)
    sae_m, in_memory = fit_sae(x, x_valid, CFG)  # the tensor path: one randperm per epoch, as before
    assert (_curves(streamed) == _curves(in_memory)).all()
    assert all(torch.equal(a, b) for a, b in zip(sae_s.state_dict().values(), sae_m.state_dict().values()))


def _epoch(source: ParquetRows, gen: torch.Generator, batch: int = 256) -> list[torch.Tensor]:
    return list(source.batches(batch, gen))


def test_streamed_epochs_are_bounded_seeded_permutations_whatever_the_layout(tmp_path):
    n, buffer = 5000, 1000
    x = _rows(n)
    one = _source(_write(tmp_path / "one", x, group_rows=700), buffer)
    many = _source(_write(tmp_path / "many", x, group_rows=333, n_files=3, scramble=True), buffer)
    gen_one, gen_many = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    epochs = []
    for _ in range(2):
        a, b = _epoch(one, gen_one), _epoch(many, gen_many)
        assert [len(t) for t in a] == batch_sizes(n, 256) and len(a) == math.ceil(n / 256)
        assert all(torch.equal(s, t) for s, t in zip(a, b))  # the same batches from either layout
        ids = torch.cat(a)[:, 0].long()
        assert torch.equal(ids.sort().values, torch.arange(n))  # every row once
        assert torch.equal(torch.cat(a)[ids.argsort()], x)  # each row's values intact
        assert len(set((a[0][:, 0].long() // one.block_rows).tolist())) > 1  # a batch mixes blocks
        epochs.append(ids)
    assert not torch.equal(epochs[0], epochs[1])  # a fresh order per epoch
    again = _epoch(_source(_write(tmp_path / "again", x, group_rows=1000), buffer), torch.Generator().manual_seed(7))
    assert torch.equal(torch.cat(again)[:, 0].long(), epochs[0])  # seeded
    for src in (one, many):  # never more than the buffer and a partial batch held
        assert src.peak_rows <= buffer + 256 and len(src._window) <= buffer
    assert one.groups_read <= 2 * (math.ceil(n / 700) + math.ceil(n / one.block_rows))  # each group ~once per epoch


def test_missing_duplicated_or_miscounted_rows_are_refused(tmp_path):
    x = _rows(1200)
    store = _write(tmp_path / "a", x, group_rows=400)
    files, _ = store.files(PART)
    with pytest.raises(PopSteerError, match="manifest says 1000"):
        ParquetRows(files, 500, rows=1000)
    bad = pa.table({"row": pa.array(np.r_[0:599, 0].astype(np.int64)), "x": fixed_list(x[:600].numpy())})
    pq.write_table(bad, tmp_path / "dup.parquet")
    source = ParquetRows([tmp_path / "dup.parquet"], 200)
    with pytest.raises(PopSteerError, match="not each stored once"):
        _epoch(source, torch.Generator().manual_seed(0))
    with pytest.raises(PopSteerError, match="stream_buffer_rows must be >= 1"):
        SAEConfig(stream_buffer_rows=0)


def test_the_sweep_file_sets_the_buffer():
    from popsteer.platform.spec import SearchSpec

    assert SearchSpec(k=[8], scale=[4], sae={"stream_buffer_rows": 4096}).sae_config(8, 4, 1).stream_buffer_rows == 4096
    with pytest.raises(PopSteerError, match="stream_buffer_rows"):
        SearchSpec(k=[8], scale=[4], sae={"stream_buffer_rows": "many"})


def test_the_sae_stage_reads_its_training_part_through_the_stream(small_sasrec, ml100k_small, tmp_path, caplog):
    """The stage (which a sweep trial calls) with a small buffer == fit_sae over the streamed part; with the
    default buffer == fit_sae over the part read whole (the in-memory path), bit for bit."""
    from popsteer.stages.config import SAEStageConfig, Workspace
    from popsteer.stages.sae import train_sae as stage
    from popsteer.util import checkpoint

    _, path = small_sasrec
    where = Workspace(data_dir=str(tmp_path / "data"), out_dir=str(tmp_path / "out"))
    sae = dict(k=8, scale=4, batch_size=4096, max_epochs=1, min_epochs=1)  # one epoch each: this machine is slow
    caplog.set_level("INFO", logger="popsteer.sae.stream")
    small = stage(SAEStageConfig(base=str(path), sae=SAEConfig(**sae, stream_buffer_rows=16384), where=where),
                  out=tmp_path / "small.safetensors", data=ml100k_small)
    held = stage(SAEStageConfig(base=str(path), sae=SAEConfig(**sae), where=where),
                 out=tmp_path / "held.safetensors", data=ml100k_small)
    (store,) = [Encodings(p) for p in (tmp_path / "out" / "encoded").iterdir()]
    train = next(p for p in (store.folder).iterdir() if p.name.startswith("train-"))
    files, manifest = store.files(train.name)
    assert manifest["rows"] > 16384 and f"streaming {manifest['rows']:,} training rows" in caplog.text
    x_valid = torch.from_numpy(store.read("valid"))
    _, direct = fit_sae(ParquetRows(files, 16384, rows=manifest["rows"]), x_valid, SAEConfig(**sae))
    _, in_memory = fit_sae(torch.from_numpy(store.read(train.name)), x_valid, SAEConfig(**sae))
    assert (_curves(small.history) == _curves(direct)).all()
    assert (_curves(held.history) == _curves(in_memory)).all()
    assert not (_curves(small.history) == _curves(held.history)).all()  # another order, another curve
    assert checkpoint.read_meta(small.checkpoint)["sae"]["stream_buffer_rows"] == 16384
