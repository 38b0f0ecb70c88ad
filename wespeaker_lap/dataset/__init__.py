"""Data: Kaldi data dirs, raw/shard lists, and the streaming training / extraction pipeline.

Public entry points (see each module for details):

* :mod:`~wespeaker_lap.dataset.datadir`: ``read_data_dir``, ``write_data_dir``,
  ``validate_data_dir``, ``fix_data_dir``
* :mod:`~wespeaker_lap.dataset.lists`: ``write_raw_list``, ``read_raw_list``,
  ``make_shard_list``, ``read_shard_list``, noise/RIR lists, ``make_spk2id``
* :mod:`~wespeaker_lap.dataset.dataset`: ``build_train_loader``,
  ``build_eval_loader``, ``parse_dataset_args``, ``num_classes``
"""

from wespeaker_lap.dataset.datadir import (
    DataDir,
    fix_data_dir,
    read_data_dir,
    validate_data_dir,
    write_data_dir,
)
from wespeaker_lap.dataset.dataset import (
    DATASET_ARGS_KEYS,
    DatasetConfig,
    SpeakerDataLoader,
    SpeakerDataset,
    build_eval_dataset,
    build_eval_loader,
    build_train_dataset,
    build_train_loader,
    num_classes,
    parse_dataset_args,
)
from wespeaker_lap.dataset.lists import (
    make_shard_list,
    make_spk2id,
    raw_entries_from_data_dir,
    read_raw_list,
    read_shard_list,
    read_source_lists,
    read_spk2id,
    write_raw_list,
    write_spk2id,
)

__all__ = [
    "DATASET_ARGS_KEYS",
    "DataDir",
    "DatasetConfig",
    "SpeakerDataLoader",
    "SpeakerDataset",
    "build_eval_dataset",
    "build_eval_loader",
    "build_train_dataset",
    "build_train_loader",
    "fix_data_dir",
    "make_shard_list",
    "make_spk2id",
    "num_classes",
    "parse_dataset_args",
    "raw_entries_from_data_dir",
    "read_data_dir",
    "read_raw_list",
    "read_shard_list",
    "read_source_lists",
    "read_spk2id",
    "validate_data_dir",
    "write_data_dir",
    "write_raw_list",
    "write_spk2id",
]
