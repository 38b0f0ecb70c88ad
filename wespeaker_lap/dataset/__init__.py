"""Data: Kaldi data dirs, raw/shard lists, and the streaming training / extraction pipeline.

Public entry points (see each module for details):

* :mod:`~wespeaker_lap.dataset.datadir`: ``read_data_dir``, ``write_data_dir``,
  ``validate_data_dir``, ``fix_data_dir``
* :mod:`~wespeaker_lap.dataset.lists`: ``write_raw_list``, ``read_raw_list``,
  ``make_shard_list``, ``read_shard_list``, noise/RIR lists, ``make_spk2id``
* :mod:`~wespeaker_lap.dataset.dataset`: ``build_train_loader``,
  ``build_eval_loader`` (:class:`TrainDataset`, :class:`EvalDataset`)
* :mod:`~wespeaker_lap.dataset.schema`: ``parse_dataset_args``, ``parse_dataloader_args``
"""

from wespeaker_lap.dataset.datadir import (
    DataDir,
    fix_data_dir,
    read_data_dir,
    validate_data_dir,
    write_data_dir,
)
from wespeaker_lap.dataset.dataset import (
    EvalDataset,
    SpeakerDataLoader,
    TrainDataset,
    build_eval_dataset,
    build_eval_loader,
    build_train_dataset,
    build_train_loader,
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
from wespeaker_lap.dataset.schema import (
    DATASET_ARGS_KEYS,
    DataLoaderConfig,
    DatasetConfig,
    parse_dataloader_args,
    parse_dataset_args,
)

__all__ = [
    "DATASET_ARGS_KEYS",
    "DataDir",
    "DatasetConfig",
    "SpeakerDataLoader",
    "EvalDataset",
    "TrainDataset",
    "DataLoaderConfig",
    "parse_dataloader_args",
    "build_eval_dataset",
    "build_eval_loader",
    "build_train_dataset",
    "build_train_loader",
    "fix_data_dir",
    "make_shard_list",
    "make_spk2id",
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
