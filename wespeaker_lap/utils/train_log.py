"""The training log a user reads and plots: ``train_log.jsonl`` and TensorBoard event files.

Rank 0 writes both into ``exp_dir`` (:class:`TrainLog`):

* ``train_log.jsonl``: one JSON object per line, ``"kind"`` one of

  - ``"step"`` (every ``log_batch_interval`` optimiser steps): ``epoch``, ``step``
    (in the epoch), ``global_step``, ``loss`` and ``acc`` (running means of the
    epoch so far on rank 0), ``lr``, ``margin``, ``grad_norm`` (this step's global
    gradient norm before clipping), ``samples_per_s`` (all ranks, since the epoch
    began), ``peak_mem_mb``;
  - ``"epoch"``: ``epoch``, ``global_step``, ``loss`` and ``acc`` (means over ranks),
    ``lr``, ``margin``, ``grad_norm`` (mean over the epoch's steps),
    ``samples_per_s``, ``train_seconds`` (wall) and ``train_cpu_seconds`` (rank 0's
    process CPU time), ``peak_mem_mb``, and after a validation ``valid`` (``eer`` in %,
    ``min_dcf_0.01``, ``min_dcf_0.05``, ``n_target``, ``n_nontarget``, ``seconds``,
    ``cpu_seconds``, ``num_utts``) and ``layer_use`` (``scores``: the
    backend's mean layer score per head and layer on the validation set, a
    ``heads x L`` list: LAP's attention, SUPERB's one row of layer weights,
    MHFA's key and value weights);
  - ``"note"``: an event, e.g. a resume whose validation set changed (``message``).

  Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU and the process's
  maximum resident set size (``getrusage``) on a CPU.

  Each line is written with one ``write`` on a file opened for appending, so a
  killed run leaves at worst one torn last line;
  :func:`wespeaker_lap.io.train_log.read_train_log` skips it.
  A resumed run first rewrites the file (atomically) without the records after
  the epoch it resumes from, so no step appears twice.
* ``tensorboard/``: the same scalars (``train/*`` per logged step, ``epoch/*`` and
  ``valid/*`` at the global step that ends the epoch); a resume passes
  TensorBoard's ``purge_step`` so the curves do not repeat either.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from wespeaker_lap.io.train_log import TRAIN_LOG, append_record, truncate_train_log

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # pragma: no cover - tensorboard is a dependency; a broken install
    SummaryWriter = None

logger = logging.getLogger(__name__)

def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process in MiB: CUDA allocations on a GPU, else the max RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB else


class TrainLog:
    """Rank 0's ``train_log.jsonl`` and TensorBoard writer (see the module docstring).

    ``resume_epoch``: the epoch a resumed run continues after (0 for a fresh run):
    later records are dropped first. ``purge_step``: TensorBoard's, for a resume.
    """

    def __init__(self, exp_dir: str | os.PathLike, resume_epoch: int = 0,
                 purge_step: int | None = None, tensorboard: bool = True):
        exp_dir = Path(exp_dir)
        self.path = exp_dir / TRAIN_LOG
        dropped = truncate_train_log(self.path, resume_epoch)
        if dropped:
            logger.info("%s: dropped %d record(s) after epoch %d (they are run again)",
                        self.path, dropped, resume_epoch)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.writer = None
        if tensorboard:
            if SummaryWriter is None:
                logger.warning("TensorBoard is not importable: scalars go to %s and train.log "
                               "only", self.path)
            else:
                self.writer = SummaryWriter(log_dir=str(exp_dir / "tensorboard"),
                                            purge_step=purge_step)

    def _append(self, record: Mapping[str, Any]) -> None:
        append_record(self._fd, record)  # one write: whole lines, or a torn last one

    def _scalars(self, prefix: str, record: Mapping[str, Any], step: int) -> None:
        if self.writer is None:
            return
        for k, v in record.items():
            if isinstance(v, int | float) and not isinstance(v, bool) and k not in (
                    "epoch", "step", "global_step") and math.isfinite(float(v)):
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def step(self, record: Mapping[str, Any]) -> None:
        """A logged optimiser step (``global_step`` is the number of steps done)."""
        self._append({"kind": "step", **record})
        self._scalars("train", record, int(record["global_step"]))

    def epoch(self, record: Mapping[str, Any]) -> None:
        """The end of an epoch, with its validation when there was one."""
        self._append({"kind": "epoch", **record})
        step = int(record["global_step"])
        self._scalars("epoch", record, step)
        if isinstance(record.get("valid"), Mapping):
            self._scalars("valid", record["valid"], step)
        if self.writer is not None:
            self.writer.flush()

    def note(self, record: Mapping[str, Any]) -> None:
        """An event worth keeping beside the numbers (``message``)."""
        self._append({"kind": "note", **record})

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
