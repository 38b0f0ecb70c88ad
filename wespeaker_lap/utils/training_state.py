"""Resumable training state, RNG states, pruning, the final-model link and averaging.

* ``state_{epoch}.pt`` (:func:`save_training_state`): everything needed to resume
  exactly after ``epoch``: the trained weights, optimizer, lr and margin
  schedulers, GradScaler, the python/numpy/torch(/CUDA) RNG states of every rank,
  the epoch and the data-loader epoch to run next. Written every epoch; older
  ones are pruned (:func:`prune_states`).
* ``avg_model.pt`` (:func:`average_checkpoints`): the mean of the last N
  ``model_*.pt``, or of the N with the lowest validation EER;
  :func:`prune_models` bounds the ``model_*.pt`` kept (``keep_best``).

File names and weight files themselves are :mod:`wespeaker_lap.io.checkpoints`.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wespeaker_lap.io.checkpoints import (
    STATE_FORMAT,
    CheckpointError,
    checkpoint_path,
    list_checkpoints,
    load_torch,
    parse_checkpoint_path,
    read_weights,
    save_torch,
    save_weights,
    trained_state_dict,
)

logger = logging.getLogger(__name__)


# -------------------------------------------------------------------------- RNG
def get_rng_state() -> dict[str, Any]:
    """RNG states of python, numpy, torch CPU and (if present) every CUDA device.

    Stored with plain types and tensors only, so ``torch.load(weights_only=True)`` reads it.
    """
    # the legacy global generator is what third-party code (augmentation) draws from
    np_state = np.random.get_state()  # noqa: NPY002
    state = {
        "python": _to_plain(random.getstate()),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore states written by :func:`get_rng_state`."""
    random.setstate(_to_tuple(state["python"]))
    s = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (s["name"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"],
         s["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(x: Any) -> Any:
    return [_to_plain(v) for v in x] if isinstance(x, tuple) else x


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list) else x


# ----------------------------------------------------------------- training state


def save_training_state(path: str | os.PathLike, *, model: nn.Module, epoch: int,
                        optimizer: torch.optim.Optimizer, scheduler: Any = None,
                        margin_scheduler: Any = None, scaler: Any = None,
                        rng_states: list[dict[str, Any]] | None = None,
                        global_step: int = 0, extra: Mapping[str, Any] | None = None) -> Path:
    """Write the resume file for the end of ``epoch`` atomically.

    ``rng_states``: one :func:`get_rng_state` per rank (rank order); default: this
    process's only. Schedulers and the scaler are saved through their
    ``state_dict()`` when they have one.
    """
    state = {
        "format": STATE_FORMAT,
        "epoch": int(epoch),
        "data_epoch": int(epoch) + 1,
        "global_step": int(global_step),
        "model": trained_state_dict(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": _state_of(scheduler),
        "margin_scheduler": _state_of(margin_scheduler),
        "scaler": _state_of(scaler),
        "rng": rng_states if rng_states is not None else [get_rng_state()],
        "extra": dict(extra or {}),
    }
    return save_torch(state, path, "training state")


def _state_of(obj: Any) -> Any:
    return obj.state_dict() if obj is not None and hasattr(obj, "state_dict") else None


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a file written by :func:`save_training_state`."""
    path = Path(path)
    state = load_torch(path, "training state")
    if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a training-state file ({STATE_FORMAT})")
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: training-state file lacks {missing}")
    return dict(state)


#: What every file written by :func:`save_training_state` holds.
_STATE_KEYS = ("epoch", "model", "optimizer", "rng")


def remove_stale_tmp_files(models_dir: str | os.PathLike) -> list[Path]:
    """Delete ``.<name>.<random>.tmp`` files that a kill during a save left in ``models_dir``.

    :func:`~wespeaker_lap.io.files.atomic_path` names its temporary files so; a
    finished save renames its file, so on resume (one training run per
    ``exp_dir``) any left over is garbage. Returns the removed paths.
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    gone = sorted(p for p in models_dir.glob(".*.tmp") if p.is_file() or p.is_symlink())
    for p in gone:
        p.unlink(missing_ok=True)
    if gone:
        logger.warning("removed %d temporary file(s) left by an interrupted save in %s: %s",
                       len(gone), models_dir, [p.name for p in gone[:5]])
    return gone


def resolve_resume(checkpoint: str | os.PathLike, models_dir: str | os.PathLike
                   ) -> tuple[int, Path | None, Path | None]:
    """Where to resume from: ``(epoch done, state file or None, weights file or None)``.

    ``checkpoint`` is ``model_{e}.pt`` (its ``state_{e}.pt`` beside it is used when
    present; otherwise only the weights, as WeSpeaker does), ``state_{e}.pt``, or
    ``latest`` (the newest state file in ``models_dir``).
    """
    if os.fspath(checkpoint) == "latest":
        states = list_checkpoints(models_dir, "state")
        if not states:
            raise FileNotFoundError(f"--checkpoint latest: no state_*.pt in {models_dir}")
        problems = []
        for epoch, state in reversed(states):
            try:
                load_training_state(state)
            except CheckpointError as e:
                problems.append(str(e))
                logger.warning("--checkpoint latest: skipping %s: %s", state, e)
                continue
            if problems:
                logger.warning("--checkpoint latest: %d newer state file(s) unreadable; "
                               "resuming from %s (epoch %d)", len(problems), state, epoch)
            return epoch, state, None
        raise CheckpointError(f"--checkpoint latest: no intact state_*.pt in {models_dir}: "
                              + "; ".join(problems))
    path = Path(checkpoint)
    if path.is_dir():
        raise CheckpointError(f"--checkpoint {path} is a directory; give a file "
                              "(models/model_<epoch>.pt or state_<epoch>.pt) or 'latest'")
    try:
        kind, epoch = parse_checkpoint_path(path)
    except ValueError as e:
        raise CheckpointError(f"--checkpoint: {e}") from None
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if kind == "state":
        return epoch, path, None
    state = checkpoint_path(path.parent, epoch, "state")
    return epoch, (state if state.is_file() else None), path


def prune_states(models_dir: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` ``state_*.pt``; returns the deleted paths."""
    states = list_checkpoints(models_dir, "state")
    gone = [p for _, p in states[: max(0, len(states) - max(int(keep), 1))]]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def prune_models(models_dir: str | os.PathLike, valid_eers: Mapping[int, float], keep_best: int,
                 keep_after: int, newest: int) -> list[Path]:
    """``keep_best``: delete the ``model_{epoch}.pt`` that no later step needs.

    Kept: the ``keep_best`` epochs with the lowest validation EER in ``valid_eers``
    (ties: the later epoch), every epoch after ``keep_after`` (``num_epochs -
    num_avg``: what ``average_model --select last --num num_avg`` averages at the
    end), and ``newest`` (the epoch just saved). So at most ``keep_best + num_avg
    + 1`` model files exist at any time. Returns the deleted paths.
    """
    ranked = sorted((e for e in valid_eers), key=lambda e: (valid_eers[e], -e))
    keep = set(ranked[:keep_best]) | {newest}
    gone = [p for e, p in list_checkpoints(models_dir, "model")
            if e not in keep and e <= keep_after]
    for p in gone:
        p.unlink(missing_ok=True)
    if gone:
        logger.info("keep_best %d: removed %s", keep_best, ", ".join(p.name for p in gone))
    return gone


def link_final_model(models_dir: str | os.PathLike, epoch: int) -> Path:
    """Point ``final_model.pt`` at ``model_{epoch}.pt``: a relative symlink, replaced atomically."""
    models_dir = Path(models_dir)
    target = checkpoint_path(models_dir, epoch).name
    link = models_dir / "final_model.pt"
    tmp = models_dir / f".final_model.pt.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    return link


# ---------------------------------------------------------------------- averaging
def average_state_dicts(state_dicts: Iterable[Mapping[str, torch.Tensor]],
                        names: Sequence[str | os.PathLike] | None = None
                        ) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating tensors (accumulated in float64); others from the last.

    Consumes ``state_dicts`` one at a time (a generator keeps one checkpoint in
    memory). All must have the same keys and shapes; ``names`` (the files) are
    named when they do not (two models' checkpoints).

    >>> a, b = {"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 4.0])}
    >>> average_state_dicts([a, b])["w"].tolist()
    [2.0, 3.0]
    """
    acc: dict[str, torch.Tensor] = {}
    ref: dict[str, torch.Tensor] = {}
    n = 0
    for i, sd in enumerate(state_dicts):
        if i == 0:
            ref = {k: v.detach().clone() for k, v in sd.items()}
            acc = {k: v.to(torch.float64) for k, v in ref.items() if v.is_floating_point()}
        else:
            this, first = (names[i], names[0]) if names else (f"checkpoint {i}", "checkpoint 0")
            if set(sd) != set(ref):
                diff = sorted(set(sd) ^ set(ref))[:5]
                raise ValueError(f"cannot average {this} with {first}: other tensor names "
                                 f"({diff}); are they checkpoints of one model?")
            for k, v in sd.items():
                if v.shape != ref[k].shape:
                    raise ValueError(f"cannot average {this} with {first}: {k!r} is "
                                     f"{tuple(v.shape)} in one and {tuple(ref[k].shape)} in "
                                     "the other; are they checkpoints of one model?")
                if k in acc:
                    acc[k] += v.to(torch.float64)
                else:
                    ref[k] = v.detach().clone()
        n += 1
    if n == 0:
        raise ValueError("nothing to average")
    return {k: (acc[k] / n).to(v.dtype) if k in acc else v for k, v in ref.items()}


def average_checkpoints(models_dir: str | os.PathLike, num: int, dst: str | os.PathLike,
                        min_epoch: int = 0, max_epoch: int | None = None,
                        valid_eers: Mapping[int, float] | None = None) -> list[Path]:
    """Average ``num`` ``model_{epoch}.pt`` with min_epoch <= epoch <= max_epoch.

    Without ``valid_eers``: the last ``num`` (``--select last``). With it
    (``{epoch: validation EER}``, ``--select best_valid``): the ``num`` epochs with
    the lowest EER among those that have a model file (ties: the later epoch).
    Writes ``dst`` atomically and returns the averaged paths (oldest first).
    """
    ckpts = [
        (e, p) for e, p in list_checkpoints(models_dir, "model")
        if e >= min_epoch and (max_epoch is None or e <= max_epoch)
    ]
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    span = f"[{min_epoch}, {max_epoch if max_epoch is not None else 'end'}]"
    if valid_eers is not None:
        scored = [(e, p) for e, p in ckpts if e in valid_eers]
        if len(scored) < num:
            raise FileNotFoundError(
                f"asked to average the {num} best-validated checkpoints but {models_dir} has "
                f"{len(scored)} model_*.pt of a validated epoch in epochs {span} (validated: "
                f"{sorted(valid_eers)}; with files: {[e for e, _ in ckpts]})"
            )
        best = sorted(scored, key=lambda ep: (valid_eers[ep[0]], -ep[0]))[:num]
        chosen = [p for _, p in sorted(best)]
    else:
        if len(ckpts) < num:
            raise FileNotFoundError(
                f"asked to average {num} checkpoints but {models_dir} has {len(ckpts)} "
                f"model_*.pt in epochs {span}: {[e for e, _ in ckpts]}"
            )
        chosen = [p for _, p in ckpts[-num:]]
    save_weights(average_state_dicts((read_weights(p) for p in chosen), names=chosen), dst)
    return chosen
