"""One training epoch: AMP, gradient accumulation, clipping, per-step lr and margin.

The model trained is a :class:`SpeakerTrainModule`: the speaker extractor
(frontend + backend, with its classification head as ``.projection``, as in
WeSpeaker) and the loss in one ``forward``, so that DistributedDataParallel
sees every trained parameter in a single call.

An epoch is ``epoch_iter`` optimiser steps (WeSpeaker's convention: the
schedulers get the global step ``(epoch - 1) * epoch_iter + i``). Each step
takes ``accum_grad`` micro-batches; gradients are synchronised across ranks
on the last one only. Before every micro-batch the ranks agree (one scalar
all-reduce) whether all of them still have data; when one runs out, the epoch
ends on every rank at once and a partly accumulated step is dropped. So
ranks never wait on each other and the step count stays the same everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from wespeaker_lap.registry import Registry
from wespeaker_lap.utils.distributed import DistInfo, all_reduce_mean, any_true
from wespeaker_lap.utils.logging_utils import stderr_is_terminal
from wespeaker_lap.utils.train_log import peak_memory_mb

logger = logging.getLogger(__name__)

LOSSES: Registry[type[nn.Module]] = Registry("loss", {"CrossEntropyLoss": nn.CrossEntropyLoss})

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """``LOSSES[name](**kwargs)``; unknown names or arguments list the valid ones."""
    return LOSSES.build(name, **kwargs)


class SpeakerTrainModule(nn.Module):
    """Extractor + head + loss: ``(wavs, lengths, labels) -> (loss, logits, penalty)``.

    ``model(wavs, lengths)`` gives the embeddings (B, E) (a tuple's last item is
    taken, as in WeSpeaker); ``model.projection(emb, labels)`` gives the logits
    (B, C), or ``(logits, loss)`` for heads that compute their own loss.
    With ``hidden_states=True`` the inputs are a cached batch of the frozen SSL model's
    hidden states (B, L, T, D) and their frame counts, and only the backend runs
    (:mod:`wespeaker_lap.utils.feature_cache`).
    ``regularizer()`` (L2-SP) is evaluated inside ``forward`` so that DDP sees its
    parameters used there (a weight that only the regulariser touches would
    otherwise get a second gradient hook call); ``penalty`` is 0 without one.
    """

    def __init__(self, model: nn.Module, criterion: nn.Module,
                 regularizer: Callable[[], torch.Tensor] | None = None):
        super().__init__()
        if not isinstance(getattr(model, "projection", None), nn.Module):
            raise ValueError("the speaker model needs a .projection head to train")
        self.model = model
        self.criterion = criterion
        self.regularizer = regularizer
        #: a :class:`~wespeaker_lap.utils.feature_cache.FeatureCache` that keeps each batch's
        #: frozen hidden states while set (the recorded epochs), else None
        self.feature_cache = None

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor,
                hidden_states: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if hidden_states:  # a cached batch: wavs are the frozen model's (B, L, T, D), lengths
            emb = self.model.backend(wavs, lengths)  # its frames
        elif self.feature_cache is not None:  # a recorded epoch: the frozen forward, kept
            with torch.no_grad():
                hidden, frames = self.model.frontend(wavs, lengths)
            self.feature_cache.add(hidden, frames, labels)
            emb = self.model.backend(hidden, frames)
        else:
            emb = self.model(wavs, lengths)
        if isinstance(emb, tuple):
            emb = emb[-1]
        out = self.model.projection(emb, labels)
        if isinstance(out, tuple):
            logits, loss = out
        else:
            logits, loss = out, self.criterion(out.float(), labels)
        penalty = (self.regularizer().float() if self.regularizer is not None
                   else torch.zeros((), device=loss.device))
        return loss, logits, penalty


@dataclass
class EpochOptions:
    """Settings of :func:`run_epoch` (from the config's header)."""

    epoch_iter: int
    accum_grad: int = 1
    grad_clip: float | None = None
    enable_amp: bool = False
    amp_dtype: str = "bfloat16"
    log_batch_interval: int = 100
    progress: bool = True  # tqdm bar (rank 0 only)

    def __post_init__(self):
        assert self.epoch_iter >= 1, f"epoch_iter must be >= 1, got {self.epoch_iter}"
        assert self.accum_grad >= 1, f"accum_grad must be >= 1, got {self.accum_grad}"
        if self.amp_dtype not in AMP_DTYPES:
            raise ValueError(f"amp_dtype must be one of {sorted(AMP_DTYPES)}, got "
                             f"{self.amp_dtype!r}")


def autocast_context(device: torch.device, enabled: bool, dtype: str):
    """``torch.autocast`` for the device; CPU autocast supports bfloat16 only."""
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cpu" and dtype != "bfloat16":
        raise ValueError(f"AMP on CPU supports amp_dtype bfloat16 only, got {dtype!r}")
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[dtype])


def make_grad_scaler(device: torch.device, enable_amp: bool, amp_dtype: str):
    """A GradScaler, enabled only for float16 AMP (bfloat16 needs no loss scaling)."""
    enabled = bool(enable_amp and amp_dtype == "float16" and device.type == "cuda")
    return torch.amp.GradScaler(device.type, enabled=enabled)


def _to_device(batch: Mapping[str, Any], device: torch.device):
    """(inputs, lengths, labels, hidden_states): waveforms and samples, or a feature-cache
    batch's hidden states and frames."""
    nb = device.type == "cuda"
    cached = "hidden" in batch
    x, n = ("hidden", "frame_lengths") if cached else ("wavs", "lengths")
    return (batch[x].to(device, non_blocking=nb), batch[n].to(device, non_blocking=nb),
            batch["labels"].to(device, non_blocking=nb), cached)


@dataclass
class _Meter:
    """Sums over the epoch's optimiser steps (this rank): loss x samples, correct, samples."""

    loss: float = 0.0
    correct: float = 0.0
    count: float = 0.0

    def add(self, other: _Meter) -> None:
        self.loss += other.loss
        self.correct += other.correct
        self.count += other.count

    @property
    def mean_loss(self) -> float:
        return self.loss / max(self.count, 1)

    @property
    def acc(self) -> float:
        return 100 * self.correct / max(self.count, 1)


@contextlib.contextmanager
def _progress_bar(opts: EpochOptions, info: DistInfo, epoch: int):
    """A tqdm bar on rank 0 (log lines print above it, not through it), else None.

    When stderr is not a terminal there is no bar: the log rows every
    ``log_batch_interval`` steps are the progress (a bar would fill the log file
    with carriage-return lines).
    """
    if not (opts.progress and info.is_main and stderr_is_terminal()):
        yield None
        return
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=opts.epoch_iter, desc=f"epoch {epoch}",
                                       dynamic_ncols=True, leave=False))
        stack.enter_context(logging_redirect_tqdm())
        yield bar


def _accumulate(it: Iterator[Mapping[str, Any]], module: nn.Module, scaler: Any,
                opts: EpochOptions, info: DistInfo, epoch: int, step: int, lr: float
                ) -> _Meter | None:
    """Forward and backward ``accum_grad`` micro-batches; None when any rank ran out of data.

    Gradients are synchronised across ranks on the last micro-batch only.
    """
    ddp = hasattr(module, "no_sync")
    meter = _Meter()
    for micro in range(opts.accum_grad):
        batch = next(it, None)
        if any_true(batch is None, info):
            return None
        inputs, lengths, labels, cached = _to_device(batch, info.device)
        last = micro == opts.accum_grad - 1
        sync = contextlib.nullcontext() if (last or not ddp) else module.no_sync()
        with sync:
            with autocast_context(info.device, opts.enable_amp, opts.amp_dtype):
                loss, logits, penalty = module(inputs, lengths, labels, hidden_states=cached)
            # the penalty comes with every micro-batch: 1/accum each, once per step
            total = (loss.float() + penalty) / opts.accum_grad
            scaler.scale(total).backward()
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(
                f"non-finite loss {loss_value} at epoch {epoch}, step {step}, rank "
                f"{info.rank} (lr {lr:.3g}); lower the lr or check the data"
            )
        n = labels.numel()
        meter.loss += loss_value * n
        meter.correct += float((logits.detach().argmax(-1) == labels).sum())
        meter.count += n
    return meter


def _optimizer_step(optimizer: torch.optim.Optimizer, scaler: Any, params: list,
                    grad_clip: float | None) -> float:
    """Unscale, clip (when ``grad_clip``), step; returns the global gradient norm before
    clipping (computed without changing the gradients when there is no clipping)."""
    scaler.unscale_(optimizer)  # a no-op without float16 loss scaling
    if grad_clip:
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)


def _ran_out(epoch: int, step: int, opts: EpochOptions, info: DistInfo) -> None:
    if step == 0:
        raise RuntimeError(
            f"epoch {epoch} gave no training step on rank {info.rank}: the loader "
            "yielded no batch (all audio skipped? see the pipeline warnings)"
        )
    if info.is_main:
        logger.warning("epoch %d: data ran out after %d of %d steps", epoch, step,
                       opts.epoch_iter)


def run_epoch(
    loader: Iterable[Mapping[str, Any]],
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    margin_scheduler: Any,
    scaler: torch.amp.GradScaler,
    epoch: int,
    opts: EpochOptions,
    info: DistInfo,
    log: Any = None,
) -> dict[str, float]:
    """Train one epoch; return its mean ``loss`` and ``acc`` (over ranks), ``lr``, ``margin``,
    ``grad_norm`` (mean over the steps), ``samples_per_s`` (all ranks), ``steps``, ``seconds``
    and ``cpu_seconds`` (this process's CPU time: all its threads, not the loader workers).

    Args:
        loader: yields dicts with ``wavs`` (B, N), ``lengths`` (B,), ``labels`` (B,), or
            a feature cache's ``hidden``, ``frame_lengths`` and ``labels``.
        module: a :class:`SpeakerTrainModule`, possibly inside DistributedDataParallel.
        scheduler / margin_scheduler: ``.step(global_step)``; the margin scheduler
            may be None.
        log: a :class:`~wespeaker_lap.utils.train_log.TrainLog` (rank 0) or None; it gets
            a step record every ``log_batch_interval`` steps.
    """
    module.train()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    it = iter(loader)
    meter = _Meter()
    t0, c0 = time.perf_counter(), time.process_time()
    step = 0
    norm_sum = 0.0
    lr = margin = float("nan")
    optimizer.zero_grad(set_to_none=True)
    with _progress_bar(opts, info, epoch) as bar:
        while step < opts.epoch_iter:
            global_step = (epoch - 1) * opts.epoch_iter + step
            lr = scheduler.step(global_step)
            if margin_scheduler is not None:
                margin_scheduler.step(global_step)
                margin = float(margin_scheduler.get_margin())
            step_meter = _accumulate(it, module, scaler, opts, info, epoch, step, lr)
            if step_meter is None:
                optimizer.zero_grad(set_to_none=True)
                _ran_out(epoch, step, opts, info)
                break
            grad_norm = _optimizer_step(optimizer, scaler, params, opts.grad_clip)
            norm_sum += grad_norm
            step += 1
            meter.add(step_meter)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{meter.mean_loss:.3f}", acc=f"{meter.acc:.1f}",
                                lr=f"{lr:.2e}")
            if step % opts.log_batch_interval == 0 and info.is_main:
                _log_row(epoch, step, lr, margin, meter.mean_loss, meter.acc)
                if log is not None:
                    elapsed = time.perf_counter() - t0
                    log.step({"epoch": epoch, "step": step, "global_step": global_step + 1,
                              "loss": meter.mean_loss, "acc": meter.acc, "lr": lr,
                              "margin": margin, "grad_norm": grad_norm,
                              "samples_per_s": meter.count * info.world_size / elapsed,
                              "peak_mem_mb": peak_memory_mb(info.device)})
    seconds = time.perf_counter() - t0
    mean_loss, mean_acc = all_reduce_mean([meter.mean_loss, meter.acc], info)
    stats = {"loss": mean_loss, "acc": mean_acc, "lr": lr, "margin": margin, "steps": step,
             "seconds": seconds, "cpu_seconds": time.process_time() - c0,
             "grad_norm": norm_sum / max(step, 1),
             "samples_per_s": meter.count * info.world_size / max(seconds, 1e-9)}
    if info.is_main:
        _log_row(epoch, step, lr, margin, mean_loss, mean_acc, end=True)
    return stats


def _log_row(epoch: int, step: int, lr: float, margin: float, loss: float, acc: float,
             end: bool = False) -> None:
    logger.info("%sepoch %d step %d | lr %.3e | margin %.3f | loss %.4f | acc %.2f%%",
                "end of " if end else "", epoch, step, lr, margin, loss, acc)
