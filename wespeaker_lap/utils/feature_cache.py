"""Training on cached SSL hidden states: the frozen forward once per crop, reused.

With a frozen SSL model most of a backend step is the SSL forward (a step costs
1.14-1.25x the frozen forward alone, ``benchmarks/bench_train.py``).
``feature_cache_epochs: K`` keeps the hidden states ``(L, T, D)`` that the frozen
model gives for every crop of the first K epochs (crops, speed perturbation and
augmentation drawn as usual, a new draw each epoch) in host memory, with their
frame counts and labels: in bfloat16 when the frozen model computes in bfloat16
(its float32 output then holds bfloat16 values, so nothing is lost), else float32.
Every later epoch draws its batches from that pool: a seeded permutation per epoch and rank, without
replacement within the epoch, so a later epoch sees ``1/K`` of the pool and its
steps run the backend alone. The first K epochs train exactly as without the cache.

What it trades: the later epochs see no new crop or augmentation, only new
batch compositions of the K epochs' ones; ``examples/mini/README.md`` measures
what that costs in EER against fresh augmentation.

A resumed run rebuilds the pool (:func:`rebuild`) by running the frozen model over
epochs ``1..min(K, done)``'s batches again: the loader's draws are a function of
the seed, the epoch, the rank and the worker, so the pool, and the resume, are
exact as before. The pool's size is known before training (:func:`cache_shape`)
and checked against ``feature_cache_max_gb``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from wespeaker_lap.checks import ConfigError
from wespeaker_lap.utils.distributed import DistInfo, any_true

logger = logging.getLogger(__name__)

GIB = 1 << 30


class FeatureCache:
    """A fixed-size pool of (hidden states, frame count, label) for one rank.

    ``capacity`` crops of ``sample_shape`` = (L, T, D) held in ``dtype``; :meth:`add`
    fills it in order, :meth:`batches` draws an epoch's batches from what it holds, as
    ``out_dtype`` (default ``dtype``): what the frontend gave, so that the backend sees
    the same tensors on the pool as in the recorded epochs.
    """

    def __init__(self, capacity: int, sample_shape: tuple[int, int, int],
                 dtype: torch.dtype, seed: int, rank: int = 0,
                 out_dtype: torch.dtype | None = None):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        # not zeroed: untouched pages cost nothing until filled, and a DataLoader worker
        # forked before then shares none of them (no copy-on-write as the pool fills)
        self.hidden = torch.empty((capacity, *sample_shape), dtype=dtype)
        self.frames = torch.zeros(capacity, dtype=torch.long)
        self.labels = torch.zeros(capacity, dtype=torch.long)
        self.count = 0
        self.seed = seed
        self.rank = rank
        self.out_dtype = dtype if out_dtype is None else out_dtype
        self.summary = ""  # what build_feature_cache made, for the training log

    @property
    def capacity(self) -> int:
        return self.hidden.shape[0]

    @staticmethod
    def nbytes(capacity: int, sample_shape: tuple[int, int, int], dtype: torch.dtype) -> int:
        """Host memory of a pool of ``capacity`` crops (hidden states, frames, labels)."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return capacity * (int(np.prod(sample_shape)) * itemsize + 16)

    def add(self, hidden: torch.Tensor, frames: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep a batch: ``hidden`` (B, L, T', D) with T' at most the pool's T, ``frames``
        (B,) valid frames, ``labels`` (B,)."""
        b, layers, t, d = hidden.shape
        _, pool_layers, pool_t, pool_d = self.hidden.shape
        if (layers, d) != (pool_layers, pool_d) or t > pool_t:
            raise RuntimeError(f"feature cache: a batch of hidden states {tuple(hidden.shape)} "
                               f"does not fit the pool's (L, T, D) = "
                               f"{(pool_layers, pool_t, pool_d)}")
        if self.count + b > self.capacity:
            raise RuntimeError(f"feature cache: {self.count + b} crops exceed its capacity "
                               f"{self.capacity} (more batches than the epochs' steps?)")
        end = self.count + b
        self.hidden[self.count:end, :, :t] = hidden.detach().to("cpu", self.hidden.dtype)
        if t < pool_t:
            self.hidden[self.count:end, :, t:] = 0
        self.frames[self.count:end] = frames.detach().to("cpu")
        self.labels[self.count:end] = labels.detach().to("cpu")
        self.count = end

    def batches(self, epoch: int, batch_size: int, num_batches: int
                ) -> Iterator[dict[str, torch.Tensor]]:
        """``num_batches`` batches of ``batch_size`` crops for ``epoch``: dicts with
        ``hidden`` (B, L, T, D), ``frame_lengths`` (B,) and ``labels`` (B,).

        The order is a permutation seeded by (seed, epoch, rank); an epoch that needs
        more crops than the pool holds continues with the next permutation.
        """
        if self.count == 0:
            raise RuntimeError("feature cache: empty (no epoch recorded)")
        rng = np.random.default_rng([self.seed, epoch, self.rank, 0xCAC4E])
        need = batch_size * num_batches
        order = np.concatenate([rng.permutation(self.count)
                                for _ in range(-(-need // self.count))])[:need]
        for i in range(num_batches):
            idx = torch.from_numpy(np.sort(order[i * batch_size:(i + 1) * batch_size]))
            frames = self.frames[idx]
            t = int(frames.max())
            yield {"hidden": self.hidden[idx, :, :t].to(self.out_dtype),
                   "frame_lengths": frames, "labels": self.labels[idx]}


def cache_shape(frontend: nn.Module, crop_samples: int, device: torch.device
                ) -> tuple[tuple[int, int, int], torch.dtype, torch.dtype]:
    """(L, T, D) of the hidden states the frontend gives for one crop, the dtype that
    holds them exactly (the frontend's compute dtype, bfloat16 or float16, half the
    memory, when its float32 output is that dtype's values, else the output's dtype),
    and the output's dtype."""
    wav = 0.1 * torch.randn(1, crop_samples, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden, _ = frontend(wav.to(device), torch.tensor([crop_samples], device=device))
    _, layers, t, d = hidden.shape
    store = out = hidden.dtype
    compute = getattr(frontend, "dtype", out)
    if (compute in (torch.bfloat16, torch.float16) and compute != out
            and torch.equal(hidden.to(compute).to(out), hidden)):
        store = compute
    return (layers, t, d), store, out


def build_feature_cache(cfg: Mapping[str, Any], model: nn.Module, crop_samples: int,
                        batch_size: int, epoch_iter: int, info: DistInfo
                        ) -> FeatureCache | None:
    """The pool for ``feature_cache_epochs`` (None when 0), checked before training.

    Refused (ConfigError) with a trainable frontend or LoRA (its hidden states change
    as it trains), with fewer epochs than ``feature_cache_epochs`` + 1 (no epoch would
    use it), and when it would take more than ``feature_cache_max_gb`` per process.
    """
    k = int(cfg.get("feature_cache_epochs") or 0)
    if k == 0:
        return None
    if any(p.requires_grad for p in model.frontend.parameters()) or cfg.get("lora_args"):
        raise ConfigError("feature_cache_epochs needs a frozen SSL model (frontend_args.frozen: "
                          "true, no lora_args): a trained one's hidden states change each step")
    if int(cfg["num_epochs"]) <= k:
        raise ConfigError(f"feature_cache_epochs {k}: num_epochs {cfg['num_epochs']} leaves no "
                          "epoch to train on the cache (give fewer cached epochs or more epochs)")
    shape, dtype, out_dtype = cache_shape(model.frontend, crop_samples, info.device)
    capacity = k * epoch_iter * batch_size * int(cfg["accum_grad"])
    size = FeatureCache.nbytes(capacity, shape, dtype)
    limit = float(cfg["feature_cache_max_gb"])
    if size > limit * GIB:
        raise ConfigError(
            f"feature_cache_epochs {k} needs {size / GIB:.2f} GiB per process ({capacity} crops "
            f"of hidden states {shape} in {str(dtype).removeprefix('torch.')}), over "
            f"feature_cache_max_gb {limit:g}: cache fewer epochs or raise the limit")
    cache = FeatureCache(capacity, shape, dtype, int(cfg["seed"]), info.rank, out_dtype)
    cache.summary = (f"feature cache: the frozen SSL model's hidden states of epochs 1-{k} "
                     f"({capacity} crops of {shape}, {str(dtype).removeprefix('torch.')}: "
                     f"{size / GIB:.2f} GiB per process); epochs {k + 1}-{cfg['num_epochs']} "
                     "train on them")
    return cache


def rebuild(cache: FeatureCache, loader: Any, frontend: nn.Module, epochs: range,
            steps_per_epoch: int, accum_grad: int, autocast: Any, info: DistInfo) -> None:
    """Refill ``cache`` with ``epochs``' crops as training recorded them (a resume).

    Takes the batches each epoch's training took: up to ``steps_per_epoch`` x
    ``accum_grad`` of them, stopping on every rank when one runs out, as
    :func:`~wespeaker_lap.utils.executor.run_epoch` does.
    """
    t0 = time.perf_counter()
    # a DataLoader iterator draws its base seed from torch's generator: the resumed
    # training must get the generator state the checkpoint restored, untouched
    devices = [info.device] if info.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for epoch in epochs:
            loader.set_epoch(epoch)
            it = iter(loader)
            for _ in range(steps_per_epoch * accum_grad):
                batch = next(it, None)
                if any_true(batch is None, info):
                    break
                wavs = batch["wavs"].to(info.device)
                lengths = batch["lengths"].to(info.device)
                with torch.no_grad(), autocast():
                    hidden, frames = frontend(wavs, lengths)
                cache.add(hidden, frames, batch["labels"])
    if info.is_main and len(epochs):
        logger.info("feature cache: rebuilt epochs %d-%d for the resume (%d crops, %.1f s)",
                    epochs[0], epochs[-1], cache.count, time.perf_counter() - t0)
