"""Data: RecBole atomic files to per-user time-ordered sequences and their leave-one-out splits."""

from popsteer.data.config import DataConfig
from popsteer.data.inter import EMBEDDED, embedded_data_dir, find_inter_file, read_atomic_inter
from popsteer.data.sequences import SequenceData, build_sequences, check_catalog, load_dataset

__all__ = ["DataConfig", "EMBEDDED", "SequenceData", "build_sequences", "check_catalog", "embedded_data_dir", "find_inter_file", "load_dataset",
           "read_atomic_inter"]
