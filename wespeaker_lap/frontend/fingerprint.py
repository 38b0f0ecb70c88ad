"""The frozen SSL model's identity: where an experiment finds it, and a fingerprint to check it.

An experiment (``exp_dir``) does not store a frozen SSL model's weights: its
``config.yaml`` names the model (``frontend_args.model_name_or_path``, or
``frontend_args.config`` for a random model). Two rules keep that reference
honest:

* **Where.** Training writes the path absolute; a relative path in an
  experiment's ``config.yaml`` is resolved against the experiment directory,
  never against the current directory (:func:`resolve_frontend_args`).
* **What.** Training writes ``frontend.json`` beside ``config.yaml``: a
  fingerprint of the model (:func:`frontend_fingerprint`: SHA-256 of its config
  and of its weight files, or of the random model's tensors). Every load checks
  it (:func:`check_frontend_identity`) and fails, naming both fingerprints and
  paths, when the model found differs (re-run pre-training, another ``exp/ssl``);
  ``ignore=True`` (``--ignore_frontend_mismatch``) makes that a warning.

Hashing reads the weight files (a few seconds for a WavLM Base+ on a busy
CPU); a later load of the same path skips files whose size and modification
time are those recorded. A random model from a config is built once more in
float32 and its tensors hashed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from wespeaker_lap.frontend.loading import load_ssl_model
from wespeaker_lap.io.files import atomic_write
from wespeaker_lap.io.sources import is_local_path

logger = logging.getLogger(__name__)

#: The fingerprint file training writes beside ``config.yaml``.
FINGERPRINT_FILE = "frontend.json"
FINGERPRINT_FORMAT = "wespeaker_lap.frontend_fingerprint.v1"
#: Files of a ``save_pretrained`` directory that hold weights.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
#: config.json entries that change with the saving library, not with the model.
_VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path", "torch_dtype", "dtype",
                         "architectures")
_CHUNK = 1 << 22


class FrontendMismatchError(ValueError):
    """The SSL model found is not the one the experiment was trained with."""


# ------------------------------------------------------------------------- where
def absolute_frontend_args(frontend_args: Mapping[str, Any]) -> dict[str, Any]:
    """``frontend_args`` with a local ``model_name_or_path`` made absolute (training side).

    A training run loads a relative path against its current directory; the
    config it records must name the same model from anywhere.
    """
    fa = dict(frontend_args)
    name = fa.get("model_name_or_path")
    if name is not None:
        path = Path(os.fspath(name)).expanduser()
        if path.exists():
            fa["model_name_or_path"] = str(path.resolve())
    return fa


def resolve_frontend_args(frontend_args: Mapping[str, Any], exp_dir: str | os.PathLike,
                          where: str = "config.yaml") -> dict[str, Any]:
    """``frontend_args`` of an experiment with ``model_name_or_path`` resolved (load side).

    Absolute paths stay; a relative path is taken relative to ``exp_dir``; a hub
    id (``name`` or ``org/name`` not found under ``exp_dir``) stays a hub id, as
    :func:`~wespeaker_lap.frontend.loading.is_local_path` decides for every
    caller. A relative local path that does not exist under ``exp_dir`` is a
    ``FileNotFoundError`` naming both candidates.
    """
    fa = dict(frontend_args)
    raw = fa.get("model_name_or_path")
    if raw is None:
        return fa
    name = os.fspath(raw)
    path = Path(name).expanduser()
    if path.is_absolute():
        fa["model_name_or_path"] = str(path)
        return fa
    candidate = Path(exp_dir) / path
    if candidate.exists():
        fa["model_name_or_path"] = str(candidate.resolve())
        return fa
    if is_local_path(raw):
        hint = ""
        if path.exists():
            hint = (f"; {path.resolve()} exists relative to the current directory, but a "
                    "relative path is not resolved against it (another directory may hold "
                    "another model): if it is this experiment's model, write its absolute "
                    "path into frontend_args.model_name_or_path")
        raise FileNotFoundError(
            f"{where}: frontend_args.model_name_or_path {name!r} is relative, so it is "
            f"resolved against the experiment directory {exp_dir}, and {candidate} does not "
            f"exist{hint}"
        )
    return fa  # a hub id


# -------------------------------------------------------------------------- what
def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _model_directory(name: str) -> Path:
    """The local directory of a ``save_pretrained`` path or of a cached hub id."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if is_local_path(name):  # a path, not a hub id: never ask the hub about it
        raise FileNotFoundError(
            f"SSL checkpoint directory not found: {name!r} (no such directory; expected a "
            "directory written by save_pretrained with config.json and model weights)")
    from transformers.utils import cached_file  # third-party: imported when a hub id is used

    found = cached_file(name, "config.json")
    if found is None:
        raise FileNotFoundError(f"cannot find the files of SSL model {name!r}")
    return Path(found).parent


def state_dict_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of tensors, in name order."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _file_entries(directory: Path, known: Mapping[str, Any] | None) -> dict[str, dict]:
    """``name -> {sha256, size, mtime_ns}`` of the weight files in ``directory``.

    A file whose size and modification time equal those in ``known`` (the
    recorded fingerprint of this same directory) keeps its recorded hash
    instead of being read again: re-running pre-training, or copying another
    model in, changes the modification time.
    """
    known = known or {}
    out = {}
    for p in sorted(directory.iterdir()):
        if not (p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)):
            continue
        st = p.stat()
        old = known.get(p.name)
        if isinstance(old, Mapping) and old.get("size") == st.st_size \
                and old.get("mtime_ns") == st.st_mtime_ns and old.get("sha256"):
            sha = old["sha256"]
        else:
            sha = _sha256_file(p)
        out[p.name] = {"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return out


def frontend_fingerprint(frontend_args: Mapping[str, Any],
                         recorded: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What identifies the SSL model ``frontend_args`` names (a JSON-able dict).

    * a ``save_pretrained`` directory or a cached hub id: SHA-256 of
      ``config.json`` (without the saving library's entries) with
      ``preprocessor_config.json``, and of each weight file;
    * a random model from ``config``: SHA-256 of the config with ``init_seed``,
      and of the float32 tensors it builds (so a library that initialises
      differently is caught too).
    """
    name = frontend_args.get("model_name_or_path")
    if name is None:
        config = frontend_args.get("config")
        if config is None:
            raise ValueError("frontend_args has neither model_name_or_path nor config")
        seed = int(frontend_args.get("init_seed", 0))
        model, _ = load_ssl_model(config=config, init_seed=seed)
        return {"format": FINGERPRINT_FORMAT, "source": "config", "model_name_or_path": None,
                "config_sha256": _sha256_json({"config": dict(config), "init_seed": seed}),
                "weights_sha256": state_dict_sha256(model.state_dict()), "files": {}}
    name = os.fspath(name)
    directory = _model_directory(name)
    cfg_file = directory / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"SSL model directory {directory} has no config.json")
    config = json.loads(cfg_file.read_text(encoding="utf-8"))
    for key in _VOLATILE_CONFIG_KEYS:
        config.pop(key, None)
    pre_file = directory / "preprocessor_config.json"
    pre = json.loads(pre_file.read_text(encoding="utf-8")) if pre_file.is_file() else None
    local = Path(name).expanduser().is_dir()
    where = str(directory.resolve()) if local else name
    same_place = recorded is not None and recorded.get("model_name_or_path") == where
    files = _file_entries(directory, recorded.get("files") if same_place else None)
    if not files:
        raise FileNotFoundError(f"SSL model directory {directory} holds no weight files "
                                f"({', '.join(WEIGHT_SUFFIXES)})")
    return {"format": FINGERPRINT_FORMAT, "source": "directory" if local else "hub",
            "model_name_or_path": where,
            "config_sha256": _sha256_json({"config": config, "preprocessor": pre}),
            "weights_sha256": _sha256_json({k: v["sha256"] for k, v in files.items()}),
            "files": files}


def write_fingerprint(exp_dir: str | os.PathLike, fingerprint: Mapping[str, Any]) -> Path:
    """Write ``exp_dir/frontend.json`` atomically."""
    path = Path(exp_dir) / FINGERPRINT_FILE
    with atomic_write(path) as f:
        json.dump(dict(fingerprint), f, indent=2, sort_keys=True)
        f.write("\n")
    return path


def read_fingerprint(exp_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``exp_dir/frontend.json``, or None when the experiment has none."""
    path = Path(exp_dir) / FINGERPRINT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable fingerprint ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FINGERPRINT_FORMAT:
        raise ValueError(f"{path}: not a frontend fingerprint ({FINGERPRINT_FORMAT})")
    return data


def _describe(fp: Mapping[str, Any]) -> str:
    where = fp.get("model_name_or_path") or f"random model from config ({fp.get('source')})"
    return (f"{where} (config sha256 {str(fp.get('config_sha256'))[:16]}, weights sha256 "
            f"{str(fp.get('weights_sha256'))[:16]})")


def compare_fingerprints(recorded: Mapping[str, Any], current: Mapping[str, Any],
                         weights: bool = True) -> list[str]:
    """What differs: ``[]``, or some of ``"config"`` and ``"weights"`` (when ``weights``)."""
    diffs = []
    if recorded.get("config_sha256") != current.get("config_sha256"):
        diffs.append("config")
    if weights and recorded.get("weights_sha256") != current.get("weights_sha256"):
        diffs.append("weights")
    return diffs


def check_frontend_identity(exp_dir: str | os.PathLike, frontend_args: Mapping[str, Any],
                            ignore: bool = False, weights: bool = True) -> None:
    """Compare the SSL model ``frontend_args`` names with ``exp_dir/frontend.json``.

    ``weights=False`` compares the config only (a checkpoint that carries
    fine-tuned SSL weights replaces the model's own). A difference is a
    :class:`FrontendMismatchError` naming both models and fingerprints, or a
    warning when ``ignore``. An experiment without ``frontend.json`` (trained
    before fingerprints existed) is a warning.
    """
    recorded = read_fingerprint(exp_dir)
    if recorded is None:
        logger.warning("%s has no %s: the frozen SSL model's identity cannot be checked",
                       exp_dir, FINGERPRINT_FILE)
        return
    current = frontend_fingerprint(frontend_args, recorded)
    diffs = compare_fingerprints(recorded, current, weights)
    if not diffs:
        return
    msg = (f"the SSL model found differs from the one {exp_dir} was trained with "
           f"({' and '.join(diffs)} differ): trained with {_describe(recorded)}, as recorded in "
           f"{Path(exp_dir) / FINGERPRINT_FILE}; found {_describe(current)}. Point "
           "frontend_args.model_name_or_path in config.yaml at the model it was trained with, "
           "or pass --ignore_frontend_mismatch to use this one anyway")
    if ignore:
        logger.warning("%s (ignored as asked)", msg)
        return
    raise FrontendMismatchError(msg)
