"""SAE inputs larger than memory: one SAE epoch streamed from a 20M-row Parquet encoding, with its peak RSS.

Writes synthetic encoded parts in the project's format (``popsteer.stages.encoded``: columns ``row``
int64 and ``x`` fixed_size_list<float32>[d], one row group per write as the local encoder writes,
published with a manifest), streaming the write too (one row group of 65,536 rows in memory at a
time): a ``train`` part of ``--rows`` rows (default 20M, d=64: 5.1 GB as fp32) and a ``valid`` part
of 20,000 rows, from a rank-16 signal plus noise. Then, each in its own subprocess (so its peak RSS is
its own), one SAE epoch (K=32, s=64 -> 4,096 latents, batch 4096, sparse decode) with ``ParquetRows`` (default
buffer, 2^20 rows) over the big part, and as a baseline on a ``--small-rows`` part (default 2M):
the in-memory path (``Encodings.read`` + ``fit_sae`` over the tensor, what the stage did before)
and the streamed one, so the ratio is measured in the same run. The folder is deleted afterwards.

    nice .venv/bin/python bench/sae_stream.py [--rows 20000000] [--small-rows 2000000] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

D, RANK, GROUP_ROWS, VALID_ROWS = 64, 16, 65_536, 20_000


def write_part(folder: Path, part, rows: int, seed: int) -> float:
    """A synthetic encoded part of ``rows`` rows written one row group at a time; returns its size in GB."""
    from popsteer.stages.encoded import FORMAT, Encodings, fixed_list

    basis = torch.randn(RANK, D, generator=torch.Generator().manual_seed(0))  # (R, d), shared by every part
    staged = folder / f".staging-{part.name}"
    staged.mkdir(parents=True)
    writer = None
    for s in range(0, rows, GROUP_ROWS):
        n = min(GROUP_ROWS, rows - s)
        g = torch.Generator().manual_seed(seed * 1_000_003 + s)
        x = torch.randn(n, RANK, generator=g) @ basis + 0.1 * torch.randn(n, D, generator=g) + 0.5  # (n, d)
        table = pa.table({"row": pa.array(np.arange(s, s + n, dtype=np.int64)), "x": fixed_list(x.numpy())})
        if writer is None:
            writer = pq.ParquetWriter(staged / "part-0.parquet", table.schema)
        writer.write_table(table)
    writer.close()
    size = (staged / "part-0.parquet").stat().st_size / 1e9
    Encodings(folder).publish(staged, part, {"format": FORMAT, "checkpoint_sha256": "synthetic",
                                             "inputs_sha256": f"synthetic-{rows}-{seed}", "rows": rows, "d": D,
                                             "part": part.name})
    return size


def one_run(mode: str, folder: str, buffer_rows: int) -> dict:
    """One SAE epoch on the encoding in ``folder``: ``stream`` (ParquetRows), ``memory`` (read whole) or ``read``
    (the streamed epoch's batches only, no training: the reader's own cost)."""
    from popsteer.sae.model import SAEConfig
    from popsteer.sae.stream import ParquetRows
    from popsteer.sae.train import fit_sae
    from popsteer.stages.encoded import Encodings, Part

    store, train = Encodings(folder), Part("train", stride=10)
    cfg = SAEConfig(k=32, scale=64, batch_size=4096, max_epochs=1, min_epochs=1, stream_buffer_rows=buffer_rows,
                    decode="sparse")  # the same result as dense, ~1.5x faster on CPU (sae_throughput.py), same RSS
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t0 = time.perf_counter()
    x_valid = torch.from_numpy(store.read("valid"))  # (M, d), in memory on every path
    out = {"mode": mode, "buffer_rows": buffer_rows}
    if mode == "memory":
        source = torch.from_numpy(store.read(train))  # (N, d)
        out["read_seconds"] = time.perf_counter() - t0
        rows = len(source)
    else:
        files, manifest = store.files(train)
        source = ParquetRows(files, buffer_rows, rows=manifest["rows"], d=manifest["d"])
        rows = source.rows
    if mode == "read":
        t1 = time.perf_counter()
        batches = sum(1 for _ in source.batches(cfg.batch_size, torch.Generator().manual_seed(cfg.seed)))
        out.update(epoch_seconds=time.perf_counter() - t1, batches=batches)
    else:
        _, history = fit_sae(source, x_valid, cfg)
        out.update(epoch_seconds=history[0]["seconds"], train_loss=history[0]["train_loss"],
                   valid_fvu=history[0]["valid_fvu"])
    if mode != "memory":
        out.update(peak_rows_held=source.peak_rows, groups_read=source.groups_read, resident=source.resident)
    out.update(rows=rows, samples_per_s=rows / out["epoch_seconds"], import_rss_gb=rss0,
               peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
               total_seconds=time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--small-rows", type=int, default=2_000_000)
    ap.add_argument("--buffer-rows", type=int, default=1 << 20)
    ap.add_argument("--dir", default="/tmp", help="where the synthetic encodings are written (then deleted)")
    ap.add_argument("--dry-run", action="store_true", help="print the figures, record nothing")
    ap.add_argument("--one", nargs=2, metavar=("MODE", "FOLDER"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one_run(a.one[0], a.one[1], a.buffer_rows)))
        return
    from isolated import run_json
    from results import record

    from popsteer.stages.encoded import Part

    root = Path(tempfile.mkdtemp(prefix="popsteer-sae-stream-", dir=a.dir))
    try:
        sizes, runs = {}, {}
        for name, rows in (("small", a.small_rows), ("big", a.rows)):
            t0 = time.perf_counter()
            sizes[name] = write_part(root / name, Part("train", stride=10), rows, seed=1)
            write_part(root / name, Part("valid"), VALID_ROWS, seed=2)
            print(f"wrote {rows:,} rows ({sizes[name]:.2f} GB) in {time.perf_counter() - t0:.0f} s", flush=True)
        for key, mode, name in (("small_memory", "memory", "small"), ("small_stream", "stream", "small"),
                                ("small_read", "read", "small"), ("big_stream", "stream", "big")):
            runs[key] = run_json(__file__, "--one", mode, root / name, "--buffer-rows", a.buffer_rows)
            print(json.dumps({key: runs[key]}), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    big, mem, small, read = runs["big_stream"], runs["small_memory"], runs["small_stream"], runs["small_read"]
    if a.dry_run:
        return
    cmd = f"nice .venv/bin/python bench/sae_stream.py --rows {a.rows} --small-rows {a.small_rows}"
    record("sae_stream_peak_rss_gb", round(big["peak_rss_gb"], 2), "GB",
           "<= 2 (one SAE epoch on 20M rows, d=64, K=32, s=64, batch 4096, streamed from Parquet)",
           big["peak_rss_gb"] <= 2 and big["rows"] >= 20_000_000, cmd,
           f"{big['rows']:,} rows ({sizes['big']:.1f} GB file), buffer {a.buffer_rows:,} rows: epoch "
           f"{big['epoch_seconds'] / 60:.1f} min, {big['samples_per_s']:,.0f} samples/s, at most "
           f"{big['peak_rows_held']:,} rows held; same run, {small['rows']:,} rows: in memory "
           f"{mem['peak_rss_gb']:.2f} GB ({mem['samples_per_s']:,.0f} samples/s, read {mem['read_seconds']:.0f} s) "
           f"vs streamed {small['peak_rss_gb']:.2f} GB ({small['samples_per_s']:,.0f} samples/s; the reader alone "
           f"{read['samples_per_s']:,.0f} rows/s); sparse decode; ru_maxrss in GiB")


if __name__ == "__main__":
    main()
