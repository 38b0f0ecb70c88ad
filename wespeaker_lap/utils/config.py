"""Training configuration in WeSpeaker's grammar: load, override, validate, save.

A config is a YAML mapping with a flat header (``exp_dir``, ``num_epochs``,
``seed``, ...) followed by ``<name>`` / ``<name>_args`` pairs (``model`` /
``model_args``, ``optimizer`` / ``optimizer_args``, ...). Unlike WeSpeaker's
``parse_config_or_kwargs``, nothing is trusted:

* every top-level key must be in :data:`SCHEMA`, the one table of the keys
  (a :class:`KeySpec` each: name, default, check, one-line doc);
* every key of a section (``model_args``, ``optimizer_args``, ...) must be
  accepted by what the section configures: the constructor of the registered
  class it names (``model_args`` against ``get_speaker_model(model)``,
  ``frontend_args`` against the frontend, ``optimizer_args`` against the
  ``torch.optim`` class, ...), or an explicit key set (``KeySpec.keys``);
* command-line overrides (``--model_args.n_head 8``, ``--num_epochs=3``) obey
  the same schema; their values are parsed as YAML scalars (``8`` -> int,
  ``1e-3`` -> float, ``null`` -> None, ``[1, 2]`` -> list).

An unknown key is a :class:`ConfigError` naming it and the closest valid key.

>>> cfg = merge_overrides({"num_epochs": 40, "model_args": {"n_head": 16}},
...                       ["--model_args.n_head", "8", "--num_epochs=3"])
>>> cfg["num_epochs"], cfg["model_args"]["n_head"]
(3, 8)
"""

from __future__ import annotations

import copy
import difflib
import inspect
import os
import platform
import shlex
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wespeaker_lap.checks import (
    ConfigError,
    check_bool,
    check_int,
    check_number,
    check_str,
)
from wespeaker_lap.dataset.schema import (
    DATALOADER_ARGS_KEYS,
    DATASET_ARGS_KEYS,
    parse_dataloader_args,
    parse_dataset_args,
)
from wespeaker_lap.frontend import FRONTENDS
from wespeaker_lap.frontend.loading import SSL_FAMILIES
from wespeaker_lap.frontend.lora import LORA_ARGS_KEYS, check_lora_config, parse_lora_args
from wespeaker_lap.io.files import atomic_write, read_yaml, yaml_load
from wespeaker_lap.models import PROJECTIONS, SPEAKER_MODELS
from wespeaker_lap.registry import Registry, accepted_keywords
from wespeaker_lap.utils.executor import LOSSES
from wespeaker_lap.utils.schedulers import MARGIN_SCHEDULERS, OPTIMIZERS, SCHEDULERS
from wespeaker_lap.utils.validation import VALID_ARGS_KEYS, parse_valid_args


# --------------------------------------------------------------------------- schema
def _optional(check: Callable[..., Any], **kw: Any) -> Callable[[str, Any], Any]:
    return lambda where, v: None if v is None else check(where, v, **kw)


def _path(where: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{where}: expected a path, got {value!r}")
    return str(value)


def _int_from(lo: int) -> Callable[[str, Any], int]:
    return lambda where, v: check_int(where, v, lo=lo)


def _one_of(*choices: str) -> Callable[[str, Any], str]:
    return lambda where, v: check_str(where, v, choices)


def _bool_or_auto(where: str, value: Any) -> bool | str:
    if value == "auto":
        return value
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true, false or auto, got {value!r}")
    return value


def _num_from(lo: float, lo_open: bool = False, hi: float | None = None,
              hi_open: bool = False) -> Callable[[str, Any], float]:
    return lambda where, v: check_number(where, v, lo=lo, lo_open=lo_open, hi=hi,
                                         hi_open=hi_open)


#: Sizes of a backend: each a positive int (``heads: 0`` divides by zero later).
_SIZES = {k: _int_from(1) for k in ("embed_dim", "lap_dim", "heads", "head_nb",
                                    "compression_dim", "channels", "num_blocks", "context")}
_DROPOUTS = {k: _num_from(0, hi=1, hi_open=True) for k in ("score_dropout", "frame_dropout")}
#: Sizes of a random SSL model given as frontend_args.config (a transformers config dict).
_SSL_SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def _ssl_config(where: str, value: Any) -> Any:
    """``frontend_args.config``: a family name or a mapping whose sizes are positive ints
    and whose ``model_type`` is a supported SSL family."""
    if isinstance(value, Mapping):
        kind = value.get("model_type")
        if kind is not None and kind not in SSL_FAMILIES:
            raise ConfigError(f"{where}.model_type: unsupported SSL model type {kind!r}; "
                              f"supported: {sorted(SSL_FAMILIES)}")
        for k in _SSL_SIZES:
            if k in value:
                check_int(f"{where}.{k}", value[k], lo=1)
    return value


#: Where train.py takes the iterations per epoch from (named in the error).
_EPOCH_ITER = "the utterance count, world size, batch size and accum_grad"


@dataclass(frozen=True)
class KeySpec:
    """One top-level config key: its name, default, check and one-line meaning.

    name: the key. doc: what it means, one line (``--print_config`` writes it as
    the key's comment; a required section's error says what it gives).
    default: filled in when a config leaves the key out (sections: ``{}``).
    check: ``check(where, value)`` of a header value's type and range (None: unchecked).
    required: a config must give it (sections: before the defaults fill them).
    section: a ``<name>_args`` mapping whose keys are checked, by one of
      ``keys`` (a fixed set of valid keys) or ``class_key`` (the key naming the
      registered class it configures, ``model``, or an entry of the section
      itself, ``projection_args.project_type``: the valid keys are that class's
      constructor arguments, less those in ``filled_by_train``, which names where
      train.py takes each of them from).
    registry: the registry a ``<name>`` key's value (or ``class_key``'s entry of
      the section) must name.
    parse: a section's deeper check of its values (``parse_dataset_args``).
    ranges: ``{entry: check(where, value)}``, the range of a section's entries
      where the class's constructor would take a wrong one (a negative
      ``final_margin``, ``heads: 0``) and fail later with a traceback.
    """

    name: str
    doc: str
    default: Any = None
    check: Callable[[str, Any], Any] | None = None
    required: bool = False
    section: bool = False
    keys: Collection[str] | None = None
    class_key: str | None = None
    filled_by_train: Mapping[str, str] = field(default_factory=dict)
    registry: Registry | None = None
    parse: Callable[[Mapping[str, Any]], Any] | None = None
    ranges: Mapping[str, Callable[[str, Any], Any]] = field(default_factory=dict)


#: The config schema: every top-level key, in the order ``--print_config`` writes them.
SCHEMA: tuple[KeySpec, ...] = (
    # ---- WeSpeaker header
    KeySpec("exp_dir", "experiment directory: models/, config.yaml, train.log, tensorboard/",
            check=_path, required=True),
    KeySpec("gpus", "WeSpeaker compatibility only: devices come from torchrun (LOCAL_RANK) "
            "and CUDA_VISIBLE_DEVICES"),
    KeySpec("num_avg", "number of last checkpoints average_model averages (and train.py "
            "always keeps)", 10, _int_from(1)),
    KeySpec("enable_amp", "mixed precision on GPU (and bf16 autocast on CPU); auto: bfloat16 "
            "autocast where a start-up probe finds it faster (GPUs with bf16, CPUs with fast "
            "bf16 kernels), else off", False, _bool_or_auto),
    KeySpec("seed", "random seed; the model is initialised with it on every rank, training "
            "randomness uses seed + rank", 42, _int_from(0)),
    KeySpec("num_epochs", "number of training epochs", check=_int_from(1), required=True),
    KeySpec("save_epoch_interval", "write models/model_{epoch}.pt every this many epochs "
            "(and the last num_avg epochs)", 1, _int_from(1)),
    KeySpec("log_batch_interval", "log loss/acc/lr/margin every this many optimiser steps",
            100, _int_from(1)),
    # ---- data (WeSpeaker passes these on the command line)
    KeySpec("data_type", "raw | shard: format of train_data", "raw", _one_of("raw", "shard")),
    KeySpec("train_data", "raw.list or shard.list of the training set", check=_optional(_path)),
    KeySpec("train_label", "utt2spk of the training set (speaker ids and utterance count)",
            check=_optional(_path)),
    KeySpec("reverb_data", "RIR list for reverberation (null: none)", check=_optional(_path)),
    KeySpec("noise_data", "noise list for additive noise (null: none)", check=_optional(_path)),
    KeySpec("valid_data", "Kaldi data dir of a validation set, speakers disjoint from "
            "train_label's; embedded and scored every valid_args.every_n_epochs (null: no "
            "validation)", check=_optional(_path)),
    KeySpec("valid_trials", "trial list of valid_data (Kaldi or VoxCeleb format, labelled)",
            check=_optional(_path)),
    # ---- initialisation / resume
    KeySpec("checkpoint", "resume: models/model_{epoch}.pt or models/state_{epoch}.pt of this "
            "exp_dir, or 'latest'", check=_optional(_path)),
    KeySpec("model_init", "initialise weights from a trained checkpoint (phase 2/3: the "
            "previous phase's avg_model.pt); the epoch count starts at 1",
            check=_optional(_path)),
    KeySpec("model_init_strict", "refuse a model_init whose weights are another model's "
            "(mismatched, unexpected or missing backend tensors); false: load what fits",
            True, check_bool),
    # ---- additions of this toolkit
    KeySpec("amp_dtype", "bfloat16 | float16: autocast dtype when enable_amp (float16 uses a "
            "GradScaler; CPU supports bfloat16 only)", "bfloat16",
            _one_of("bfloat16", "float16")),
    KeySpec("accum_grad", "micro-batches accumulated per optimiser step", 1, _int_from(1)),
    KeySpec("grad_clip", "clip the global gradient norm to this value (null or 0: off)",
            check=_optional(check_number, lo=0)),
    KeySpec("lr_reference_batch", "global batch at which the configured learning rates hold; "
            "lr is scaled by world_size * batch_size * accum_grad / lr_reference_batch "
            "(null: no scaling)", check=_optional(check_int, lo=1)),
    KeySpec("keep_last_states", "how many models/state_{epoch}.pt resume files to keep", 1,
            _int_from(1)),
    KeySpec("keep_best", "with valid_data: keep only the model_{epoch}.pt of the keep_best "
            "epochs with the lowest validation EER, plus the last num_avg epochs and the newest "
            "(null: keep every saved one)", check=_optional(check_int, lo=1)),
    KeySpec("feature_cache_epochs", "with a frozen SSL model: keep its hidden states of the "
            "first N epochs' crops in memory and train every later epoch on batches drawn from "
            "them, the backend alone (wespeaker_lap.utils.feature_cache; 0: off)", 0,
            _int_from(0)),
    KeySpec("feature_cache_max_gb", "the feature cache's host memory limit per process (GiB), "
            "checked before training", 16, _num_from(0, lo_open=True)),
    # ---- <name> / <name>_args sections
    KeySpec("valid_args", "validation during training (with valid_data): every_n_epochs "
            "(default 1; validate after every N epochs and after the last), batch_size (16), "
            "max_batch_seconds (240), max_utts (null: every utterance the trials name)",
            section=True,
            keys=VALID_ARGS_KEYS, parse=parse_valid_args),
    KeySpec("dataloader_args", "torch DataLoader settings (batch_size is per process)",
            section=True, keys=DATALOADER_ARGS_KEYS, parse=parse_dataloader_args),
    KeySpec("dataset_args", "data pipeline settings (wespeaker_lap.dataset.schema)",
            section=True, keys=DATASET_ARGS_KEYS, parse=parse_dataset_args),
    KeySpec("frontend", "frontend registry name (ssl)", "ssl", registry=FRONTENDS),
    KeySpec("frontend_args", "the SSL model: model_name_or_path (a save_pretrained directory "
            "or hub id) or config (a random model), and the frontend's other arguments",
            required=True, section=True, class_key="frontend", ranges={"config": _ssl_config}),
    KeySpec("model", "speaker backend registry name", required=True, registry=SPEAKER_MODELS),
    KeySpec("model_args", "the backend's constructor arguments (embed_dim, ...)",
            required=True, section=True, class_key="model", ranges={**_SIZES, **_DROPOUTS}),
    KeySpec("projection_args", "classification head: project_type + its arguments",
            section=True, class_key="projection_args.project_type", registry=PROJECTIONS,
            filled_by_train={"embed_dim": "the backend's embed_dim",
                             "num_class": "the speakers in train_label (x speed-perturbation "
                             "blocks)"},
            ranges={"scale": _num_from(0, lo_open=True), "margin": _num_from(0),
                    "K": _int_from(1), "k_top": _int_from(0), "mp": _num_from(0)}),
    KeySpec("margin_scheduler", "margin scheduler name", "MarginScheduler",
            registry=MARGIN_SCHEDULERS),
    KeySpec("margin_update", "margin scheduler arguments", section=True,
            class_key="margin_scheduler",
            filled_by_train={"projection": "the model's projection head",
                             "epoch_iter": _EPOCH_ITER},
            ranges={"initial_margin": _num_from(0), "final_margin": _num_from(0),
                    "increase_start_epoch": _int_from(0), "fix_start_epoch": _int_from(0)}),
    KeySpec("loss", "loss name (CrossEntropyLoss)", "CrossEntropyLoss", registry=LOSSES),
    KeySpec("loss_args", "loss constructor arguments", section=True, class_key="loss"),
    KeySpec("optimizer", "SGD | Adam | AdamW", "Adam", registry=OPTIMIZERS),
    KeySpec("optimizer_args", "optimiser arguments except lr (set by the scheduler)",
            section=True, class_key="optimizer",
            filled_by_train={"params": "the model's parameter groups",
                             "lr": "scheduler_args.initial_lr"},
            ranges={"weight_decay": _num_from(0), "momentum": _num_from(0, hi=1)}),
    KeySpec("scheduler", "learning-rate scheduler name", "WarmupCosine", registry=SCHEDULERS),
    KeySpec("scheduler_args", "the learning-rate schedule: initial_lr and final_lr, warm-up",
            required=True, section=True, class_key="scheduler",
            filled_by_train={"optimizer": "optimizer and optimizer_args",
                             "num_epochs": "num_epochs", "epoch_iter": _EPOCH_ITER,
                             "scale_ratio": "lr_reference_batch (see utils/distributed.py)"}),
    # see wespeaker_lap.utils.schedulers.param_groups and L2SP
    KeySpec("finetune_args", "joint fine-tuning of the SSL model (phase 2/3): layer_decay, "
            "frontend_lr_ratio, l2sp_alpha", section=True,
            keys=("layer_decay", "frontend_lr_ratio", "l2sp_alpha")),
    KeySpec("lora_args", "LoRA on the SSL Transformer (phase 2/3, with frontend_args.frozen: "
            "false): rank, alpha, dropout, target_modules; only LoRA and backend weights "
            "train", section=True, keys=LORA_ARGS_KEYS, parse=parse_lora_args),
)

#: The specs by key name.
SPECS: dict[str, KeySpec] = {spec.name: spec for spec in SCHEMA}
assert len(SPECS) == len(SCHEMA), "a key is in SCHEMA twice"

#: Smallest training batch: BatchNorm in the backends needs two utterances per batch.
MIN_TRAIN_BATCH = 2


def _class_name(cfg: Mapping[str, Any], key: str) -> Any:
    """The registry name that ``key`` gives: a top-level ``<name>`` key (or its default),
    or ``<section>.<entry>``."""
    if "." in key:
        section, entry = key.split(".", 1)
        return (cfg.get(section) or {}).get(entry)
    return cfg.get(key, SPECS[key].default)


def _registry_of(key: str) -> Registry:
    spec = SPECS[key.split(".", 1)[0]]
    assert spec.registry is not None, f"{key} names no registry"
    return spec.registry


def check_names(cfg: Mapping[str, Any]) -> None:
    """Every ``<name>`` key (model, optimizer, ...) must be in its registry."""
    for spec in SCHEMA:
        if spec.registry is None:
            continue
        key = spec.class_key if spec.section else spec.name
        name = _class_name(cfg, key)
        if name is None:
            if spec.section:
                raise ConfigError(f"{spec.name} needs a {key.split('.', 1)[1]!r} "
                                  f"(one of {sorted(spec.registry)})")
            continue
        if name not in spec.registry:
            raise ConfigError(f"{key}: {spec.registry.unknown(name)}")


def _section_class(cfg: Mapping[str, Any], spec: KeySpec) -> Any:
    """The registered class a class-configuring section's arguments go to."""
    return _registry_of(spec.class_key)[_class_name(cfg, spec.class_key)]


def _section_class_keys(cfg: Mapping[str, Any], spec: KeySpec) -> set[str] | None:
    keys = accepted_keywords(_section_class(cfg, spec), exclude=tuple(spec.filled_by_train))
    if keys is not None and "." in spec.class_key:
        keys.add(spec.class_key.split(".", 1)[1])  # the entry naming the class
    return keys


_SIMPLE_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "None": (type(None),),
}


def _allowed_types(param: inspect.Parameter) -> tuple[type, ...] | None:
    """The plain types a constructor argument takes, from its annotation or default.

    None when the annotation is not made of int, float, bool, str and None only
    (then nothing is checked).
    """
    ann = param.annotation
    if ann is not inspect.Parameter.empty:
        if isinstance(ann, type):
            ann = ann.__name__
        if not isinstance(ann, str):
            return None
        parts = [a.strip() for a in ann.replace("Optional[", "None | ").rstrip("]").split("|")]
        if not all(a in _SIMPLE_TYPES for a in parts):
            return None
        return tuple(t for a in parts for t in _SIMPLE_TYPES[a])
    default = param.default
    if default is inspect.Parameter.empty or default is None:
        return None
    # no annotation: lenient between numbers (an int default may stand for a float)
    return {bool: (bool,), int: (int, float), float: (int, float), str: (str,)}.get(type(default))


def check_section_types(cfg: Mapping[str, Any], section: str) -> None:
    """Each value of a class-configuring section has the type its constructor argument takes.

    ``model_args.heads: "4"`` is a ConfigError naming the key, before anything is
    built (a bool is not an int; an int is a float).
    """
    cls = _section_class(cfg, SPECS[section])
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return
    for sub, value in (cfg.get(section) or {}).items():
        param = params.get(sub)
        if param is None:
            continue
        allowed = _allowed_types(param)
        if allowed is None:
            continue
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
        if not ok:
            want = " or ".join(sorted({t.__name__ if t is not type(None) else "null"
                                       for t in allowed if not (t is int and float in allowed)}))
            raise ConfigError(f"{section}.{sub}: expected {want} (as "
                              f"{getattr(cls, '__name__', cls)} takes it), got {value!r}")


def check_header(cfg: Mapping[str, Any]) -> None:
    """Types and ranges of the header keys (each :class:`KeySpec`'s ``check``) and of the
    training values the trainer reads from sections (batch size, learning rates)."""
    for spec in SCHEMA:
        if spec.check is not None and spec.name in cfg:
            spec.check(spec.name, cfg[spec.name])
    for spec in SCHEMA:  # model_args may be empty: a backend with default sizes
        if spec.section and spec.required and spec.name != "model_args" \
                and not cfg.get(spec.name):
            raise ConfigError(f"config section {spec.name!r} is missing or empty; it gives "
                              f"{spec.doc}")
    fa = cfg["frontend_args"]
    if fa.get("model_name_or_path") is None and fa.get("config") is None:
        raise ConfigError("frontend_args: give model_name_or_path (a save_pretrained directory "
                          "or hub id) or config (a random SSL model)")
    sched = cfg["scheduler_args"]
    for k in ("initial_lr", "final_lr"):
        if k not in sched:
            raise ConfigError(f"scheduler_args.{k} is required")
    check_number("scheduler_args.initial_lr", sched["initial_lr"], lo=0, lo_open=True)
    check_number("scheduler_args.final_lr", sched["final_lr"], lo=0)
    if "warm_up_epoch" in sched:
        check_number("scheduler_args.warm_up_epoch", sched["warm_up_epoch"], lo=0)
    bs = (cfg.get("dataloader_args") or {}).get("batch_size")
    if bs is not None:
        check_int("dataloader_args.batch_size", bs)
        if bs < MIN_TRAIN_BATCH:
            raise ConfigError(f"dataloader_args.batch_size: must be >= {MIN_TRAIN_BATCH} for "
                              f"training (BatchNorm needs two utterances per batch), got {bs}")


def _unknown(kind: str, key: str, valid: Collection[str]) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1],
                                      [v.rsplit(".", 1)[-1] for v in valid], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown {kind} {key!r}{hint}; valid: {sorted(valid)}")


def section_keys(cfg: Mapping[str, Any], section: str) -> set[str] | None:
    """Valid keys of ``section`` for this config; None when anything goes (``**kwargs``)."""
    if not is_section(section):
        raise ConfigError(f"{section!r} is not a section")
    spec = SPECS[section]
    if spec.keys is not None:
        return set(spec.keys)
    return _section_class_keys(cfg, spec)


def is_section(key: str) -> bool:
    return key in SPECS and SPECS[key].section


def check_top_level(cfg: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` on a top-level key not in :data:`SCHEMA`."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"a config is a mapping, got {type(cfg).__name__}")
    for key in cfg:
        if key not in SPECS:
            raise _unknown("config key", str(key), SPECS)


def validate_config(cfg: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` on the first unknown or missing key.

    Checks the top-level keys, the required keys, the section types and every
    section's keys against its schema.
    """
    check_top_level(cfg)
    missing = [s.name for s in SCHEMA if s.required and not s.section and cfg.get(s.name) is None]
    if missing:
        raise ConfigError(f"config is missing required key(s) {missing}")
    for key, value in cfg.items():
        if not is_section(key) and isinstance(value, dict):
            raise ConfigError(f"config key {key!r} takes a value, not a mapping")
        if is_section(key) and value is not None and not isinstance(value, Mapping):
            raise ConfigError(f"config section {key!r} must be a mapping, got {value!r}")
    check_names(cfg)
    for key, value in cfg.items():
        if not is_section(key) or not value:
            continue
        spec = SPECS[key]
        valid = section_keys(cfg, key)
        if valid is not None:
            for sub in value:
                if sub in valid:
                    continue
                if sub in spec.filled_by_train:
                    raise ConfigError(
                        f"config key '{key}.{sub}' is filled in by train.py from "
                        f"{spec.filled_by_train[sub]}; remove it from the config"
                    )
                raise _unknown("config key", f"{key}.{sub}", {f"{key}.{v}" for v in valid})
        if spec.parse is not None:
            spec.parse(value)
        if spec.class_key is not None:
            check_section_types(cfg, key)
        for sub, check in spec.ranges.items():
            if value.get(sub) is not None:
                check(f"{key}.{sub}", value[sub])
    check_header(cfg)
    check_lora_config(cfg)
    check_valid_keys(cfg)


def check_valid_keys(cfg: Mapping[str, Any]) -> None:
    """``valid_data`` and ``valid_trials`` come together; ``keep_best`` needs them."""
    if bool(cfg.get("valid_data")) != bool(cfg.get("valid_trials")):
        given, missing = (("valid_data", "valid_trials") if cfg.get("valid_data")
                          else ("valid_trials", "valid_data"))
        raise ConfigError(f"{given} is given but {missing} is not: validation needs both "
                          "(--valid_data DIR --valid_trials FILE)")
    if cfg.get("keep_best") is not None and not cfg.get("valid_data"):
        raise ConfigError("keep_best chooses checkpoints by validation EER: it needs "
                          "--valid_data and --valid_trials")


# ------------------------------------------------------------------------ overrides
def parse_overrides(argv: Sequence[str]) -> list[tuple[str, Any]]:
    """Parse ``--a.b value`` / ``--a.b=value`` pairs; values are YAML scalars.

    >>> parse_overrides(["--num_epochs", "3", "--model_args.n_head=8", "--x", "null"])
    [('num_epochs', 3), ('model_args.n_head', 8), ('x', None)]
    """
    out: list[tuple[str, Any]] = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("--") or len(tok) == 2:
            raise ConfigError(f"expected an override '--key value', got {tok!r}")
        if "=" in tok:
            key, raw = tok[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(argv):
                raise ConfigError(f"override {tok!r} has no value")
            key, raw = tok[2:], argv[i + 1]
            i += 2
        try:
            value = yaml_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override --{key}: cannot parse value {raw!r}: {e}") from e
        out.append((key, value))
    return out


def merge_overrides(cfg: Mapping[str, Any], argv: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``cfg`` with the overrides in ``argv`` applied (not yet validated).

    A dotted key sets one entry of a section (``model_args.n_head``); a plain key
    whose value is a mapping is merged into the section (``--model_args '{n_head: 8}'``).
    """
    cfg = copy.deepcopy(dict(cfg))
    for key, value in parse_overrides(argv):
        parts = key.split(".")
        if parts[0] not in SPECS:
            raise _unknown("override", "--" + key, ["--" + k for k in SPECS])
        if len(parts) > 2:
            # deeper keys (e.g. frontend_args.config.hidden_size) address nested mappings
            node = cfg.setdefault(parts[0], {}) or {}
            cfg[parts[0]] = node
            for p in parts[1:-1]:
                child = node.get(p)
                if child is None:
                    child = node[p] = {}
                if not isinstance(child, dict):
                    raise ConfigError(f"override --{key}: {p!r} is not a mapping")
                node = child
            node[parts[-1]] = value
        elif len(parts) == 2:
            if not is_section(parts[0]):
                raise ConfigError(f"override --{key}: {parts[0]!r} is not a section")
            section = cfg.get(parts[0]) or {}
            section[parts[1]] = value
            cfg[parts[0]] = section
        elif is_section(key) and isinstance(value, dict):
            section = cfg.get(key) or {}
            section.update(value)
            cfg[key] = section
        else:
            cfg[key] = value
    return cfg


# ------------------------------------------------------------------------ load/save
def with_defaults(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Fill the header defaults and empty sections the config leaves out."""
    out = dict(cfg)
    for spec in SCHEMA:
        if spec.section:
            if out.get(spec.name) is None:
                out[spec.name] = {}
        elif not spec.required:
            out.setdefault(spec.name, spec.default)
    return out


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read ``path``, apply ``overrides``, fill defaults and validate the result.

    Section keys are checked after the overrides, because an override may change
    what a section configures (``--model MHFA`` changes the valid ``model_args``).
    """
    raw = read_yaml(path)
    try:
        check_top_level(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    where = f"{path} with overrides {list(overrides)}" if overrides else str(path)
    try:
        merged = merge_overrides(raw, overrides)
        missing = [s.name for s in SCHEMA
                   if s.section and s.required and merged.get(s.name) is None]
        if missing:
            raise ConfigError(f"config section(s) {missing} missing; "
                              + "; ".join(f"{k} gives {SPECS[k].doc}" for k in missing))
        cfg = with_defaults(merged)
        validate_config(cfg)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return cfg


def config_header(argv: Sequence[str] | None = None) -> str:
    """YAML comment lines recording what ran: package/torch versions and the command line."""
    import torch

    import wespeaker_lap

    try:
        import transformers

        tf_version = transformers.__version__
    except ImportError:  # pragma: no cover
        tf_version = "not installed"
    argv = sys.argv[1:] if argv is None else argv
    command = shlex.join([sys.executable, "-m", "wespeaker_lap.bin.train", *argv])
    return (
        f"# wespeaker_lap {wespeaker_lap.__version__}, torch {torch.__version__}, "
        f"transformers {tf_version}, python {platform.python_version()}\n"
        f"# command: {command}\n"
    )


def save_config(cfg: Mapping[str, Any], path: str | os.PathLike,
                argv: Sequence[str] | None = None, extra_header: str = "") -> Path:
    """Write the merged config to ``path`` atomically, headed by :func:`config_header`.

    ``extra_header``: more ``#`` comment lines (train.py adds the derived sizes).
    The file loads back with :func:`load_config` (versions and command are comments).
    """
    path = Path(path)
    assert all(line.startswith("#") for line in extra_header.splitlines()), (
        f"extra_header must be YAML comment lines, got {extra_header!r}"
    )
    with atomic_write(path) as f:
        f.write(config_header(argv))
        f.write(extra_header)
        yaml.safe_dump(_plain(cfg), f, sort_keys=False, default_flow_style=False)
    return path


def format_config(cfg: Mapping[str, Any], header: str = "") -> str:
    """``cfg`` as YAML with each top-level key headed by a comment: its one-line doc.

    Keys are written in :data:`SCHEMA` order after ``header`` (``#`` comment
    lines); the text loads back (``yaml.safe_load``) to ``cfg``. What
    ``bin/train --print_config`` prints.

    >>> print(format_config({"num_epochs": 3, "loss_args": {}}), end="")
    # number of training epochs
    num_epochs: 3
    # loss constructor arguments
    loss_args: {}
    """
    unknown = [k for k in cfg if k not in SPECS]
    assert not unknown, f"format_config: keys outside the schema {unknown}"
    assert all(line.startswith("#") for line in header.splitlines()), (
        f"header must be YAML comment lines, got {header!r}"
    )
    parts = [header] if header else []
    for spec in SCHEMA:
        if spec.name in cfg:
            parts.append(f"# {spec.doc}\n")
            parts.append(yaml.safe_dump({spec.name: _plain(cfg[spec.name])}, sort_keys=False,
                                        default_flow_style=False))
    return "".join(parts)


def _plain(x: Any) -> Any:
    """Deep-convert tuples and paths so that yaml.safe_dump accepts the config."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    return x
