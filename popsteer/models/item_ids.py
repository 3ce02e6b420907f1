"""Which of the authors' RecBole item ids is which of ours: their reference files and the id mapping.

RecBole numbers items in order of first appearance in the ``.inter`` file it loaded; ours follow
our own data file (see ``popsteer.models.importer`` for the order in which sources are tried)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from popsteer.data import SequenceData, find_inter_file, read_atomic_inter
from popsteer.errors import PopSteerError
from popsteer.util.env import env_text
from popsteer.util.safepaths import REPO_ROOT

log = logging.getLogger(__name__)

LABELS_FILE = "popsteer_item_popularity_labels_with_titles.csv"
LABELS_ONLY = {"interaction_count", "pop_score", "popularity_label"}
MAX_UNMATCHED_SHARE = 0.5  # more of our items unmatched than this: surely the wrong dataset or files


# ------------------------------------------------------------------ where the reference files are


def shared_datasets_dir() -> Path:
    """``$POPSTEER_SHARED_DATASETS``, else ``shared/datasets`` beside the repository."""
    env = env_text("POPSTEER_SHARED_DATASETS")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "datasets"


def default_reference_dir(dataset: str, data_dir: Path | None) -> Path:
    """``reference/`` beside the dataset file (or its symlink target), else the shared one."""
    inter = find_inter_file(dataset, data_dir)
    candidates = [inter.parent / "reference", inter.resolve().parent / "reference",
                  shared_datasets_dir() / dataset / "reference"]
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise PopSteerError(f"no reference folder with the authors' item files for '{dataset}' "
                        f"(looked in {', '.join(map(str, dict.fromkeys(candidates)))}); pass --reference-dir")


def _first_existing(paths: list[Path]) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


# ------------------------------------------------------------------ the id mapping


def map_item_ids(data: SequenceData, ref: Path, theirs_n: int) -> tuple[np.ndarray, dict]:
    """Their internal id of each of our ids.

    Args:
        theirs_n: rows of their item embedding (their item count including padding 0).
    Returns:
        ``(their_of_ours (n_items,) int64, mapping metadata)``; ``their_of_ours[0] = 0`` and
        -1 marks our items they do not have.
    """
    ref = Path(ref)
    if not ref.is_dir():
        raise PopSteerError(f"reference folder {ref} not found")
    ds = data.name
    inter = _first_existing([ref / f"{stem}{sfx}" for stem in (ds, f"popsteer_{ds}") for sfx in (".inter", ".inter.gz")])
    labels = _read_labels(ref / LABELS_FILE) if (ref / LABELS_FILE).is_file() else None
    matched_by: dict = {}
    if inter is not None:
        their_tokens = tokens_from_inter(inter)
        method = f"first appearance in {inter}"
    elif labels is not None:
        item_file = _first_existing([ref / f"popsteer_{ds}.item", ref / f"{ds}.item"]
                                    + [Path(data.source).parent / f"{ds}.item",
                                       Path(data.source).resolve().parent / f"{ds}.item"])
        if item_file is None:
            raise PopSteerError(f"{ref}: found {LABELS_FILE} but no item file (popsteer_{ds}.item or {ds}.item) "
                                "to tie their ids to item tokens")
        their_tokens, matched_by = tokens_from_labels(labels, _read_table(item_file, "\t"), data)
        method = f"labels {ref / LABELS_FILE} joined with {item_file}"
    else:
        raise PopSteerError(f"{ref} holds neither the authors' {ds}.inter nor {LABELS_FILE}: "
                            "cannot map their item ids to ours")
    if len(their_tokens) != theirs_n:
        raise PopSteerError(f"their item embedding has {theirs_n} rows but {method} gives "
                            f"{len(their_tokens)} ids (incl. padding): wrong reference files?")

    their_id = {tok: i for i, tok in enumerate(their_tokens) if i > 0 and tok is not None}
    their_of_ours = np.array([0] + [their_id.get(t, -1) for t in data.item_tokens[1:]], dtype=np.int64)
    unmatched_ours = int((their_of_ours[1:] < 0).sum())
    unmatched_theirs = int(theirs_n - 1 - (their_of_ours[1:] >= 0).sum())
    if unmatched_ours > MAX_UNMATCHED_SHARE * (data.n_items - 1):
        raise PopSteerError(f"only {data.n_items - 1 - unmatched_ours} of our {data.n_items - 1} '{ds}' items "
                            f"match the checkpoint's items ({method}): wrong dataset or reference files?")
    if unmatched_ours:
        log.warning("%d of our items are not in the checkpoint: their embedding rows are zero", unmatched_ours)
    if unmatched_theirs:
        log.warning("%d of the checkpoint's items are not in our data: dropped", unmatched_theirs)
    mapping = {
        "method": method, "matched": int((their_of_ours[1:] >= 0).sum()),
        "unmatched_ours": unmatched_ours, "unmatched_theirs": unmatched_theirs,
        "identity": bool(np.array_equal(their_of_ours, np.arange(data.n_items))),
    }
    if matched_by:
        mapping["matched_by"] = matched_by
    if labels is not None:
        mapping["count_check"] = count_check(labels, their_of_ours, data)
    return their_of_ours, mapping


def permute_rows(weight: torch.Tensor, their_of_ours: np.ndarray) -> torch.Tensor:
    """Row ``i`` of the result is their row ``their_of_ours[i]``; rows marked -1 are zero."""
    idx = torch.as_tensor(their_of_ours)
    out = weight.new_zeros((len(idx), weight.shape[1]))  # (n_items, d)
    have = idx >= 0
    out[have] = weight[idx[have]]
    return out


def tokens_from_inter(path: Path) -> list[str | None]:
    """RecBole's item ids of an ``.inter`` file: ``[None, first item, second new item, ...]``.

    The authors' files are already filtered (their configs set no k-core), so no filter here.
    """
    return [None] + pd.unique(read_atomic_inter(path)["item"]).tolist()


def _read_table(path: Path, sep: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, quoting=3 if sep == "\t" else 0,
                            encoding="utf-8", encoding_errors="replace")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise PopSteerError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    frame.columns = [c.split(":")[0] for c in frame.columns]
    if "item_id" not in frame.columns:
        raise PopSteerError(f"{path}: no item_id column (got {list(frame.columns)})")
    return frame


def _read_labels(path: Path) -> pd.DataFrame:
    """Their labels: ``item_id`` is their internal id (1..n), with ``interaction_count``."""
    labels = _read_table(path, ",")
    ids = pd.to_numeric(labels["item_id"], errors="coerce")
    if ids.isna().any() or "interaction_count" not in labels.columns:
        raise PopSteerError(f"{path}: expected integer internal ids in item_id and an interaction_count column")
    labels["item_id"] = ids.astype(np.int64)
    labels["interaction_count"] = pd.to_numeric(labels["interaction_count"], errors="coerce").fillna(-1).astype(np.int64)
    if sorted(labels["item_id"]) != list(range(1, len(labels) + 1)):
        raise PopSteerError(f"{path}: item_id is not the internal ids 1..{len(labels)}")
    return labels


def fix_mojibake(text: str) -> str:
    """Undo UTF-8 read as latin-1 (``'AimÃ©e'`` -> ``'Aimée'``); other text is returned as is."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def match_key(text: str) -> str:
    """A value as compared across files: mojibake repaired, double quotes dropped, stripped.

    Quotes go because the item files keep CSV quoting inside TAB-separated fields (a name
    with a quote is wrapped in quotes, inner quotes doubled) while the labels CSV has it decoded.
    """
    return fix_mojibake(text).replace('"', "").strip()


def _keys(frame: pd.DataFrame, cols: list[str]) -> dict[tuple, list]:
    """Row labels of ``frame`` grouped by their ``match_key`` values in ``cols``."""
    groups: dict[tuple, list] = {}
    values = zip(*(frame[c].map(match_key) for c in cols))
    for index, key in zip(frame.index, values):
        groups.setdefault(key, []).append(index)
    return groups


def tokens_from_labels(labels: pd.DataFrame, items: pd.DataFrame, data: SequenceData) -> tuple[list[str | None], dict]:
    """Their id -> item token, by joining labels and item file on their common descriptive columns.

    Keys are tried from all common columns down to the first one alone (title / name); several
    candidates under one key are paired in order of training-target count (theirs vs ours).
    Returns ``([None, token of their id 1, ...], {key columns: items matched with them})``.
    """
    common = [c for c in labels.columns if c in items.columns and c != "item_id" and c not in LABELS_ONLY]
    if not common:
        raise PopSteerError(f"the labels and the item file share no descriptive column "
                            f"(labels: {list(labels.columns)}, items: {list(items.columns)})")
    ours = {t: i for i, t in enumerate(data.item_tokens)}
    our_counts = data.train_target_counts()
    item_count = {ix: (our_counts[ours[t]] if t in ours else -1) for ix, t in items["item_id"].items()}
    their_count = labels["interaction_count"].to_dict()
    tokens: list[str | None] = [None] * (len(labels) + 1)
    left_l, left_i, matched_by = labels, items, {}
    for cols in dict.fromkeys(tuple(common[:n]) for n in range(len(common), 0, -1)):
        by_key_i = _keys(left_i, list(cols))
        taken_l, taken_i = [], []
        for key, l_rows in _keys(left_l, list(cols)).items():
            i_rows = by_key_i.get(key)
            if not i_rows:
                continue
            if len(l_rows) > 1 or len(i_rows) > 1:
                log.info("%s is shared by %d of their and %d item-file items: paired by count",
                         key, len(l_rows), len(i_rows))
            l_rows = sorted(l_rows, key=lambda r: -their_count[r])
            i_rows = sorted(i_rows, key=lambda r: -item_count[r])
            for lr, ir in zip(l_rows, i_rows):
                tokens[labels.at[lr, "item_id"]] = items.at[ir, "item_id"]
                taken_l.append(lr)
                taken_i.append(ir)
        matched_by["+".join(cols)] = len(taken_l)
        left_l, left_i = left_l.drop(index=taken_l), left_i.drop(index=taken_i)
    if len(left_l):
        log.warning("%d of their items found no match in the item file, e.g. %s",
                    len(left_l), left_l[common].head(3).values.tolist())
    return tokens, matched_by


def count_check(labels: pd.DataFrame, their_of_ours: np.ndarray, data: SequenceData) -> dict:
    """Their ``interaction_count`` vs our training-target counts over the matched items."""
    theirs = np.full(len(labels) + 1, -1, dtype=np.int64)
    theirs[labels["item_id"].to_numpy()] = labels["interaction_count"].to_numpy()
    have = np.flatnonzero(their_of_ours >= 0)[1:]
    ours, their = data.train_target_counts()[have], theirs[their_of_ours[have]]
    diff = np.abs(ours - their)
    result = {"items": int(len(have)), "exact": int((diff == 0).sum()), "sum_abs_diff": int(diff.sum()),
              "total": int(their.sum()), "max_abs_diff": int(diff.max()) if len(diff) else 0}
    if result["sum_abs_diff"] > 0.1 * max(result["total"], 1):
        log.warning("their training-target counts differ from ours by %d of %d: check the id mapping",
                    result["sum_abs_diff"], result["total"])
    return result
