"""Streaming speaker datasets for training and embedding extraction.

Training (:func:`build_train_loader`)::

    list entries --(shuffle per epoch, seeded)--> split by DDP rank, then by
    DataLoader worker --> open --> decode --> drop bad audio --> random window
    --> shuffle buffer --> resample --> label --> speed perturb --> crop
    --> augment --> batches

Evaluation (:func:`build_eval_loader`): whole utterances, no augmentation,
ordered by length (by ``dur`` when every raw-list entry has one, else within a
sort buffer) so padding stays small; the order is fixed for a given list,
rank count and worker count.

Batches are dicts: ``wavs`` (B, N) float32 at the model rate, zero-padded;
``lengths`` (B,) int64 true lengths (for masking); ``labels`` (B,) int64
(training: ``spk2id[spk] + k * len(spk2id)`` with ``k`` the speed-factor block,
see :func:`~wespeaker_lap.dataset.processor.speed_classes`; evaluation: the
speaker's id or -1); ``keys`` list[str].

Splitting. The epoch list is shuffled with ``seed`` and the epoch (the same
order on every rank), split ``[rank::world_size]`` and then
``[worker::num_workers]``, so each entry (an utterance, or a whole tar for
shard lists) goes to exactly one rank and worker. Training balances the
ranks first (``rank_balance``): ``drop`` (default) cuts the epoch list to a
multiple of ``world_size`` (at most world_size-1 entries sit out, a different
few each epoch), ``pad`` repeats the first few entries instead, ``none``
leaves the ranks up to one entry apart. Equal list shares give every rank
the same number of batches, *except* that skipped bad audio (and uneven tar
sizes with shard lists) can still leave a rank a batch short, so wrap the
training loop in ``DistributedDataParallel.join()`` (as WeSpeaker does).
Evaluation never drops or repeats.

Bad audio is skipped with a warning naming the file and counted in
:class:`~wespeaker_lap.dataset.stats.PipelineStats` (shared by all workers of
a rank); :class:`SpeakerDataLoader` logs the epoch's totals and keeps them in
``last_stats``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from wespeaker_lap.checks import ConfigError
from wespeaker_lap.dataset import processor as P
from wespeaker_lap.dataset.augment import Augmenter
from wespeaker_lap.dataset.lists import (
    check_pipes,
    compare_speakers,
    read_data_list,
    read_source_lists,
    read_spk2id,
)
from wespeaker_lap.dataset.schema import (
    DataLoaderConfig,
    DatasetConfig,
    parse_dataloader_args,
    parse_dataset_args,
)
from wespeaker_lap.dataset.stats import PipelineStats
from wespeaker_lap.io.files import read_scp

logger = logging.getLogger(__name__)

DATA_TYPES = ("raw", "shard")


# ------------------------------------------------------------------ dataset
def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """Explicit values, else torch.distributed if initialised, else $RANK/$WORLD_SIZE, else 0/1."""
    if rank is None and world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            rank = int(os.environ.get("RANK", 0))
            world_size = int(os.environ.get("WORLD_SIZE", 1))
    if rank is None or world_size is None:
        raise ValueError("give both rank and world_size, or neither")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    return int(rank), int(world_size)


class _SpeakerStream(IterableDataset):
    """What training and evaluation share: entries, the rank x worker split, counters.

    An iterable of ready batches for one rank; use with ``DataLoader(batch_size=None)``.
    Subclasses give the epoch's entry order (:meth:`epoch_entries`) and the chain
    of processing steps (:meth:`chain`). Call :meth:`set_epoch` before each epoch
    (the epoch is shared with persistent workers).
    """

    def __init__(self, entries: list[dict], data_type: str, batch_size: int,
                 rank: int | None, world_size: int | None, seed: int = 0,
                 allow_pipes: bool = False):
        super().__init__()
        if data_type not in DATA_TYPES:
            raise ValueError(f"unknown data_type {data_type!r}; valid: {list(DATA_TYPES)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not entries:
            raise ValueError("empty data list")
        if data_type == "raw":
            check_pipes(entries, allow_pipes)
        self.allow_pipes = allow_pipes
        self.entries = entries
        self.data_type = data_type
        self.batch_size = batch_size
        self.seed = seed
        self.rank, self.world_size = resolve_rank(rank, world_size)
        self.stats = PipelineStats()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's shuffle and random streams (visible to all workers)."""
        self.stats.epoch = epoch

    def epoch_entries(self, epoch: int) -> list[dict]:
        """The whole epoch's entry order (before the rank split), same on every rank."""
        raise NotImplementedError

    def chain(self, samples: Iterator[dict], rng: np.random.Generator) -> Iterator[dict]:
        """The processing steps from entries to batches."""
        raise NotImplementedError

    def batches_per_epoch(self, num_workers: int = 0, epoch: int = 0) -> int | None:
        """Batches this rank yields in an epoch, when known in advance (else None)."""
        return None

    def rank_entries(self, epoch: int) -> list[dict]:
        """This rank's share of :meth:`epoch_entries`."""
        return self.epoch_entries(epoch)[self.rank :: self.world_size]

    def _worker(self) -> tuple[int, int]:
        info = get_worker_info()
        return (info.id, info.num_workers) if info is not None else (0, 1)

    def __iter__(self) -> Iterator[dict]:
        epoch = self.stats.epoch
        worker, num_workers = self._worker()
        mine = self.rank_entries(epoch)[worker::num_workers]
        rng = np.random.default_rng([self.seed, epoch, self.rank, worker, 1])
        samples = (dict(e) for e in mine)  # steps modify samples: never touch the list
        yield from self.chain(samples, rng)
        logger.debug("rank %d worker %d/%d finished epoch %d", self.rank, worker, num_workers,
                     epoch)

    def _open(self, samples):
        if self.data_type == "raw":
            return P.open_files(samples, self.stats, self.allow_pipes)
        return P.open_shards(samples, self.stats)


class TrainDataset(_SpeakerStream):
    """Training crops: shuffled per epoch, labelled, speed-perturbed, augmented.

    Build it with :func:`build_train_dataset`. ``config`` must carry the model's
    sample rate (:meth:`DatasetConfig.with_sample_rate`).
    """

    def __init__(self, entries: list[dict], data_type: str, *, config: DatasetConfig,
                 spk2id: Mapping[str, int], batch_size: int, augmenter: Augmenter | None = None,
                 drop_last: bool = True, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None):
        super().__init__(entries, data_type, batch_size, rank, world_size, seed,
                         allow_pipes=config.allow_pipes)
        config.rate  # noqa: B018 - fails early when the sample rate is unknown
        self.config = config
        self.spk2id = dict(spk2id)
        self.augmenter = augmenter
        self.drop_last = drop_last
        if augmenter is not None:
            augmenter.on_bad_source = _CountBadSource(self.stats)

    def epoch_entries(self, epoch: int) -> list[dict]:
        cfg = self.config
        n = len(self.entries)
        total = cfg.sample_num_per_epoch or n
        out: list[dict] = []
        k = 0
        while len(out) < total:
            if cfg.shuffle:
                perm = np.random.default_rng([self.seed, epoch, k]).permutation(n)
                out.extend(self.entries[int(i)] for i in perm)
            else:
                out.extend(self.entries)
            k += 1
        out = out[:total]
        w = self.world_size
        if w > 1 and len(out) % w:
            if cfg.rank_balance == "drop":
                out = out[: len(out) - len(out) % w]
            elif cfg.rank_balance == "pad":
                out = out + out[: w - len(out) % w]
        return out

    def batches_per_epoch(self, num_workers: int = 0, epoch: int = 0) -> int | None:
        """Batches this rank yields in an epoch when no audio is bad (for LR schedules).

        Known for raw lists only (a tar's size is unknown until read). Each
        DataLoader worker batches its own share, so with ``drop_last`` up to
        ``batch_size - 1`` samples per worker sit out.
        """
        if self.data_type != "raw":
            return None
        n, w, b = len(self.rank_entries(epoch)), max(1, num_workers), self.batch_size
        sizes = [len(range(i, n, w)) for i in range(w)]
        return sum(s // b if self.drop_last else -(-s // b) for s in sizes)

    def chain(self, samples, rng: np.random.Generator):
        cfg, st = self.config, self.stats
        data = P.decode(self._open(samples), st)
        data = P.drop_bad_audio(data, st, cfg.min_duration, cfg.max_duration)
        # keep only what the crop may need (slowest speed) so buffers stay small
        max_speed = max(cfg.speed_factors) if cfg.speed_perturb else 1.0
        data = P.random_window(data, cfg.crop_seconds * max_speed + 0.1, rng)
        if cfg.shuffle:
            data = P.shuffle_buffer(data, cfg.shuffle_size, rng)
        data = P.resample(data, cfg.rate)
        data = P.map_label(data, self.spk2id, strict=True, stats=st)
        if cfg.speed_perturb:
            data = P.speed_perturb(data, cfg.speed_factors, len(self.spk2id), rng)
        data = P.crop(data, cfg.crop_samples, rng)
        data = P.augment(data, self.augmenter, cfg.aug_prob, rng)
        return P.batch_crops(data, self.batch_size, self.drop_last, st)


class EvalDataset(_SpeakerStream):
    """Whole utterances for embedding extraction: no augmentation, length-grouped.

    Build it with :func:`build_eval_dataset`. Never drops or repeats an entry.
    ``min_duration`` (seconds) is checked again after resampling, at the model
    rate: pass the SSL model's receptive field (``frontend.min_samples /
    sample_rate``) and a too-short utterance is skipped and counted instead of
    failing its batch.
    """

    def __init__(self, entries: list[dict], data_type: str, *, sample_rate: int,
                 batch_size: int, min_duration: float = 0.0,
                 max_batch_seconds: float | None = None, sort_size: int = 128,
                 spk2id: Mapping[str, int] | None = None, rank: int | None = None,
                 world_size: int | None = None, allow_pipes: bool = False):
        super().__init__(entries, data_type, batch_size, rank, world_size,
                         allow_pipes=allow_pipes)
        if max_batch_seconds is not None and max_batch_seconds <= 0:
            raise ValueError(f"max_batch_seconds must be > 0, got {max_batch_seconds}")
        self.sample_rate = int(sample_rate)
        self.min_duration = min_duration
        self.max_batch_seconds = max_batch_seconds
        self.sort_size = sort_size
        self.spk2id = dict(spk2id) if spk2id is not None else None

    def epoch_entries(self, epoch: int) -> list[dict]:
        if all("dur" in e for e in self.entries):
            order = sorted(range(len(self.entries)),
                           key=lambda i: (float(self.entries[i]["dur"]), self.entries[i]["key"]))
            return [self.entries[i] for i in order]
        return list(self.entries)

    def chain(self, samples, rng: np.random.Generator):
        st = self.stats
        data = P.decode(self._open(samples), st)
        data = P.drop_bad_audio(data, st, self.min_duration)
        data = P.resample(data, self.sample_rate)
        if self.min_duration > 0:  # resampling may round a file just long enough below it
            min_samples = int(np.ceil(self.min_duration * self.sample_rate - 1e-6))
            data = P.drop_too_short(data, min_samples, st)
        data = P.map_label(data, self.spk2id, strict=False)
        if self.sort_size > 1:
            data = P.sort_by_length(data, self.sort_size)
        return P.batch_by_length(data, self.batch_size, self.max_batch_seconds, st)


class _CountBadSource:
    """Picklable callback: count a failed noise/RIR file."""

    def __init__(self, stats: PipelineStats):
        self.stats = stats

    def __call__(self, _exc) -> None:
        self.stats.add("bad_aug_source")


class SpeakerDataLoader:
    """A DataLoader over a :class:`TrainDataset` or :class:`EvalDataset`; reports epoch counters.

    >>> # loader = build_train_loader(...); loader.set_epoch(e)
    >>> # for batch in loader: ...    # batch["wavs"], batch["lengths"], batch["labels"]
    >>> # loader.last_stats["skipped"]

    When an epoch's iteration ends, the totals of all workers (samples,
    batches, bad audio skipped by reason) are logged and kept in ``last_stats``.
    """

    def __init__(self, dataset: _SpeakerStream, num_workers: int = 0, pin_memory: bool = False,
                 prefetch_factor: int | None = None, persistent_workers: bool = False):
        self.dataset = dataset
        self.last_stats: dict[str, int] | None = None
        kwargs: dict[str, Any] = {}
        if num_workers > 0:
            kwargs["prefetch_factor"] = prefetch_factor
            kwargs["persistent_workers"] = persistent_workers
        elif prefetch_factor is not None:
            raise ValueError("prefetch_factor needs num_workers > 0")
        self.loader = DataLoader(dataset, batch_size=None, num_workers=num_workers,
                                 pin_memory=pin_memory, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def batches_per_epoch(self) -> int | None:
        """See :meth:`TrainDataset.batches_per_epoch` (None for shard lists and eval)."""
        return self.dataset.batches_per_epoch(self.loader.num_workers, self.dataset.stats.epoch)

    @property
    def stats(self) -> dict[str, int]:
        """The counters so far (the current epoch while iterating)."""
        return self.dataset.stats.snapshot()

    def __iter__(self) -> Iterator[dict]:
        self.dataset.stats.reset()
        try:
            yield from self.loader
        except ConfigError as e:  # from a worker: torch adds the worker's traceback; drop it
            text = str(e)
            if "Original Traceback" in text:
                last = text.rstrip().splitlines()[-1]
                raise ConfigError(last.split(": ", 1)[1] if last.startswith("ConfigError: ")
                                  else last) from None
            raise
        self.last_stats = self.dataset.stats.snapshot()
        level = logging.WARNING if self.last_stats["skipped"] else logging.INFO
        logger.log(level, "rank %d %s", self.dataset.rank, self.dataset.stats.summary())


# ------------------------------------------------------------------ builders
def load_entries(data_list, data_type: str) -> list[dict]:
    """A list path (raw.list / shard.list) or a sequence of entries -> checked entry dicts."""
    if data_type not in DATA_TYPES:
        raise ValueError(f"unknown data_type {data_type!r}; valid: {list(DATA_TYPES)}")
    if isinstance(data_list, str | os.PathLike):
        return read_data_list(data_list, data_type)
    entries = [dict(e) for e in data_list]
    need = ("key", "wav") if data_type == "raw" else ("shard",)
    for i, e in enumerate(entries):
        if any(k not in e for k in need):
            raise ValueError(f"data_list entry {i} lacks {list(need)}: {e!r}")
    return entries


def _load_spk2id(spk2id) -> dict[str, int] | None:
    if spk2id is None or isinstance(spk2id, Mapping):
        return None if spk2id is None else dict(spk2id)
    return read_spk2id(spk2id)


def build_train_dataset(
    data_list: str | os.PathLike | Sequence[dict],
    data_type: str,
    spk2id: Mapping[str, int] | str | os.PathLike,
    dataset_args: DatasetConfig | Mapping[str, Any] | None = None,
    *,
    sample_rate: int,
    batch_size: int,
    drop_last: bool = True,
    noise_list: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    rir_list: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    utt2spk: Mapping[str, str] | str | os.PathLike | None = None,
) -> TrainDataset:
    """Training dataset: crops of ``dataset_args`` length, speed perturbation, augmentation.

    ``data_list``: a raw.list / shard.list path (or entries); ``spk2id``: a
    dict or a ``spk2id`` file; ``dataset_args``: parsed or raw;
    ``sample_rate``: the model's (the frontend reports it). ``noise_list``:
    list(s) whose lines carry a ``type`` (noise, music, babble); ``rir_list``:
    RIR list(s). Augmentation (``aug_prob`` > 0) needs at least one of them.
    ``utt2spk`` (a dict or file; the trainer passes ``train_label``): the
    speakers of a raw list are compared with it, and a disagreement is a
    warning with a count (the labels come from the list).
    """
    cfg = dataset_args if isinstance(dataset_args, DatasetConfig) \
        else parse_dataset_args(dataset_args)
    cfg = cfg.with_sample_rate(sample_rate)
    entries = load_entries(data_list, data_type)
    spk2id = _load_spk2id(spk2id)
    if spk2id is None:
        raise ValueError("training needs spk2id")
    if data_type == "raw":
        unknown = sorted({str(e.get("spk")) for e in entries if e.get("spk") not in spk2id})
        if unknown:
            raise ValueError(f"{data_list if isinstance(data_list, str | Path) else 'data_list'}: "
                             f"{len(unknown)} speaker(s) not in spk2id, e.g. {unknown[:5]}")
        if utt2spk is not None:
            _warn_speaker_disagreement(entries, utt2spk, data_list)
    elif cfg.sample_num_per_epoch:
        raise ValueError("dataset_args.sample_num_per_epoch works with raw lists only")
    augmenter = _build_augmenter(cfg, noise_list, rir_list)
    return TrainDataset(entries, data_type, config=cfg, spk2id=spk2id, batch_size=batch_size,
                        augmenter=augmenter, drop_last=drop_last, seed=seed, rank=rank,
                        world_size=world_size)


def _warn_speaker_disagreement(entries: list[dict], utt2spk, data_list) -> tuple[int, int]:
    """Warn when a raw list's speakers contradict ``utt2spk``; returns (differ, absent)."""
    where = data_list if isinstance(data_list, str | Path) else "data_list"
    table = read_scp(utt2spk) if isinstance(utt2spk, str | os.PathLike) else dict(utt2spk)
    differ, absent = compare_speakers(entries, table)
    if differ:
        k = differ[0]
        spk = next(e["spk"] for e in entries if e["key"] == k)
        logger.warning("%s: %d of %d utterances have another speaker than in utt2spk (e.g. %r: "
                       "%r in the list, %r in utt2spk); training uses the list's. Remake the "
                       "list from the data dir (make_raw_list)", where, len(differ), len(entries),
                       k, spk, table[k])
    if absent:
        logger.warning("%s: %d of %d utterances are not in utt2spk (e.g. %r)", where,
                       len(absent), len(entries), absent[0])
    return len(differ), len(absent)


def _build_augmenter(cfg: DatasetConfig, noise_list, rir_list) -> Augmenter | None:
    if cfg.aug_prob <= 0:
        return None
    sources: dict[str, list[str]] = {}
    if noise_list is not None:
        for kind, paths in read_source_lists(noise_list).items():
            sources.setdefault(kind, []).extend(paths)
    if rir_list is not None:
        for kind, paths in read_source_lists(rir_list, default_type="rir").items():
            sources.setdefault(kind, []).extend(paths)
    if not sources:
        raise ValueError("dataset_args.aug_prob > 0 needs noise_list and/or rir_list")
    logger.info("augmentation p=%.2f with %s", cfg.aug_prob,
                {k: len(v) for k, v in sources.items()})
    return Augmenter(sources, cfg.rate, snr=cfg.snr, weights=cfg.aug_weights,
                     babble_speakers=cfg.babble_speakers)


def build_train_loader(
    data_list: str | os.PathLike | Sequence[dict],
    data_type: str,
    spk2id: Mapping[str, int] | str | os.PathLike,
    dataset_args: DatasetConfig | Mapping[str, Any] | None,
    dataloader_args: DataLoaderConfig | Mapping[str, Any],
    *,
    sample_rate: int,
    noise_list=None,
    rir_list=None,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    utt2spk: Mapping[str, str] | str | os.PathLike | None = None,
) -> SpeakerDataLoader:
    """:func:`build_train_dataset` + a DataLoader from WeSpeaker's ``dataloader_args``.

    ``dataloader_args`` (parsed or raw, see
    :func:`~wespeaker_lap.dataset.schema.parse_dataloader_args`): ``batch_size``
    (per rank, required), ``num_workers``, ``pin_memory``, ``prefetch_factor``,
    ``drop_last`` (default True), ``persistent_workers``.
    """
    dl = dataloader_args if isinstance(dataloader_args, DataLoaderConfig) \
        else parse_dataloader_args(dataloader_args)
    ds = build_train_dataset(data_list, data_type, spk2id, dataset_args, sample_rate=sample_rate,
                             batch_size=dl.batch_size, drop_last=dl.drop_last,
                             noise_list=noise_list, rir_list=rir_list, seed=seed, rank=rank,
                             world_size=world_size, utt2spk=utt2spk)
    return SpeakerDataLoader(ds, num_workers=dl.num_workers, pin_memory=dl.pin_memory,
                             prefetch_factor=dl.prefetch_factor,
                             persistent_workers=dl.persistent_workers)


def build_eval_dataset(
    data_list: str | os.PathLike | Sequence[dict],
    data_type: str = "raw",
    *,
    sample_rate: int,
    batch_size: int = 16,
    max_batch_seconds: float | None = None,
    sort_size: int = 128,
    min_duration: float = 0.0,
    spk2id: Mapping[str, int] | str | os.PathLike | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    allow_pipes: bool = False,
) -> EvalDataset:
    """Embedding-extraction dataset: whole utterances, no augmentation, length-grouped.

    Raw-list entries with ``dur`` (make_raw_list adds it from utt2dur) are
    sorted by it globally; otherwise runs of ``sort_size`` utterances are
    sorted. A batch holds at most ``batch_size`` utterances and, if set,
    ``max_batch_seconds`` of padded audio. Every utterance is read once over
    all ranks and workers; bad ones (and those shorter than ``min_duration``)
    are skipped and counted (their keys are then absent from the output).
    Piped ``wav`` values (``"cmd |"``) are an error unless ``allow_pipes``.
    """
    entries = load_entries(data_list, data_type)
    return EvalDataset(entries, data_type, sample_rate=sample_rate, batch_size=batch_size,
                       min_duration=min_duration, max_batch_seconds=max_batch_seconds,
                       sort_size=sort_size, spk2id=_load_spk2id(spk2id), rank=rank,
                       world_size=world_size, allow_pipes=allow_pipes)


def build_eval_loader(
    data_list: str | os.PathLike | Sequence[dict],
    data_type: str = "raw",
    *,
    num_workers: int = 0,
    pin_memory: bool = False,
    **eval_kwargs,
) -> SpeakerDataLoader:
    """:func:`build_eval_dataset` wrapped in a :class:`SpeakerDataLoader`."""
    ds = build_eval_dataset(data_list, data_type, **eval_kwargs)
    return SpeakerDataLoader(ds, num_workers=num_workers, pin_memory=pin_memory)
