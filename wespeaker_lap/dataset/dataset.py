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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from wespeaker_lap.dataset import processor as P
from wespeaker_lap.dataset.augment import AUG_KINDS, DEFAULT_BABBLE_SPEAKERS, DEFAULT_SNR, Augmenter
from wespeaker_lap.dataset.lists import read_data_list, read_source_lists, read_spk2id
from wespeaker_lap.dataset.stats import PipelineStats

logger = logging.getLogger(__name__)

DATA_TYPES = ("raw", "shard")
RANK_BALANCE = ("drop", "pad", "none")

# ------------------------------------------------------------------ config
#: Valid ``dataset_args`` keys and their sub-keys (None: a plain value).
DATASET_ARGS_KEYS: dict[str, tuple[str, ...] | None] = {
    "sample_rate": None,  # model rate; audio at other rates is resampled (default 16000)
    "resample_rate": None,  # WeSpeaker's name for sample_rate
    "crop_seconds": None,  # training crop length (default 2.0)
    "num_frms": None,  # WeSpeaker's crop length: (num_frms - 1) * 10 ms + 25 ms
    "shuffle": None,  # shuffle the list per epoch and samples in a buffer (default True)
    "shuffle_args": ("shuffle_size",),  # buffer size (default 2500)
    "filter": None,  # WeSpeaker: apply filter_args (default True)
    "filter_args": ("min_num_frames", "max_num_frames"),  # 10 ms frames -> min/max_duration
    "min_duration": None,  # shorter utterances are bad audio (seconds, default 0.5)
    "max_duration": None,  # longer utterances are dropped (seconds, default: none)
    "speed_perturb": None,  # default False
    "speed_perturb_args": ("factors",),  # drawn uniformly (default [1.0, 0.9, 1.1])
    "aug_prob": None,  # probability of one augmentation per crop (default 0.0)
    "aug_args": ("weights", "snr", "babble_speakers"),
    "sample_num_per_epoch": None,  # raw lists: entries per epoch, 0 = the list length
    "rank_balance": None,  # drop | pad | none (default drop)
}

#: WeSpeaker keys that belong elsewhere here (the frontend is part of the model).
_ELSEWHERE = {
    "frontend", "s3prl_args", "fbank_args", "mfcc_args", "cmvn", "cmvn_args",
    "spec_aug", "spec_aug_args", "raw_wav", "feat_dim",
}


@dataclass(frozen=True)
class DatasetConfig:
    """Checked training-pipeline settings (see :data:`DATASET_ARGS_KEYS`)."""

    sample_rate: int = 16000
    crop_samples: int = 32000
    shuffle: bool = True
    shuffle_size: int = 2500
    min_duration: float = 0.5
    max_duration: float | None = None
    speed_perturb: bool = False
    speed_factors: tuple[float, ...] = (1.0, 0.9, 1.1)
    aug_prob: float = 0.0
    aug_weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(AUG_KINDS, 1.0))
    snr: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_SNR))
    babble_speakers: tuple[int, int] = DEFAULT_BABBLE_SPEAKERS
    sample_num_per_epoch: int = 0
    rank_balance: str = "drop"

    @property
    def crop_seconds(self) -> float:
        return self.crop_samples / self.sample_rate

    def num_classes(self, num_speakers: int) -> int:
        """Classifier size: speakers x speed-factor blocks when speed perturbation is on."""
        blocks = len(P.speed_classes(self.speed_factors)) if self.speed_perturb else 1
        return num_speakers * blocks


def _err(where: str, msg: str) -> ValueError:
    return ValueError(f"dataset_args.{where}: {msg}")


def _check_keys(where: str, given: Mapping, valid) -> None:
    if not isinstance(given, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(given).__name__} {given!r}")
    unknown = sorted(set(given) - set(valid))
    if unknown:
        hint = ""
        elsewhere = sorted(set(unknown) & _ELSEWHERE)
        if elsewhere:
            hint = f"; {elsewhere} configure the model's frontend, not the data pipeline"
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid: {sorted(valid)}{hint}")


def _num(where: str, value, kind=float, lo=None, hi=None, lo_open=False):
    if isinstance(value, bool) or not isinstance(value, int | float) or (
        kind is int and not isinstance(value, int)
    ):
        raise _err(where, f"expected {'an int' if kind is int else 'a number'}, got {value!r}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise _err(where, f"must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise _err(where, f"must be <= {hi}, got {value!r}")
    return kind(value)


def _bool(where: str, value) -> bool:
    if not isinstance(value, bool):
        raise _err(where, f"expected true/false, got {value!r}")
    return value


def _pair(where: str, value, kind=float) -> tuple:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise _err(where, f"expected [low, high], got {value!r}")
    lo, hi = (_num(where, v, kind) for v in value)
    if lo > hi:
        raise _err(where, f"low > high in {value!r}")
    return lo, hi


def parse_dataset_args(args: Mapping[str, Any] | None) -> DatasetConfig:
    """Check WeSpeaker-style ``dataset_args`` and resolve them into a :class:`DatasetConfig`.

    Unknown keys (at any level) raise ValueError naming them and the valid ones.

    >>> parse_dataset_args({"num_frms": 200, "speed_perturb": True}).crop_samples
    32240
    """
    args = dict(args or {})
    _check_keys("dataset_args", args, DATASET_ARGS_KEYS)
    for key, sub in DATASET_ARGS_KEYS.items():
        if sub is not None and key in args:
            _check_keys(f"dataset_args.{key}", args[key], sub)
    kw: dict[str, Any] = {}

    rates = {k: _num(k, args[k], int, 1) for k in ("sample_rate", "resample_rate") if k in args}
    if len(set(rates.values())) > 1:
        raise _err("sample_rate", f"sample_rate and resample_rate disagree: {rates}")
    sr = next(iter(rates.values()), 16000)
    kw["sample_rate"] = sr

    if "crop_seconds" in args and "num_frms" in args:
        raise _err("crop_seconds", "give crop_seconds or num_frms, not both")
    if "num_frms" in args:
        n = _num("num_frms", args["num_frms"], int, 1)
        kw["crop_samples"] = (n - 1) * (sr // 100) + (sr * 25 // 1000)
    else:
        kw["crop_samples"] = round(_num("crop_seconds", args.get("crop_seconds", 2.0), lo=0,
                                        lo_open=True) * sr)

    kw["shuffle"] = _bool("shuffle", args.get("shuffle", True))
    shuffle_args = args.get("shuffle_args", {})
    kw["shuffle_size"] = _num("shuffle_args.shuffle_size", shuffle_args.get("shuffle_size", 2500),
                              int, 1)

    min_dur = args.get("min_duration")
    max_dur = args.get("max_duration")
    if _bool("filter", args.get("filter", True)):
        fa = args.get("filter_args", {})
        if "min_num_frames" in fa:
            if min_dur is not None:
                raise _err("filter_args", "min_num_frames and min_duration both given")
            min_dur = _num("filter_args.min_num_frames", fa["min_num_frames"], int, 0) / 100
        if "max_num_frames" in fa:
            if max_dur is not None:
                raise _err("filter_args", "max_num_frames and max_duration both given")
            max_dur = _num("filter_args.max_num_frames", fa["max_num_frames"], int, 1) / 100
    kw["min_duration"] = _num("min_duration", 0.5 if min_dur is None else min_dur, lo=0)
    kw["max_duration"] = None if max_dur is None else _num("max_duration", max_dur, lo=0,
                                                           lo_open=True)
    if kw["max_duration"] is not None and kw["max_duration"] < kw["min_duration"]:
        raise _err("max_duration", f"{kw['max_duration']} < min_duration {kw['min_duration']}")

    kw["speed_perturb"] = _bool("speed_perturb", args.get("speed_perturb", False))
    factors = args.get("speed_perturb_args", {}).get("factors", [1.0, 0.9, 1.1])
    if not isinstance(factors, list | tuple) or not factors:
        raise _err("speed_perturb_args.factors", f"expected a non-empty list, got {factors!r}")
    factors = tuple(_num("speed_perturb_args.factors", f, lo=0, lo_open=True) for f in factors)
    if 1.0 not in factors:
        raise _err("speed_perturb_args.factors", f"must include 1.0 (the original), got {factors}")
    kw["speed_factors"] = factors

    kw["aug_prob"] = _num("aug_prob", args.get("aug_prob", 0.0), lo=0, hi=1)
    aug_args = args.get("aug_args", {})
    weights = dict.fromkeys(AUG_KINDS, 1.0)
    if "weights" in aug_args:
        _check_keys("dataset_args.aug_args.weights", aug_args["weights"], AUG_KINDS)
        for k, v in aug_args["weights"].items():
            weights[k] = _num(f"aug_args.weights.{k}", v, lo=0)
    kw["aug_weights"] = weights
    snr = dict(DEFAULT_SNR)
    if "snr" in aug_args:
        _check_keys("dataset_args.aug_args.snr", aug_args["snr"], DEFAULT_SNR)
        for k, v in aug_args["snr"].items():
            snr[k] = _pair(f"aug_args.snr.{k}", v)
    kw["snr"] = snr
    if "babble_speakers" in aug_args:
        lo, hi = _pair("aug_args.babble_speakers", aug_args["babble_speakers"], int)
        if lo < 1:
            raise _err("aug_args.babble_speakers", f"need at least 1 speaker, got {lo}")
        kw["babble_speakers"] = (lo, hi)

    kw["sample_num_per_epoch"] = _num("sample_num_per_epoch",
                                      args.get("sample_num_per_epoch", 0), int, 0)
    balance = args.get("rank_balance", "drop")
    if balance not in RANK_BALANCE:
        raise _err("rank_balance", f"{balance!r} is not one of {list(RANK_BALANCE)}")
    kw["rank_balance"] = balance
    return DatasetConfig(**kw)


def num_classes(num_speakers: int, dataset_args: Mapping[str, Any] | None) -> int:
    """Classifier size for ``num_speakers`` under these ``dataset_args`` (3x with speed perturb)."""
    return parse_dataset_args(dataset_args).num_classes(num_speakers)


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


class SpeakerDataset(IterableDataset):
    """An iterable of ready batches for one rank; use with ``DataLoader(batch_size=None)``.

    Build it with :func:`build_train_dataset` or :func:`build_eval_dataset`.
    Call :meth:`set_epoch` before each epoch (the epoch is shared with
    persistent workers).
    """

    def __init__(
        self,
        entries: list[dict],
        data_type: str,
        mode: str,
        *,
        batch_size: int,
        config: DatasetConfig | None = None,
        spk2id: Mapping[str, int] | None = None,
        augmenter: Augmenter | None = None,
        drop_last: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        eval_sample_rate: int = 16000,
        eval_min_duration: float = 0.0,
        max_batch_seconds: float | None = None,
        sort_size: int = 128,
    ):
        super().__init__()
        if data_type not in DATA_TYPES:
            raise ValueError(f"unknown data_type {data_type!r}; valid: {list(DATA_TYPES)}")
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        if mode == "train" and (config is None or spk2id is None):
            raise ValueError("training needs a DatasetConfig and spk2id")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not entries:
            raise ValueError("empty data list")
        self.entries = entries
        self.data_type = data_type
        self.mode = mode
        self.config = config
        self.spk2id = dict(spk2id) if spk2id is not None else None
        self.augmenter = augmenter
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.seed = seed
        self.rank, self.world_size = resolve_rank(rank, world_size)
        self.eval_sample_rate = eval_sample_rate
        self.eval_min_duration = eval_min_duration
        self.max_batch_seconds = max_batch_seconds
        self.sort_size = sort_size
        self.stats = PipelineStats()
        if augmenter is not None:
            augmenter.on_bad_source = _CountBadSource(self.stats)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's shuffle and random streams (visible to all workers)."""
        self.stats.epoch = epoch

    # ---- which entries this rank / worker reads
    def epoch_entries(self, epoch: int) -> list[dict]:
        """The whole epoch's entry order (before the rank split), same on every rank."""
        n = len(self.entries)
        if self.mode == "eval":
            if all("dur" in e for e in self.entries):
                order = sorted(range(n), key=lambda i: (float(self.entries[i]["dur"]),
                                                        self.entries[i]["key"]))
                return [self.entries[i] for i in order]
            return list(self.entries)
        cfg = self.config
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

    def rank_entries(self, epoch: int) -> list[dict]:
        """This rank's share of :meth:`epoch_entries`."""
        return self.epoch_entries(epoch)[self.rank :: self.world_size]

    def batches_per_epoch(self, num_workers: int = 0, epoch: int = 0) -> int | None:
        """Training batches this rank yields in an epoch when no audio is bad (for LR schedules).

        Known for raw lists only (a tar's size is unknown until read); None otherwise
        and in evaluation mode. Each DataLoader worker batches its own share, so
        with ``drop_last`` up to ``batch_size - 1`` samples per worker sit out.
        """
        if self.mode != "train" or self.data_type != "raw":
            return None
        n, w, b = len(self.rank_entries(epoch)), max(1, num_workers), self.batch_size
        sizes = [len(range(i, n, w)) for i in range(w)]
        return sum(s // b if self.drop_last else -(-s // b) for s in sizes)

    def _worker(self) -> tuple[int, int]:
        info = get_worker_info()
        return (info.id, info.num_workers) if info is not None else (0, 1)

    def __iter__(self) -> Iterator[dict]:
        epoch = self.stats.epoch
        worker, num_workers = self._worker()
        mine = self.rank_entries(epoch)[worker::num_workers]
        rng = np.random.default_rng([self.seed, epoch, self.rank, worker, 1])
        samples = (dict(e) for e in mine)  # steps modify samples: never touch the list
        chain = self._train_chain if self.mode == "train" else self._eval_chain
        yield from chain(samples, rng)
        logger.debug("rank %d worker %d/%d finished epoch %d", self.rank, worker, num_workers,
                     epoch)

    def _open(self, samples):
        if self.data_type == "raw":
            return P.open_files(samples, self.stats)
        return P.open_shards(samples, self.stats)

    def _train_chain(self, samples, rng: np.random.Generator):
        cfg, st = self.config, self.stats
        data = P.decode(self._open(samples), st)
        data = P.drop_bad_audio(data, st, cfg.min_duration, cfg.max_duration)
        # keep only what the crop may need (slowest speed) so buffers stay small
        max_speed = max(cfg.speed_factors) if cfg.speed_perturb else 1.0
        data = P.random_window(data, cfg.crop_seconds * max_speed + 0.1, rng)
        if cfg.shuffle:
            data = P.shuffle_buffer(data, cfg.shuffle_size, rng)
        data = P.resample(data, cfg.sample_rate)
        data = P.map_label(data, self.spk2id, strict=True, stats=st)
        if cfg.speed_perturb:
            data = P.speed_perturb(data, cfg.speed_factors, len(self.spk2id), rng)
        data = P.crop(data, cfg.crop_samples, rng)
        data = P.augment(data, self.augmenter, cfg.aug_prob, rng)
        return P.batch_crops(data, self.batch_size, self.drop_last, st)

    def _eval_chain(self, samples, rng: np.random.Generator):
        st = self.stats
        data = P.decode(self._open(samples), st)
        data = P.drop_bad_audio(data, st, self.eval_min_duration)
        data = P.resample(data, self.eval_sample_rate)
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
    """A DataLoader over a :class:`SpeakerDataset` that reports each epoch's counters.

    >>> # loader = build_train_loader(...); loader.set_epoch(e)
    >>> # for batch in loader: ...    # batch["wavs"], batch["lengths"], batch["labels"]
    >>> # loader.last_stats["skipped"]

    When an epoch's iteration ends, the totals of all workers (samples,
    batches, bad audio skipped by reason) are logged and kept in ``last_stats``.
    """

    def __init__(self, dataset: SpeakerDataset, num_workers: int = 0, pin_memory: bool = False,
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
        """See :meth:`SpeakerDataset.batches_per_epoch` (None for shard lists and eval)."""
        return self.dataset.batches_per_epoch(self.loader.num_workers, self.dataset.stats.epoch)

    @property
    def stats(self) -> dict[str, int]:
        """The counters so far (the current epoch while iterating)."""
        return self.dataset.stats.snapshot()

    def __iter__(self) -> Iterator[dict]:
        self.dataset.stats.reset()
        yield from self.loader
        self.last_stats = self.dataset.stats.snapshot()
        level = logging.WARNING if self.last_stats["skipped"] else logging.INFO
        logger.log(level, "rank %d %s", self.dataset.rank, self.dataset.stats.summary())


# ------------------------------------------------------------------ builders
def _load_entries(data_list, data_type: str) -> list[dict]:
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
    dataset_args: Mapping[str, Any] | None = None,
    *,
    batch_size: int,
    drop_last: bool = True,
    noise_list: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    rir_list: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
) -> SpeakerDataset:
    """Training dataset: crops of ``dataset_args`` length, speed perturbation, augmentation.

    ``data_list``: a raw.list / shard.list path (or entries); ``spk2id``: a
    dict or a ``spk2id`` file. ``noise_list``: list(s) whose lines carry a
    ``type`` (noise, music, babble); ``rir_list``: RIR list(s). Augmentation
    (``aug_prob`` > 0) needs at least one of them.
    """
    cfg = parse_dataset_args(dataset_args)
    entries = _load_entries(data_list, data_type)
    spk2id = _load_spk2id(spk2id)
    if spk2id is None:
        raise ValueError("training needs spk2id")
    if data_type == "raw":
        unknown = sorted({str(e.get("spk")) for e in entries if e.get("spk") not in spk2id})
        if unknown:
            raise ValueError(f"{data_list if isinstance(data_list, str | Path) else 'data_list'}: "
                             f"{len(unknown)} speaker(s) not in spk2id, e.g. {unknown[:5]}")
    elif cfg.sample_num_per_epoch:
        raise ValueError("dataset_args.sample_num_per_epoch works with raw lists only")
    augmenter = None
    if cfg.aug_prob > 0:
        sources: dict[str, list[str]] = {}
        if noise_list is not None:
            for kind, paths in read_source_lists(noise_list).items():
                sources.setdefault(kind, []).extend(paths)
        if rir_list is not None:
            for kind, paths in read_source_lists(rir_list, default_type="rir").items():
                sources.setdefault(kind, []).extend(paths)
        if not sources:
            raise ValueError("dataset_args.aug_prob > 0 needs noise_list and/or rir_list")
        augmenter = Augmenter(sources, cfg.sample_rate, snr=cfg.snr, weights=cfg.aug_weights,
                              babble_speakers=cfg.babble_speakers)
        logger.info("augmentation p=%.2f with %s", cfg.aug_prob,
                    {k: len(v) for k, v in sources.items()})
    return SpeakerDataset(entries, data_type, "train", batch_size=batch_size, config=cfg,
                          spk2id=spk2id, augmenter=augmenter, drop_last=drop_last, seed=seed,
                          rank=rank, world_size=world_size)


#: Valid ``dataloader_args`` keys.
DATALOADER_ARGS_KEYS = ("batch_size", "num_workers", "pin_memory", "prefetch_factor",
                        "drop_last", "persistent_workers")


def build_train_loader(
    data_list: str | os.PathLike | Sequence[dict],
    data_type: str,
    spk2id: Mapping[str, int] | str | os.PathLike,
    dataset_args: Mapping[str, Any] | None,
    dataloader_args: Mapping[str, Any],
    *,
    noise_list=None,
    rir_list=None,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
) -> SpeakerDataLoader:
    """:func:`build_train_dataset` + a DataLoader from WeSpeaker's ``dataloader_args``.

    ``dataloader_args``: ``batch_size`` (per rank, required), ``num_workers``,
    ``pin_memory``, ``prefetch_factor``, ``drop_last`` (default True),
    ``persistent_workers``; other keys raise.
    """
    dl = dict(dataloader_args)
    _check_keys("dataloader_args", dl, DATALOADER_ARGS_KEYS)
    if "batch_size" not in dl:
        raise ValueError("dataloader_args.batch_size is required")
    batch_size = dl["batch_size"]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"dataloader_args.batch_size: expected an int >= 1, got {batch_size!r}")
    ds = build_train_dataset(data_list, data_type, spk2id, dataset_args, batch_size=batch_size,
                             drop_last=bool(dl.get("drop_last", True)), noise_list=noise_list,
                             rir_list=rir_list, seed=seed, rank=rank, world_size=world_size)
    return SpeakerDataLoader(ds, num_workers=int(dl.get("num_workers", 0)),
                             pin_memory=bool(dl.get("pin_memory", False)),
                             prefetch_factor=dl.get("prefetch_factor"),
                             persistent_workers=bool(dl.get("persistent_workers", False)))


def build_eval_dataset(
    data_list: str | os.PathLike | Sequence[dict],
    data_type: str = "raw",
    *,
    sample_rate: int = 16000,
    batch_size: int = 16,
    max_batch_seconds: float | None = None,
    sort_size: int = 128,
    min_duration: float = 0.0,
    spk2id: Mapping[str, int] | str | os.PathLike | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> SpeakerDataset:
    """Embedding-extraction dataset: whole utterances, no augmentation, length-grouped.

    Raw-list entries with ``dur`` (make_raw_list adds it from utt2dur) are
    sorted by it globally; otherwise runs of ``sort_size`` utterances are
    sorted. A batch holds at most ``batch_size`` utterances and, if set,
    ``max_batch_seconds`` of padded audio. Every utterance is read once over
    all ranks and workers; bad ones are skipped and counted (their keys are
    then absent from the output).
    """
    if max_batch_seconds is not None and max_batch_seconds <= 0:
        raise ValueError(f"max_batch_seconds must be > 0, got {max_batch_seconds}")
    entries = _load_entries(data_list, data_type)
    return SpeakerDataset(entries, data_type, "eval", batch_size=batch_size,
                          spk2id=_load_spk2id(spk2id), rank=rank, world_size=world_size,
                          eval_sample_rate=sample_rate, eval_min_duration=min_duration,
                          max_batch_seconds=max_batch_seconds, sort_size=sort_size)


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
