"""The schema of a pre-training config (``bin/pretrain_ssl``): ``model_args`` + ``train_args``.

``model_args`` are ``transformers.HubertConfig`` fields (checked by
:func:`wespeaker_lap.pretrain.hubert.build_config`); ``train_args`` is parsed
into the frozen :class:`PretrainArgs`, whose fields are the one table of the
valid keys, their defaults, checks and meaning. An unknown key, a wrong type or
a value out of range is a :class:`~wespeaker_lap.checks.ConfigError` naming the
key (and, through :func:`parse_pretrain_config`, the file), before any work starts.

>>> args = parse_train_args({"steps": 10, "crop_seconds": 1})
>>> args.steps, args.crop_seconds, args.batch_size
(10, 1.0, 8)
>>> parse_train_args({"stpes": 10})
Traceback (most recent call last):
...
wespeaker_lap.checks.ConfigError: unknown train_args ['stpes'] (did you mean 'steps'?); ...
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wespeaker_lap.checks import ConfigError, check_int, check_number, check_str

#: The top-level keys of a pre-training config.
PRETRAIN_SECTIONS = ("model_args", "train_args")

Check = Callable[[str, Any], Any]


def _range_text(lo: float | None, hi: float | None, lo_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}]"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    return f"<= {hi}"


def _number(kind: type, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False, note: str = "") -> Check:
    """A check: an int (``kind`` int) or a real number, within ``lo`` .. ``hi``."""
    def check(where: str, value: Any) -> int | float:
        value = check_int(where, value) if kind is int else check_number(where, value)
        below = lo is not None and (value <= lo if lo_open else value < lo)
        if below or (hi is not None and value > hi):
            raise ConfigError(f"{where} must be {_range_text(lo, hi, lo_open)}{note}, "
                              f"got {value!r}")
        return value
    return check


#: ``train_args.dtype``: the autocast dtype of pre-training's forward.
PRETRAIN_DTYPES = ("float32", "bfloat16", "auto")
#: ``train_args.attention``: transformers' attention implementation during pre-training.
PRETRAIN_ATTENTIONS = ("sdpa", "eager")


def _dtype(where: str, value: Any) -> str:
    return check_str(where, value, PRETRAIN_DTYPES)


def _attention(where: str, value: Any) -> str:
    return check_str(where, value, PRETRAIN_ATTENTIONS)


def _db_range(where: str, value: Any) -> tuple[float, float]:
    if (not isinstance(value, list | tuple) or len(value) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            or not value[0] <= value[1]):
        raise ConfigError(f"{where} must be [low, high] in dB, got {value!r}")
    return float(value[0]), float(value[1])


def _arg(default: Any, check: Check, doc: str) -> Any:
    """A :class:`PretrainArgs` field: its default, its check and its one-line meaning."""
    return field(default=default, metadata={"check": check, "doc": doc})


@dataclass(frozen=True)
class PretrainArgs:
    """Checked ``train_args`` of a pre-training config (every key is one of these fields).

    Built from a mapping by :func:`parse_train_args`; the constructor checks each
    value (type and range) and converts ints given for real-valued fields.
    """

    steps: int = _arg(1000, _number(int, lo=0, note=" (0 saves the random init)"),
                      "optimiser steps (a --max_minutes budget may stop earlier)")
    batch_size: int = _arg(8, _number(int, lo=1), "crops per optimiser step")
    crop_seconds: float = _arg(2.0, _number(float, lo=0.1, lo_open=True),
                               "crop length in seconds")
    lr: float = _arg(2.0e-3, _number(float, lo=0, lo_open=True),
                     "peak learning rate (AdamW, betas 0.9 / 0.98)")
    warmup_steps: int = _arg(80, _number(int, lo=0),
                             "linear warm-up (at most 20 % of the steps), then cosine decay to 0")
    weight_decay: float = _arg(0.01, _number(float, lo=0), "AdamW weight decay of the matrices")
    grad_clip: float = _arg(5.0, _number(float, lo=0, lo_open=True),
                            "clip the global gradient norm to this value")
    mask_prob: float = _arg(0.8, _number(float, lo=0, hi=1, lo_open=True),
                            "span starts = mask_prob * T / mask_length (about half the frames)")
    mask_length: int = _arg(10, _number(int, lo=1), "frames per masked span")
    num_units: int = _arg(100, _number(int, lo=2), "k-means clusters (HuBERT iteration 1: 100)")
    units_from: str = _arg("mfcc", check_str,
                           "'mfcc', or an earlier model's directory (iteration 2)")
    units_layer: int = _arg(3, _number(int, lo=0),
                            "hidden state of that model to cluster (0: CNN projection)")
    kmeans_max_frames: int = _arg(200000, _number(int, lo=1), "frames sampled to fit k-means")
    proj_dim: int = _arg(64, _number(int, lo=1),
                         "projection of the output and unit embedding size")
    temperature: float = _arg(0.1, _number(float, lo=0, lo_open=True),
                              "cosine logits are divided by it")
    unmasked_weight: float = _arg(0.0, _number(float, lo=0, hi=1),
                                  "loss = masked + w * unmasked frames' (HuBERT's alpha = "
                                  "1/(1+w))")
    contrast_weight: float = _arg(0.0, _number(float, lo=0),
                                  "+ w * NT-Xent between two crops of each utterance (0: off)")
    contrast_temperature: float = _arg(0.1, _number(float, lo=0, lo_open=True),
                                       "temperature of the NT-Xent")
    contrast_snr_db: tuple[float, float] = _arg((10.0, 30.0), _db_range,
                                                "white noise added to each crop (contrast on), "
                                                "dB range [low, high]")
    min_seconds: float = _arg(1.0, _number(float, lo=0),
                              "shorter files are skipped (counted in the log)")
    dtype: str = _arg("float32", _dtype,
                      "autocast dtype of the forward: float32, bfloat16, or auto (bfloat16 "
                      "where a start-up probe finds its matrix products >= 1.25x faster, else "
                      "float32); weights and optimiser state stay float32")
    attention: str = _arg("sdpa", _attention,
                          "transformers' attention: sdpa, or eager (plain matrix products; "
                          "on CPU with short crops its backward is cheaper than SDPA's)")
    log_every: int = _arg(25, _number(int, lo=1), "log the running means every this many steps")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name,
                               f.metadata["check"](f"train_args.{f.name}", getattr(self, f.name)))
        if self.contrast_on and (self.batch_size < 4 or self.batch_size % 2):
            raise ConfigError("train_args.batch_size must be even and >= 4 with contrast_weight "
                              f"> 0 (two crops per utterance), got {self.batch_size}")

    @property
    def contrast_on(self) -> bool:
        """Whether the utterance-level contrastive term is trained."""
        return self.contrast_weight > 0

    def to_dict(self) -> dict[str, Any]:
        """Every key with its value, as plain YAML types (what ran, for ``pretrain.yaml``)."""
        out = dataclasses.asdict(self)
        out["contrast_snr_db"] = list(self.contrast_snr_db)
        return out


#: The valid ``train_args`` keys and their one-line meanings.
TRAIN_ARGS_DOC: dict[str, str] = {f.name: f.metadata["doc"]
                                  for f in dataclasses.fields(PretrainArgs)}


def parse_train_args(section: Mapping[str, Any] | None, where: str = "train_args"
                     ) -> PretrainArgs:
    """``train_args`` -> :class:`PretrainArgs`; absent keys take their defaults."""
    section = {} if section is None else section
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(section).__name__} "
                          f"{section!r}")
    unknown = sorted(str(k) for k in set(section) - set(TRAIN_ARGS_DOC))
    if unknown:
        close = difflib.get_close_matches(unknown[0], TRAIN_ARGS_DOC, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown {where} {unknown}{hint}; valid: {sorted(TRAIN_ARGS_DOC)}")
    return PretrainArgs(**section)


def parse_pretrain_config(cfg: Mapping[str, Any], source: str = "pretrain config"
                          ) -> tuple[dict[str, Any], PretrainArgs]:
    """A pre-training config -> (``model_args`` as given, checked ``train_args``).

    Errors are :class:`ConfigError` prefixed with ``source`` (the file name).
    """
    try:
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"a config is a mapping, got {type(cfg).__name__}")
        unknown = sorted(str(k) for k in set(cfg) - set(PRETRAIN_SECTIONS))
        if unknown:
            raise ConfigError(f"unknown top-level key(s) {unknown}; valid: "
                              f"{list(PRETRAIN_SECTIONS)}")
        model_args = cfg.get("model_args") or {}
        if not isinstance(model_args, Mapping):
            raise ConfigError(f"model_args: expected a mapping of HubertConfig fields, got "
                              f"{model_args!r}")
        return dict(model_args), parse_train_args(cfg.get("train_args"))
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
