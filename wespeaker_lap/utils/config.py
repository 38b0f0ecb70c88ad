"""Training configuration in WeSpeaker's grammar: load, override, validate, save.

A config is a YAML mapping with a flat header (``exp_dir``, ``num_epochs``,
``seed``, ...) followed by ``<name>`` / ``<name>_args`` pairs (``model`` /
``model_args``, ``optimizer`` / ``optimizer_args``, ...). Unlike WeSpeaker's
``parse_config_or_kwargs``, nothing is trusted:

* every top-level key must be in :data:`TOP_LEVEL_KEYS`;
* every key of a section (``model_args``, ``optimizer_args``, ...) must be
  accepted by what the section configures: the constructor of the registered
  class it names (``model_args`` against ``get_speaker_model(model)``,
  ``frontend_args`` against the frontend, ``optimizer_args`` against the
  ``torch.optim`` class, ...), or an explicit key set (:data:`SECTION_KEYS`);
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
from wespeaker_lap.frontend.lora import LORA_ARGS_KEYS, check_lora_config, parse_lora_args
from wespeaker_lap.io.files import atomic_write, read_yaml, yaml_load
from wespeaker_lap.models import PROJECTIONS, SPEAKER_MODELS
from wespeaker_lap.registry import Registry, accepted_keywords
from wespeaker_lap.utils.executor import LOSSES
from wespeaker_lap.utils.schedulers import MARGIN_SCHEDULERS, OPTIMIZERS, SCHEDULERS

# --------------------------------------------------------------------------- schema
#: Top-level keys and what they mean. Sections (dict values) are listed with a
#: trailing ``(section)``; their keys are checked by :data:`SECTION_KEYS` or a
#: resolver in :data:`SECTION_RESOLVERS`.
TOP_LEVEL_KEYS: dict[str, str] = {
    # ---- WeSpeaker header
    "exp_dir": "experiment directory: models/, config.yaml, train.log, tensorboard/",
    "gpus": "WeSpeaker compatibility only: devices come from torchrun (LOCAL_RANK) "
    "and CUDA_VISIBLE_DEVICES",
    "num_avg": "number of last checkpoints average_model averages (and train.py always keeps)",
    "enable_amp": "mixed precision on GPU (and bf16 autocast on CPU)",
    "seed": "random seed; the model is initialised with it on every rank, "
    "training randomness uses seed + rank",
    "num_epochs": "number of training epochs",
    "save_epoch_interval": "write models/model_{epoch}.pt every this many epochs "
    "(and the last num_avg epochs)",
    "log_batch_interval": "log loss/acc/lr/margin every this many optimiser steps",
    # ---- data (WeSpeaker passes these on the command line)
    "data_type": "raw | shard: format of train_data",
    "train_data": "raw.list or shard.list of the training set",
    "train_label": "utt2spk of the training set (speaker ids and utterance count)",
    "reverb_data": "RIR list for reverberation (null: none)",
    "noise_data": "noise list for additive noise (null: none)",
    # ---- initialisation / resume
    "checkpoint": "resume: models/model_{epoch}.pt or models/state_{epoch}.pt of this "
    "exp_dir, or 'latest'",
    "model_init": "initialise weights from a trained checkpoint (phase 2/3: the previous "
    "phase's avg_model.pt); the epoch count starts at 1",
    # ---- additions of this toolkit
    "amp_dtype": "bfloat16 | float16: autocast dtype when enable_amp (float16 uses a "
    "GradScaler; CPU supports bfloat16 only)",
    "accum_grad": "micro-batches accumulated per optimiser step",
    "grad_clip": "clip the global gradient norm to this value (null or 0: off)",
    "lr_reference_batch": "global batch at which the configured learning rates hold; "
    "lr is scaled by world_size * batch_size * accum_grad / lr_reference_batch "
    "(null: no scaling)",
    "keep_last_states": "how many models/state_{epoch}.pt resume files to keep",
    # ---- <name> / <name>_args sections
    "dataloader_args": "(section) torch DataLoader settings",
    "dataset_args": "(section) data pipeline settings",
    "frontend": "frontend registry name (ssl)",
    "frontend_args": "(section) frontend constructor arguments",
    "model": "speaker backend registry name",
    "model_args": "(section) backend constructor arguments",
    "projection_args": "(section) classification head: project_type + its arguments",
    "margin_scheduler": "margin scheduler name",
    "margin_update": "(section) margin scheduler arguments",
    "loss": "loss name (CrossEntropyLoss)",
    "loss_args": "(section) loss constructor arguments",
    "optimizer": "SGD | Adam | AdamW",
    "optimizer_args": "(section) optimiser arguments except lr (set by the scheduler)",
    "scheduler": "learning-rate scheduler name",
    "scheduler_args": "(section) scheduler arguments",
    "finetune_args": "(section) joint fine-tuning of the SSL model (phase 2/3): "
    "layer_decay, frontend_lr_ratio, l2sp_alpha",
    "lora_args": "(section) LoRA on the SSL Transformer (phase 2/3, with frontend_args.frozen: "
    "false): rank, alpha, dropout, target_modules; only LoRA and backend weights train",
}

#: Defaults filled in for header keys a config leaves out (WeSpeaker's defaults
#: where it has one). Sections default to empty dicts.
DEFAULTS: dict[str, Any] = {
    "gpus": None,
    "num_avg": 10,
    "enable_amp": False,
    "amp_dtype": "bfloat16",
    "seed": 42,
    "save_epoch_interval": 1,
    "log_batch_interval": 100,
    "data_type": "raw",
    "train_data": None,
    "train_label": None,
    "reverb_data": None,
    "noise_data": None,
    "checkpoint": None,
    "model_init": None,
    "accum_grad": 1,
    "grad_clip": None,
    "lr_reference_batch": None,
    "keep_last_states": 1,
    "frontend": "ssl",
    "loss": "CrossEntropyLoss",
    "optimizer": "Adam",
    "scheduler": "WarmupCosine",
    "margin_scheduler": "MarginScheduler",
}

#: Keys every config must give.
REQUIRED_KEYS = ("exp_dir", "num_epochs", "model")

#: Sections every training config must give (checked before the defaults fill them).
REQUIRED_SECTIONS = {
    "frontend_args": "the SSL model: model_name_or_path (a save_pretrained directory or hub id) "
    "or config (a random model)",
    "model_args": "the backend's sizes (embed_dim, ...)",
    "scheduler_args": "initial_lr and final_lr",
}


def _optional(check: Callable[..., Any], **kw: Any) -> Callable[[str, Any], Any]:
    return lambda where, v: None if v is None else check(where, v, **kw)


def _path(where: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{where}: expected a path, got {value!r}")
    return str(value)


#: Type and range of each header key (sections are checked by their schema).
HEADER_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "exp_dir": _path,
    "num_epochs": lambda w, v: check_int(w, v, lo=1),
    "num_avg": lambda w, v: check_int(w, v, lo=1),
    "seed": lambda w, v: check_int(w, v, lo=0),
    "save_epoch_interval": lambda w, v: check_int(w, v, lo=1),
    "log_batch_interval": lambda w, v: check_int(w, v, lo=1),
    "accum_grad": lambda w, v: check_int(w, v, lo=1),
    "keep_last_states": lambda w, v: check_int(w, v, lo=1),
    "enable_amp": check_bool,
    "amp_dtype": lambda w, v: check_str(w, v, ("bfloat16", "float16")),
    "data_type": lambda w, v: check_str(w, v, ("raw", "shard")),
    "grad_clip": _optional(check_number, lo=0),
    "lr_reference_batch": _optional(check_int, lo=1),
    **{k: _optional(_path) for k in ("train_data", "train_label", "reverb_data", "noise_data",
                                      "checkpoint", "model_init")},
}

#: Smallest training batch: BatchNorm in the backends needs two utterances per batch.
MIN_TRAIN_BATCH = 2

#: Sections whose valid keys are a fixed set.
SECTION_KEYS: dict[str, Collection[str]] = {
    "dataloader_args": DATALOADER_ARGS_KEYS,
    # see wespeaker_lap.utils.schedulers.param_groups and L2SP
    "finetune_args": ("layer_decay", "frontend_lr_ratio", "l2sp_alpha"),
    "lora_args": LORA_ARGS_KEYS,  # see wespeaker_lap.frontend.lora
}


#: Name -> class registries of the ``<name>`` keys.
REGISTRIES: dict[str, Registry] = {
    "model": SPEAKER_MODELS,
    "frontend": FRONTENDS,
    "projection_args.project_type": PROJECTIONS,
    "margin_scheduler": MARGIN_SCHEDULERS,
    "optimizer": OPTIMIZERS,
    "scheduler": SCHEDULERS,
    "loss": LOSSES,
}


#: ``<section>: (the key naming its class, constructor arguments a config may not give)``.
SECTION_CLASSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "model_args": ("model", ()),
    "frontend_args": ("frontend", ()),
    "projection_args": ("projection_args.project_type", ("embed_dim", "num_class")),
    "margin_update": ("margin_scheduler", ("projection", "epoch_iter")),
    "optimizer_args": ("optimizer", ("params", "lr")),
    "scheduler_args": ("scheduler", ("optimizer", "num_epochs", "epoch_iter", "scale_ratio")),
    "loss_args": ("loss", ()),
}

#: Why train.py fills the excluded arguments itself (named in the error).
FILLED_BY_TRAIN = {
    "embed_dim": "the backend's embed_dim",
    "num_class": "the speakers in train_label (x speed-perturbation blocks)",
    "epoch_iter": "the utterance count, world size, batch size and accum_grad",
    "num_epochs": "num_epochs",
    "scale_ratio": "lr_reference_batch (see utils/distributed.py)",
    "lr": "scheduler_args.initial_lr",
    "projection": "the model's projection head",
}


def _named(cfg: Mapping[str, Any], key: str) -> Any:
    if key == "projection_args.project_type":
        name = (cfg.get("projection_args") or {}).get("project_type")
    else:
        name = cfg.get(key, DEFAULTS.get(key))
    return name


def check_names(cfg: Mapping[str, Any]) -> None:
    """Every ``<name>`` key (model, optimizer, ...) must be in its registry."""
    for key, registry in REGISTRIES.items():
        name = _named(cfg, key)
        if name is None:
            if key == "projection_args.project_type":
                raise ConfigError(
                    f"projection_args needs a 'project_type' (one of {sorted(registry)})"
                )
            continue
        if name not in registry:
            raise ConfigError(f"{key}: {registry.unknown(name)}")


def _section_class_keys(cfg: Mapping[str, Any], section: str) -> set[str] | None:
    key, exclude = SECTION_CLASSES[section]
    cls = REGISTRIES[key][_named(cfg, key)]
    keys = accepted_keywords(cls, exclude=exclude)
    if keys is not None and section == "projection_args":
        keys.add("project_type")
    return keys


def _dataset_keys(cfg: Mapping[str, Any]) -> set[str] | None:
    return set(DATASET_ARGS_KEYS)


#: Sections whose valid keys depend on the config (the registered class they configure).
SECTION_RESOLVERS: dict[str, Callable[[Mapping[str, Any]], set[str] | None]] = {
    **{s: (lambda cfg, s=s: _section_class_keys(cfg, s)) for s in SECTION_CLASSES},
    "dataset_args": _dataset_keys,
}

#: Deeper checks of a section's values, run after its keys are known to be valid.
SECTION_CHECKS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "dataset_args": parse_dataset_args,
    "dataloader_args": parse_dataloader_args,
    "lora_args": parse_lora_args,
}


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
    key, _ = SECTION_CLASSES[section]
    cls = REGISTRIES[key][_named(cfg, key)]
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
    """Types and ranges of the header keys (:data:`HEADER_CHECKS`) and of the training values
    the trainer reads from sections (batch size, learning rates)."""
    for key, check in HEADER_CHECKS.items():
        if key in cfg:
            check(key, cfg[key])
    for section, why in REQUIRED_SECTIONS.items():
        if section != "model_args" and not cfg.get(section):
            raise ConfigError(f"config section {section!r} is missing or empty; it gives {why}")
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
    if section in SECTION_KEYS:
        return set(SECTION_KEYS[section])
    if section in SECTION_RESOLVERS:
        return SECTION_RESOLVERS[section](cfg)
    raise ConfigError(f"{section!r} is not a section")


def is_section(key: str) -> bool:
    return key in SECTION_KEYS or key in SECTION_RESOLVERS


def check_top_level(cfg: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` on a top-level key not in :data:`TOP_LEVEL_KEYS`."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"a config is a mapping, got {type(cfg).__name__}")
    for key in cfg:
        if key not in TOP_LEVEL_KEYS:
            raise _unknown("config key", str(key), TOP_LEVEL_KEYS)


def validate_config(cfg: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` on the first unknown or missing key.

    Checks the top-level keys, the required keys, the section types and every
    section's keys against its schema.
    """
    check_top_level(cfg)
    missing = [k for k in REQUIRED_KEYS if cfg.get(k) is None]
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
        valid = section_keys(cfg, key)
        if valid is not None:
            for sub in value:
                if sub in valid:
                    continue
                if key in SECTION_CLASSES and sub in SECTION_CLASSES[key][1] \
                        and sub in FILLED_BY_TRAIN:
                    raise ConfigError(
                        f"config key '{key}.{sub}' is filled in by train.py from "
                        f"{FILLED_BY_TRAIN[sub]}; remove it from the config"
                    )
                raise _unknown("config key", f"{key}.{sub}", {f"{key}.{v}" for v in valid})
        if key in SECTION_CHECKS:
            SECTION_CHECKS[key](value)
        if key in SECTION_CLASSES:
            check_section_types(cfg, key)
    check_header(cfg)
    check_lora_config(cfg)


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
        if parts[0] not in TOP_LEVEL_KEYS:
            raise _unknown("override", "--" + key, ["--" + k for k in TOP_LEVEL_KEYS])
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
    for key, value in DEFAULTS.items():
        out.setdefault(key, value)
    for key in TOP_LEVEL_KEYS:
        if is_section(key) and out.get(key) is None:
            out[key] = {}
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
        missing = [k for k in REQUIRED_SECTIONS if merged.get(k) is None]
        if missing:
            raise ConfigError(f"config section(s) {missing} missing; "
                              + "; ".join(f"{k} gives {REQUIRED_SECTIONS[k]}" for k in missing))
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


def _plain(x: Any) -> Any:
    """Deep-convert tuples and paths so that yaml.safe_dump accepts the config."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    return x
