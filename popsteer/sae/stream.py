"""The SAE's training rows, per epoch, as batches: held in memory or streamed from Parquet with bounded memory.

``fit_sae`` (``popsteer.sae.train``) draws every epoch's batches from a *row source*, with the
trainer's generator ``gen`` (seeded by ``SAEConfig.seed``, one stream over all epochs):

- ``TensorRows(x)``: x (N, d) in memory. Per epoch one ``torch.randperm(N, generator=gen)``,
  split into ceil(N / B) near-equal batches (``torch.tensor_split``): the trainer's original path.
- ``ParquetRows(files, buffer_rows)``: rows 0..N-1 of Parquet files with the encoded store's columns
  ``row`` (int64) and ``x`` (fixed_size_list<float32>[d]) (``popsteer.stages.encoded``), read with
  pyarrow only.

  * N <= buffer_rows: read once in row order and held, then exactly ``TensorRows`` (same
    generator draws, same batches, the same results bit for bit).
  * N > buffer_rows: streamed. The rows are cut into logical blocks of buffer_rows / 4 rows by row
    number (not by file or row group, so the order is the same for files of any writer: the local
    encoder's one file or Ray Data's many). Each epoch draws a permutation of the blocks, fills a
    window of 4 blocks (one preallocated (buffer_rows, d) array, reused) in that order, draws a
    permutation of the window's rows and cuts it into the epoch's batches; the rows left over
    (fewer than a batch) carry into the next window. The batches have ``TensorRows``' sizes, so
    with ``shuffle=False`` both yield the same batches in row order (the same loss curve).

Memory held while streaming: the window (buffer_rows, d), the carry (< B rows), one batch and the
row group being read (as written: ~82k rows per 8,192-window block of the local encoder).
``peak_rows`` records the most rows held in window + carry (<= buffer_rows + B).

Why not Ray Data's ``iter_torch_batches(local_shuffle_buffer_size=...)``: its order follows the
completion order of its read tasks unless ordered, and it needs a Ray Data executor inside the
trial; this reader's order depends on the seed, buffer_rows and N only, without Ray.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import Tensor

from popsteer.errors import PopSteerError

log = logging.getLogger(__name__)

BLOCKS_PER_WINDOW = 4
"""Logical blocks per streamed window: each window mixes rows of this many random places in the part."""


def batch_sizes(n_rows: int, batch_size: int) -> list[int]:
    """The sizes of ``torch.tensor_split`` into ceil(n_rows / batch_size) near-equal batches (none of 1 row)."""
    m = math.ceil(n_rows / batch_size)
    q, r = divmod(n_rows, m)
    return [q + 1] * r + [q] * (m - r)


def batch_indices(n_rows: int, batch_size: int, gen: torch.Generator | None,
                  device: torch.device) -> tuple[Tensor, ...]:
    """Row indices (a permutation drawn from gen; row order without one) split into ceil(n_rows / batch_size)
    near-equal batches (none of 1 row): the sizes of ``batch_sizes``."""
    order = torch.randperm(n_rows, generator=gen) if gen is not None else torch.arange(n_rows)
    return order.to(device).tensor_split(math.ceil(n_rows / batch_size))


class TensorRows:
    """Rows x (N, d) held in memory (on their device)."""

    def __init__(self, x: Tensor, shuffle: bool = True) -> None:
        self.x, self.shuffle = x, shuffle

    @property
    def rows(self) -> int:
        return self.x.shape[0]

    @property
    def d(self) -> int:
        return self.x.shape[1]

    @property
    def device(self) -> torch.device:
        return self.x.device

    def batches(self, batch_size: int, gen: torch.Generator) -> Iterator[Tensor]:
        """One epoch: (B, d) batches of a fresh permutation drawn from gen (row order when not shuffling)."""
        for idx in batch_indices(self.rows, batch_size, gen if self.shuffle else None, self.device):
            yield self.x[idx]


@dataclass(frozen=True)
class _Group:
    """One Parquet row group and the range of row numbers it holds."""

    file: Path
    index: int
    first: int
    last: int
    rows: int


def _row_range(pf: pq.ParquetFile, g: int, col: int) -> tuple[int, int]:
    """(min, max) of the row column in row group g: from its statistics, else read."""
    stats = pf.metadata.row_group(g).column(col).statistics
    if stats is not None and stats.has_min_max:
        return int(stats.min), int(stats.max)
    rows = pf.read_row_group(g, columns=["row"])["row"].to_numpy()
    return int(rows.min()), int(rows.max())


def _index(files: Sequence[Path]) -> tuple[list[_Group], int | None]:
    """The row groups of files (sorted by first row) and the width d of their x column."""
    groups, d = [], None
    for f in files:
        pf = pq.ParquetFile(f)
        schema = pf.schema_arrow
        if "row" not in schema.names or "x" not in schema.names:
            raise PopSteerError(f"{f}: not an encoded part (needs columns row and x, has {schema.names})")
        width = schema.field("x").type.list_size
        if d is not None and width != d:
            raise PopSteerError(f"{f}: x has d={width}, the part's other files d={d}")
        d = width
        col = pf.metadata.schema.names.index("row")
        for g in range(pf.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if n:
                groups.append(_Group(Path(f), g, *_row_range(pf, g, col), n))
    return sorted(groups, key=lambda g: (g.first, str(g.file), g.index)), d


class ParquetRows:
    """Rows 0..N-1 of an encoded part's Parquet files, held (N <= buffer_rows) or streamed (module docstring)."""

    def __init__(self, files: Sequence[str | Path], buffer_rows: int = 1 << 20, device: str | torch.device = "cpu",
                 shuffle: bool = True, rows: int | None = None, d: int | None = None) -> None:
        if buffer_rows < 1:
            raise PopSteerError(f"the SAE's stream buffer must hold >= 1 row, got {buffer_rows}")
        self.files = [Path(f) for f in files]
        self._groups, width = _index(self.files)
        self.rows = sum(g.rows for g in self._groups)
        self.d = width if width is not None else (d or 0)
        if rows is not None and rows != self.rows:
            raise PopSteerError(f"{self.files[0].parent if self.files else 'encoded part'}: "
                                f"{self.rows} rows in its files, its manifest says {rows}")
        if d is not None and width is not None and d != width:
            raise PopSteerError(f"encoded part has d={width}, expected {d}")
        self.device, self.shuffle, self.buffer_rows = torch.device(device), shuffle, buffer_rows
        self.blocks_per_window = min(BLOCKS_PER_WINDOW, buffer_rows)
        self.block_rows = buffer_rows // self.blocks_per_window
        self.resident = self.rows <= buffer_rows
        self.peak_rows = 0
        """The most rows held at once (resident: N; streamed: window + carry)."""
        self.groups_read = 0
        """Row groups read so far (a group spanning two blocks is read for each)."""
        self._held: Tensor | None = None  # (N, d) when resident
        self._window: np.ndarray | None = None  # (blocks_per_window * block_rows, d) when streamed

    def batches(self, batch_size: int, gen: torch.Generator) -> Iterator[Tensor]:
        """One epoch's (B, d) batches on self.device, drawn with gen."""
        if self.resident:
            if self._held is None:
                x = np.empty((self.rows, self.d), np.float32)  # (N, d)
                self._fill(x, 0, self.rows, 0)
                self._held = torch.from_numpy(x).to(self.device)
                self.peak_rows = self.rows
                log.info("SAE inputs: %s training rows held in memory (stream buffer %s rows)",
                         f"{self.rows:,}", f"{self.buffer_rows:,}")
            yield from TensorRows(self._held, self.shuffle).batches(batch_size, gen)
            return
        yield from self._streamed(batch_size, gen)

    def _streamed(self, batch_size: int, gen: torch.Generator) -> Iterator[Tensor]:
        n, per = self.rows, self.blocks_per_window
        n_blocks = math.ceil(n / self.block_rows)
        blocks = (torch.randperm(n_blocks, generator=gen) if self.shuffle else torch.arange(n_blocks)).tolist()
        if self._window is None:
            self._window = np.empty((per * self.block_rows, self.d), np.float32)  # (W, d), reused every window
            log.info("SAE inputs: streaming %s training rows from %d files in windows of %s rows",
                     f"{n:,}", len(self.files), f"{len(self._window):,}")
        sizes = iter(batch_sizes(n, batch_size))
        need = next(sizes, None)
        carry = torch.empty(0, self.d, dtype=torch.float32)  # (C, d), C < need: rows of earlier windows not yet batched
        for w in range(0, n_blocks, per):
            m = 0
            for b in blocks[w : w + per]:
                lo, hi = b * self.block_rows, min((b + 1) * self.block_rows, n)
                self._fill(self._window, lo, hi, m)
                m += hi - lo
            rows = torch.from_numpy(self._window[:m])  # (m, d), a view of the window
            order = torch.randperm(m, generator=gen) if self.shuffle else torch.arange(m)
            self.peak_rows = max(self.peak_rows, m + len(carry))
            pos = 0
            while need is not None and pos + need - len(carry) <= m:
                take = order[pos : pos + need - len(carry)]
                pos += len(take)
                batch = rows[take] if not len(carry) else torch.cat([carry, rows[take]])  # (need, d), a copy
                carry = carry[:0]
                yield batch.to(self.device)
                need = next(sizes, None)
            carry = torch.cat([carry, rows[order[pos:]]])  # copied out before the window is refilled
        if need is not None or len(carry):
            raise PopSteerError(f"SAE stream ended with {len(carry)} rows not batched (internal error)")

    def _fill(self, out: np.ndarray, lo: int, hi: int, offset: int) -> None:
        """Rows lo..hi-1 into out[offset : offset + hi - lo], in row order, from the groups that hold them."""
        filled = np.zeros(hi - lo, dtype=bool)
        found = 0
        for g in self._groups:
            if g.first >= hi or g.last < lo:
                continue
            table = pq.ParquetFile(g.file).read_row_group(g.index, columns=["row", "x"])
            self.groups_read += 1
            row = table["row"].to_numpy()  # (G,)
            keep = (row >= lo) & (row < hi)
            at = row[keep] - lo
            x = table["x"].combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, self.d)  # (G, d)
            out[offset + at] = x if len(at) == len(row) else x[keep]
            filled[at] = True
            found += len(at)
        if found != hi - lo or not filled.all():
            raise PopSteerError(f"{self.files[0].parent}: rows {lo}..{hi - 1} are not each stored once "
                                f"({found} found, {int(filled.sum())} distinct)")
