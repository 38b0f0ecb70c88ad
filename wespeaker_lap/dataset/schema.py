"""The schema of ``dataset_args`` and ``dataloader_args``: one parse, one error style.

:func:`parse_dataset_args` checks WeSpeaker-style ``dataset_args`` (types,
ranges, unknown keys at every level) and resolves them into a frozen
:class:`DatasetConfig`; :func:`parse_dataloader_args` does the same for
``dataloader_args``. Both run once, when the training config is loaded, before
any work starts; the loaders take the parsed objects.

The sample rate is the model's: the frontend reports it
(:attr:`wespeaker_lap.frontend.SSLFrontend.sample_rate`) and the trainer passes
it in. ``resample_rate`` (WeSpeaker's name) or ``sample_rate`` in the config
may state it, and must then agree with the frontend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from wespeaker_lap.checks import (
    ConfigError,
    check_bool,
    check_int,
    check_keys,
    check_number,
    check_pair,
    check_str,
)
from wespeaker_lap.dataset.augment import AUG_KINDS, DEFAULT_BABBLE_SPEAKERS, DEFAULT_SNR
from wespeaker_lap.dataset.processor import speed_classes

RANK_BALANCE = ("drop", "pad", "none")

#: Valid ``dataset_args`` keys and their sub-keys (None: a plain value).
DATASET_ARGS_KEYS: dict[str, tuple[str, ...] | None] = {
    "sample_rate": None,  # the model's rate (default: the frontend's); audio is resampled to it
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
    "allow_pipes": None,  # run Kaldi piped wav.scp entries ("cmd |") with a shell (default False)
}

#: WeSpeaker keys that belong elsewhere here (the frontend is part of the model).
_ELSEWHERE = {
    "frontend", "s3prl_args", "fbank_args", "mfcc_args", "cmvn", "cmvn_args",
    "spec_aug", "spec_aug_args", "raw_wav", "feat_dim",
}

#: Valid ``dataloader_args`` keys (torch DataLoader settings; batch_size is per process).
DATALOADER_ARGS_KEYS = ("batch_size", "num_workers", "pin_memory", "prefetch_factor",
                        "drop_last", "persistent_workers")


@dataclass(frozen=True)
class DatasetConfig:
    """Checked training-pipeline settings (see :data:`DATASET_ARGS_KEYS`).

    ``sample_rate`` is None until the model's rate is known
    (:meth:`with_sample_rate`); the crop length in samples needs it.
    """

    sample_rate: int | None = None
    crop_seconds_arg: float | None = 2.0  # crop_seconds as given (None when num_frms is)
    num_frms: int | None = None
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
    allow_pipes: bool = False

    def with_sample_rate(self, rate: int) -> DatasetConfig:
        """This config at the model's ``rate``; a config that states another rate is an error."""
        rate = int(rate)
        if self.sample_rate is not None and self.sample_rate != rate:
            raise ConfigError(f"dataset_args.resample_rate {self.sample_rate} differs from the "
                              f"SSL model's {rate} Hz (leave it out to use the model's)")
        return replace(self, sample_rate=rate)

    @property
    def rate(self) -> int:
        if self.sample_rate is None:
            raise ValueError("DatasetConfig has no sample rate yet: call with_sample_rate(rate)")
        return self.sample_rate

    @property
    def crop_samples(self) -> int:
        sr = self.rate
        if self.num_frms is not None:
            return (self.num_frms - 1) * (sr // 100) + (sr * 25 // 1000)
        return round(self.crop_seconds_arg * sr)

    @property
    def crop_seconds(self) -> float:
        return self.crop_samples / self.rate

    def num_classes(self, num_speakers: int) -> int:
        """Classifier size: speakers x speed-factor blocks when speed perturbation is on."""
        blocks = len(speed_classes(self.speed_factors)) if self.speed_perturb else 1
        return num_speakers * blocks


def _keys(where: str, given: Any, valid) -> Mapping:
    elsewhere = sorted(set(given) & _ELSEWHERE) if isinstance(given, Mapping) else []
    hint = f"; {elsewhere} configure the model's frontend, not the data pipeline" \
        if elsewhere else ""
    return check_keys(where, given, valid, hint)


def _rate(args: Mapping[str, Any]) -> int | None:
    rates = {k: check_int(f"dataset_args.{k}", args[k], lo=1)
             for k in ("sample_rate", "resample_rate") if k in args}
    if len(set(rates.values())) > 1:
        raise ConfigError(f"dataset_args.sample_rate: sample_rate and resample_rate disagree: "
                          f"{rates}")
    return next(iter(rates.values()), None)


def _durations(args: Mapping[str, Any]) -> tuple[float, float | None]:
    min_dur = args.get("min_duration")
    max_dur = args.get("max_duration")
    if check_bool("dataset_args.filter", args.get("filter", True)):
        fa = args.get("filter_args", {})
        if "min_num_frames" in fa:
            if min_dur is not None:
                raise ConfigError("dataset_args.filter_args: min_num_frames and min_duration "
                                  "both given")
            min_dur = check_int("dataset_args.filter_args.min_num_frames",
                                fa["min_num_frames"], lo=0) / 100
        if "max_num_frames" in fa:
            if max_dur is not None:
                raise ConfigError("dataset_args.filter_args: max_num_frames and max_duration "
                                  "both given")
            max_dur = check_int("dataset_args.filter_args.max_num_frames",
                                fa["max_num_frames"], lo=1) / 100
    lo = check_number("dataset_args.min_duration", 0.5 if min_dur is None else min_dur, lo=0)
    hi = None if max_dur is None else check_number("dataset_args.max_duration", max_dur, lo=0,
                                                   lo_open=True)
    if hi is not None and hi < lo:
        raise ConfigError(f"dataset_args.max_duration: {hi} < min_duration {lo}")
    return lo, hi


def _speed_factors(args: Mapping[str, Any]) -> tuple[float, ...]:
    where = "dataset_args.speed_perturb_args.factors"
    factors = args.get("speed_perturb_args", {}).get("factors", [1.0, 0.9, 1.1])
    if not isinstance(factors, list | tuple) or not factors:
        raise ConfigError(f"{where}: expected a non-empty list, got {factors!r}")
    factors = tuple(check_number(where, f, lo=0, lo_open=True) for f in factors)
    if 1.0 not in factors:
        raise ConfigError(f"{where}: must include 1.0 (the original), got {factors}")
    return factors


def _augmentation(args: Mapping[str, Any]) -> dict[str, Any]:
    aug_args = args.get("aug_args", {})
    weights = dict.fromkeys(AUG_KINDS, 1.0)
    if "weights" in aug_args:
        check_keys("dataset_args.aug_args.weights", aug_args["weights"], AUG_KINDS)
        for k, v in aug_args["weights"].items():
            weights[k] = check_number(f"dataset_args.aug_args.weights.{k}", v, lo=0)
    snr = dict(DEFAULT_SNR)
    if "snr" in aug_args:
        check_keys("dataset_args.aug_args.snr", aug_args["snr"], DEFAULT_SNR)
        for k, v in aug_args["snr"].items():
            snr[k] = check_pair(f"dataset_args.aug_args.snr.{k}", v)
    out: dict[str, Any] = {
        "aug_prob": check_number("dataset_args.aug_prob", args.get("aug_prob", 0.0), lo=0, hi=1),
        "aug_weights": weights, "snr": snr,
    }
    if "babble_speakers" in aug_args:
        lo, hi = check_pair("dataset_args.aug_args.babble_speakers",
                            aug_args["babble_speakers"], int)
        if lo < 1:
            raise ConfigError(f"dataset_args.aug_args.babble_speakers: need at least 1 speaker, "
                              f"got {lo}")
        out["babble_speakers"] = (lo, hi)
    return out


def parse_dataset_args(args: Mapping[str, Any] | None) -> DatasetConfig:
    """Check WeSpeaker-style ``dataset_args`` and resolve them into a :class:`DatasetConfig`.

    Unknown keys (at any level), wrong types and ranges raise :class:`ConfigError`
    naming the key.

    >>> parse_dataset_args({"num_frms": 200}).with_sample_rate(16000).crop_samples
    32240
    """
    args = dict(args or {})
    _keys("dataset_args", args, DATASET_ARGS_KEYS)
    for key, sub in DATASET_ARGS_KEYS.items():
        if sub is not None and key in args:
            _keys(f"dataset_args.{key}", args[key], sub)
    kw: dict[str, Any] = {"sample_rate": _rate(args)}
    if "crop_seconds" in args and "num_frms" in args:
        raise ConfigError("dataset_args.crop_seconds: give crop_seconds or num_frms, not both")
    if "num_frms" in args:
        kw["num_frms"] = check_int("dataset_args.num_frms", args["num_frms"], lo=1)
        kw["crop_seconds_arg"] = None
    else:
        kw["crop_seconds_arg"] = check_number("dataset_args.crop_seconds",
                                              args.get("crop_seconds", 2.0), lo=0, lo_open=True)
    kw["shuffle"] = check_bool("dataset_args.shuffle", args.get("shuffle", True))
    kw["shuffle_size"] = check_int("dataset_args.shuffle_args.shuffle_size",
                                   args.get("shuffle_args", {}).get("shuffle_size", 2500), lo=1)
    kw["min_duration"], kw["max_duration"] = _durations(args)
    kw["speed_perturb"] = check_bool("dataset_args.speed_perturb",
                                     args.get("speed_perturb", False))
    kw["speed_factors"] = _speed_factors(args)
    kw.update(_augmentation(args))
    kw["sample_num_per_epoch"] = check_int("dataset_args.sample_num_per_epoch",
                                           args.get("sample_num_per_epoch", 0), lo=0)
    kw["rank_balance"] = check_str("dataset_args.rank_balance",
                                   args.get("rank_balance", "drop"), RANK_BALANCE)
    kw["allow_pipes"] = check_bool("dataset_args.allow_pipes", args.get("allow_pipes", False))
    return DatasetConfig(**kw)


@dataclass(frozen=True)
class DataLoaderConfig:
    """Checked ``dataloader_args``."""

    batch_size: int
    num_workers: int = 0
    pin_memory: bool = False
    prefetch_factor: int | None = None
    drop_last: bool = True
    persistent_workers: bool = False


def parse_dataloader_args(args: Mapping[str, Any] | None) -> DataLoaderConfig:
    """Check ``dataloader_args``: ``batch_size`` (per process) is required and >= 1."""
    dl = dict(check_keys("dataloader_args", args or {}, DATALOADER_ARGS_KEYS))
    if "batch_size" not in dl:
        raise ConfigError("dataloader_args.batch_size (per process) is required")
    workers = check_int("dataloader_args.num_workers", dl.get("num_workers", 0), lo=0)
    prefetch = dl.get("prefetch_factor")
    if prefetch is not None:
        prefetch = check_int("dataloader_args.prefetch_factor", prefetch, lo=1)
        if workers == 0:
            raise ConfigError("dataloader_args.prefetch_factor needs num_workers > 0")
    return DataLoaderConfig(
        batch_size=check_int("dataloader_args.batch_size", dl["batch_size"], lo=1),
        num_workers=workers,
        pin_memory=check_bool("dataloader_args.pin_memory", dl.get("pin_memory", False)),
        prefetch_factor=prefetch,
        drop_last=check_bool("dataloader_args.drop_last", dl.get("drop_last", True)),
        persistent_workers=check_bool("dataloader_args.persistent_workers",
                                      dl.get("persistent_workers", False)),
    )
