"""Checkpoint files: the names contract, and reading, writing and loading weights.

File contract (under ``exp_dir/models/``), WeSpeaker's names:

* ``model_{epoch}.pt``: a flat ``state_dict`` (name -> tensor) of the trained
  weights (backend, projection head, and the SSL model only when it was
  trained);
* ``state_{epoch}.pt``: the resume file of :mod:`wespeaker_lap.utils.training_state`
  (its ``model`` entry holds the same weights);
* ``avg_model.pt``: the average of the last N ``model_*.pt``;
* ``final_model.pt``: a symlink to the last ``model_{num_epochs}.pt``.

:func:`checkpoint_path` is the one place that builds these names and
:func:`parse_checkpoint_path` the one place that parses them. Every write goes
through a temporary file renamed into place. Every read uses
``torch.load(weights_only=True)``: a checkpoint cannot run code.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

from wespeaker_lap.io.files import atomic_path, disk_full_error

logger = logging.getLogger(__name__)

KINDS = ("model", "state")
_NAME_RE = re.compile(r"^(model|state)_(\d+)\.pt$")
#: The ``format`` tag of a resume file (its weights are under ``model``).
STATE_FORMAT = "wespeaker_lap.train_state.v1"


# ------------------------------------------------------------------------- names
def checkpoint_path(models_dir: str | os.PathLike, epoch: int, kind: str = "model") -> Path:
    """``models_dir/{kind}_{epoch}.pt`` for kind ``model`` (weights) or ``state`` (resume).

    >>> checkpoint_path("exp/x/models", 7).as_posix()
    'exp/x/models/model_7.pt'
    """
    if kind not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}, got {kind!r}")
    epoch = int(epoch)
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return Path(models_dir) / f"{kind}_{epoch}.pt"


def parse_checkpoint_path(path: str | os.PathLike) -> tuple[str, int]:
    """``(kind, epoch)`` of a checkpoint file name; ValueError for any other name.

    >>> parse_checkpoint_path("exp/x/models/state_12.pt")
    ('state', 12)
    """
    m = _NAME_RE.match(Path(path).name)
    if m is None:
        raise ValueError(
            f"not a checkpoint name: {os.fspath(path)!r} (expected model_<epoch>.pt "
            "or state_<epoch>.pt)"
        )
    return m.group(1), int(m.group(2))


def list_checkpoints(models_dir: str | os.PathLike, kind: str = "model") -> list[tuple[int, Path]]:
    """``[(epoch, path)]`` of the ``kind`` checkpoints in ``models_dir``, by epoch."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    out = []
    for p in models_dir.iterdir():
        try:
            k, e = parse_checkpoint_path(p)
        except ValueError:
            continue
        if k == kind:
            out.append((e, p))
    return sorted(out)


# ------------------------------------------------------------------ read / write
class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, not a checkpoint, refused)."""


def save_torch(obj: object, path: str | os.PathLike, what: str = "checkpoint") -> Path:
    """``torch.save(obj)`` to ``path`` atomically; a full disk says so and names ``path``.

    torch reports a full disk as ``unexpected pos ...`` from its zip writer, or
    an ``OSError`` with ``errno.ENOSPC``: both become an ``OSError(ENOSPC)``
    naming the file and the free space left; the old ``path`` stays untouched.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except (OSError, RuntimeError) as e:
        full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = None
        if not full and isinstance(e, RuntimeError) and not (free is not None and free < 2**26):
            raise
        cause = e.__cause__ if full and e.__cause__ is not None else e  # atomic_path's own
        raise disk_full_error(cause, path, what) from cause
    return path


def load_torch(path: str | os.PathLike, what: str = "checkpoint") -> object:
    """``torch.load(path, weights_only=True)`` on CPU; an unreadable file is a
    :class:`CheckpointError` naming it, its size and what is wrong."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; expected a {what} file (.pt)")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: {_unpickling_reason(str(e), what)}") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as e:
        size = path.stat().st_size
        why = "it is empty" if size == 0 else (
            f"it is not a complete torch checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160] if str(e) else 'unexpected end of file'})")
        raise CheckpointError(
            f"{path}: cannot read this {what} ({size} bytes): {why}; it was probably cut "
            "short by a kill or a full disk during the save"
        ) from None


def _unpickling_reason(message: str, what: str) -> str:
    """Why torch's safe unpickler refused a file, without torch's advice to retry with
    ``weights_only=False`` (which would run whatever code the file holds)."""
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", message, re.S)
    detail = found.group(1).strip() if found else ""
    if "Unsupported global" in detail or "GLOBAL" in detail:
        return (f"refused to load this {what}: it holds objects other than tensors and plain "
                f"containers ({detail.splitlines()[0][:200]}); it is not loaded unsafely")
    return (f"not a torch checkpoint: the bytes are no pickle torch can read "
            f"({detail.splitlines()[0][:120] if detail else 'unreadable'}); is it the right "
            "file?")


# ----------------------------------------------------------------------- weights
def trained_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as detached CPU copies (saving then holds no GPU memory).

    What is in it is the model's own business: a
    :class:`~wespeaker_lap.models.extractor.SpeakerEmbeddingExtractor` leaves a
    frozen SSL frontend out of its state dict.
    """
    return {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) \
        else model


def save_weights(model: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write the trained weights (:func:`trained_state_dict`) of ``model`` atomically."""
    sd = dict(model) if isinstance(model, Mapping) else trained_state_dict(model)
    return save_torch(sd, path, "weights file")


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a weights file (``model_*.pt``, ``avg_model.pt``, a model package's
    ``.safetensors``) or the weights of a state file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    obj = load_torch(path, "checkpoint")
    if isinstance(obj, Mapping) and obj.get("format") == STATE_FORMAT:
        obj = obj.get("model")
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), got "
                              f"{type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: not a weights file: entries {bad[:5]} are not tensors")
    return dict(obj)


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file on CPU; unreadable: a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        return dict(safetensors.torch.load_file(str(path), device="cpu"))
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike,
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Write tensors (contiguous CPU copies) as ``.safetensors``, atomically."""
    sd = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(sd, str(tmp), metadata=dict(metadata or {}))
    return Path(path)


@dataclass
class LoadReport:
    """What :func:`load_weights` did: loaded keys, and the ones it had to leave."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    mismatched: list[str] = field(default_factory=list)  # same name, other shape


def load_weights(model: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor],
                 strict: bool = True, where: str | os.PathLike | None = None,
                 check_only: bool = False) -> LoadReport:
    """Load trained weights into ``model``.

    The keys compared are those of ``model.state_dict()`` (an extractor with a
    frozen SSL frontend leaves it out, so its weights stay as built). ``strict``:
    any missing, unexpected or shape-mismatched key is a :class:`CheckpointError`
    naming the file (``where``: the file a state dict came from) and the
    tensors (resuming, extraction). Not strict: load what fits and log the rest
    (``model_init`` from another phase, where e.g. the number of classes
    differs). ``check_only``: compare, load nothing.
    """
    model = unwrap(model)
    sd = read_weights(source) if not isinstance(source, Mapping) else dict(source)
    own = model.state_dict()
    report = LoadReport()
    for k, v in sd.items():
        if k not in own:
            report.unexpected.append(k)
        elif tuple(own[k].shape) != tuple(v.shape):
            report.mismatched.append(f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}")
        else:
            report.loaded.append(k)
    report.missing = [k for k in own if k not in sd]
    bad = report.missing + report.unexpected + report.mismatched
    if where is None:
        where = source if not isinstance(source, Mapping) else "state dict"
    if bad and strict:
        raise CheckpointError(
            f"{where}: these weights do not fit the model (another model's file?): "
            f"{len(report.missing)} missing {report.missing[:8]}, {len(report.unexpected)} "
            f"unexpected {report.unexpected[:8]}, {len(report.mismatched)} mismatched "
            f"{report.mismatched[:8]}"
        )
    if check_only:
        return report
    with torch.no_grad():
        for k in report.loaded:
            own[k].copy_(sd[k])
    if bad:
        logger.warning(
            "loaded %d tensors from %s; left %d missing %s, %d unexpected %s, %d mismatched %s",
            len(report.loaded), where, len(report.missing), report.missing[:5],
            len(report.unexpected), report.unexpected[:5], len(report.mismatched),
            report.mismatched[:5],
        )
    return report
