"""Sequential-recommendation data: RecBole atomic files -> per-user time-ordered sequences.

Replicates what RecBole 1.2's ``SequentialDataset`` does for SASRec with
``eval_args: {split: {LS: valid_and_test}, order: TO, mode: full}`` (checked against
RecBole itself in ``tests/test_data.py``):

1. load ``user_id``, ``item_id``, ``timestamp`` from ``<name>.inter`` (TAB separated,
   typed header ``field:type``; ``.inter.gz`` accepted);
2. iterative k-core filter on users and items (``[5, inf)`` by default);
3. remap tokens to ids in order of first appearance in the filtered file; item 0 and
   user 0 are padding;
4. order each user's rows by the timestamp RecBole sorts on: min-max normalised and cast
   to float32 (RecBole's ``normalize_all``), stable, ties kept in file order;
5. leave-one-out: the last item is the test target, the one before the validation
   target, every earlier item (but the first) a training target.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from popsteer.data.config import DataConfig
from popsteer.data.inter import PAD_TOKEN, find_inter_file, read_atomic_inter
from popsteer.errors import PopSteerError

log = logging.getLogger(__name__)


def kcore(frame: pd.DataFrame, k_user: int, k_item: int) -> pd.DataFrame:
    """Iteratively drop users with < k_user rows and items with < k_item rows (RecBole's order)."""
    while True:
        user_n = frame["user"].map(frame["user"].value_counts())
        item_n = frame["item"].map(frame["item"].value_counts())
        drop = (user_n < k_user) | (item_n < k_item)
        if not drop.any():
            return frame
        frame = frame[~drop.to_numpy()]


@dataclass
class SequenceData:
    """Per-user time-ordered item sequences of one dataset.

    Items are ids 1..n_items-1 (0 is padding). User u (0-based) owns
    ``items[offsets[u]:offsets[u+1]]``.
    """

    name: str
    items: np.ndarray  # (total,) int64, users concatenated, each in time order
    offsets: np.ndarray  # (n_users + 1,) int64
    item_tokens: np.ndarray  # (n_items,) str; [0] is the padding token
    user_tokens: np.ndarray  # (n_users,) str
    max_len: int = 50
    source: str = ""
    config: DataConfig = field(default_factory=DataConfig)
    """How it was read and filtered (recorded in the checkpoints trained on it)."""
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_items(self) -> int:
        """Number of item ids including padding item 0 (RecBole's ``dataset.item_num``)."""
        return len(self.item_tokens)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def split(self, which: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Histories and targets of the ``valid`` or ``test`` split.

        Returns ``(item_seq (U, max_len) int64 right-padded, seq_len (U,), target (U,))``;
        the history is the last ``max_len`` items before the target.
        """
        if which not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {which!r}")
        if which not in self._cache:
            back = 2 if which == "valid" else 1
            ends = self.offsets[1:] - back  # index of the target
            starts = np.maximum(self.offsets[:-1], ends - self.max_len)
            seq = _gather_windows(self.items, starts, ends, self.max_len)
            self._cache[which] = (seq, (ends - starts).astype(np.int64), self.items[ends].astype(np.int64))
        return self._cache[which]

    def history_csr(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        """Each user's items before the split's target, the target itself left out: what RecBole's
        full ranking masks for a general model (its sampler's used ids minus the positive item).

        Returns CSR ``(indptr (U+1,) int64, items int64)``, users in order.
        """
        key = f"history_{which}"
        if key not in self._cache:
            back = 2 if which == "valid" else 1
            ends = self.offsets[1:] - back  # (U,) index of the target
            target = self.items[ends]
            owner = np.repeat(np.arange(self.n_users), np.diff(self.offsets))
            pos = np.arange(len(self.items))
            keep = (pos < ends[owner]) & (self.items != target[owner])
            lens = np.bincount(owner[keep], minlength=self.n_users)
            self._cache[key] = (np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                                self.items[keep].astype(np.int64))
        return self._cache[key]

    def train_item_counts(self) -> np.ndarray:
        """Per-item count over every training interaction (a general model's RecBole ``item_counter``:
        its training set is the interactions themselves, first items included), shape (n_items,)."""
        return self._train_counts("all_counts", first_items=True)

    def train_target_counts(self) -> np.ndarray:
        """Per-item count as a training target (RecBole's train ``item_counter``), shape (n_items,)."""
        return self._train_counts("counts", first_items=False)

    def _train_counts(self, key: str, first_items: bool) -> np.ndarray:
        """Per-item count over the training part (valid and test targets out; first items only if asked)."""
        if key not in self._cache:
            mask = np.ones(len(self.items), dtype=bool)
            if not first_items:
                mask[self.offsets[:-1]] = False  # first item is never a target
            mask[self.offsets[1:] - 1] = False  # test target
            mask[self.offsets[1:] - 2] = False  # valid target
            self._cache[key] = np.bincount(self.items[mask], minlength=self.n_items).astype(np.int64)
        return self._cache[key]

    def train_prefix_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every training (prefix, target) pair exactly as RecBole's augmentation builds it.

        Returns ``(item_seq (P, max_len), seq_len (P,), target (P,))``.
        """
        starts_u = self.offsets[:-1]
        ends_u = self.offsets[1:] - 2  # exclusive: valid and test targets are not training targets
        tgt = np.concatenate([np.arange(s + 1, e) for s, e in zip(starts_u, ends_u)])
        owner_start = np.repeat(starts_u, np.maximum(ends_u - starts_u - 1, 0))
        starts = np.maximum(owner_start, tgt - self.max_len)
        seq = _gather_windows(self.items, starts, tgt, self.max_len)
        return seq, (tgt - starts).astype(np.int64), self.items[tgt].astype(np.int64)

    def train_windows(self, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """All-position training windows over each user's training sequence.

        A user's training part ``s[0 : n-2]`` gives inputs ``s[t]`` and targets ``s[t+1]``.
        Windows of ``max_len`` inputs start every ``stride`` positions (default ``max_len // 2``)
        until the end is covered; each target is taken once, from the first window in which it
        sits at least ``max_len - stride`` positions in (so it sees that much context), and
        targets of the first window always count. Early pairs of long sequences are kept.

        Returns ``(inputs (W, max_len), targets (W, max_len))``, int64, 0 = padding / no loss.
        """
        L = self.max_len
        users, starts = self._window_starts(stride)
        user_end = (self.offsets[1:] - 2)[users]  # exclusive end of the training part
        n_avail = np.minimum(user_end - 1 - starts, L)  # inputs in this window
        pos = np.arange(L)[None, :]
        valid = pos < n_avail[:, None]
        idx = np.where(valid, starts[:, None] + pos, 0)
        inputs = np.where(valid, self.items[idx], 0)
        targets = np.where(valid, self.items[idx + 1], 0)
        # each target once: a later window of the same user skips what the previous one covered
        same_user = np.r_[False, users[1:] == users[:-1]]
        prev_end = np.r_[0, starts[:-1] + n_avail[:-1]]
        take_from = np.where(same_user, prev_end - starts, 0)
        targets = np.where(pos >= take_from[:, None], targets, 0)
        return inputs.astype(np.int64), targets.astype(np.int64)

    def train_window_users(self, stride: int | None = None) -> np.ndarray:
        """(W,) user index of each window of ``train_windows(stride)``, non-decreasing."""
        return self._window_starts(stride)[0]

    def _window_starts(self, stride: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(W,) user index and (W,) start offset into ``items`` of every training window."""
        L = self.max_len
        stride = stride or max(1, L // 2)
        if not 1 <= stride <= L:
            raise ValueError(f"stride must be in [1, {L}], got {stride}")
        # user u has n_in (input, target) positions; its windows start at min(k * stride, n_in - L)
        # for k = 0 .. ceil((n_in - L) / stride) (one window when n_in <= L, none when n_in <= 0)
        first, n_in = self.offsets[:-1], self.offsets[1:] - 2 - self.offsets[:-1] - 1  # (U,)
        over = np.maximum(n_in - L, 0)
        count = np.where(n_in > 0, -(-over // stride) + 1, 0)  # (U,) windows per user
        users = np.repeat(np.arange(len(n_in)), count)  # (W,)
        k = np.arange(len(users)) - np.repeat(np.cumsum(count) - count, count)  # (W,) window number within its user
        starts = first[users] + np.minimum(k * stride, over[users])
        return users.astype(np.int64), starts.astype(np.int64)


def _gather_windows(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_len: int) -> np.ndarray:
    """Rows ``items[starts[i]:ends[i]]`` left-aligned and right-padded with 0 to ``max_len``."""
    pos = np.arange(max_len)[None, :]
    lengths = (ends - starts)[:, None]
    idx = np.where(pos < lengths, starts[:, None] + pos, 0)
    return np.where(pos < lengths, items[idx], 0).astype(np.int64)


def build_sequences(frame: pd.DataFrame, name: str, max_len: int = 50, cfg: DataConfig | None = None,
                    source: str = "") -> SequenceData:
    """Filter, remap and order an interaction frame (columns user, item, timestamp)."""
    cfg = cfg or DataConfig()
    k_user, k_item = cfg.k_user, cfg.k_item
    frame = kcore(frame, k_user, k_item)
    if len(frame) == 0:
        core = f"{k_user}-core" if k_user == k_item else f"({k_user}, {k_item})-core"
        raise PopSteerError(f"dataset '{name}' is empty after {core} filtering")
    user_codes, user_tokens = pd.factorize(frame["user"], sort=False)
    item_codes, item_tokens = pd.factorize(frame["item"], sort=False)
    ts = frame["timestamp"].to_numpy(dtype=np.float64)
    mx, mn = ts.max(), ts.min()
    key = ((ts - mn) / (mx - mn)).astype(np.float32) if mx != mn else np.ones_like(ts, dtype=np.float32)
    order = np.lexsort((key, user_codes))  # stable: ties keep file order
    items = (item_codes[order] + 1).astype(np.int64)
    counts = np.bincount(user_codes, minlength=len(user_tokens))
    if counts.min() < 3:
        raise PopSteerError(f"dataset '{name}': every user needs >= 3 interactions for leave-one-out")
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)
    item_tok = np.concatenate([[PAD_TOKEN], np.asarray(item_tokens, dtype=object)]).astype(str)
    return SequenceData(name=name, items=items, offsets=offsets, item_tokens=item_tok,
                        user_tokens=np.asarray(user_tokens, dtype=object).astype(str), max_len=max_len, source=source,
                        config=cfg)


TOP_K = 10
"""The length of every ranked list PopSteer scores (NDCG@10, Gini@10, ...)."""


def check_catalog(data: SequenceData, k: int = TOP_K) -> SequenceData:
    """Refuse a dataset whose catalog cannot fill a top-k list (the metrics rank k items per user)."""
    n = data.n_items - 1
    if n <= k:
        raise PopSteerError(f"dataset '{data.name}' has {n} items after filtering ({data.source or 'its file'}): "
                            f"the catalog must have more items than k={k}")
    return data


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, max_len: int = 50,
                 cfg: DataConfig | None = None) -> SequenceData:
    """Load a dataset by name from ``data_dir`` (ml-100k falls back to the embedded copy)."""
    cfg = cfg or DataConfig()
    path = find_inter_file(name, data_dir)
    frame = read_atomic_inter(path, cfg)
    data = build_sequences(frame, name, max_len=max_len, cfg=cfg, source=str(path))
    log.info("loaded %s from %s: %d users, %d items, %d interactions", name, path, data.n_users, data.n_items - 1, len(data.items))
    return data
