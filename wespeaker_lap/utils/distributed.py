"""Process-group set-up for torchrun (one or many nodes) with a single-process fallback.

``torchrun`` exports ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and the
rendezvous address); :func:`init_distributed` reads them, picks the device
(``cuda:<gpu>`` per local rank, else CPU) and the backend (NCCL on GPU, gloo on
CPU). Without torchrun (no ``WORLD_SIZE``) or with a world of one, no process
group is created and every helper here degrades to the single-process answer,
so the same training command runs either way.

Learning-rate scaling rule (:func:`lr_scale_ratio`)
---------------------------------------------------
The configured learning rates hold for a *reference global batch*
(``lr_reference_batch`` in the config, e.g. 512 for the LAP recipe). The global
batch of a run is ``world_size * batch_size * accum_grad`` (``batch_size`` is
per process, as in WeSpeaker), and every lr of the schedule is multiplied by
``global_batch / lr_reference_batch`` (the linear scaling rule). With
``lr_reference_batch: null`` the lrs are used as written whatever the batch.
So the paper's phase 1 (batch 512, lr 1e-3) is reproduced by 4 GPUs x 128, by
8 x 64, or by 2 x 64 with ``accum_grad: 4``; halving the global batch halves the lr.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from wespeaker_lap.checks import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, world size, local rank, device and backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # None: no process group (single process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def _parse_gpus(gpus: Any) -> list[int] | None:
    """WeSpeaker's ``gpus`` ("[0,1]", "0,1", [0, 1], 0) as a list of ids; None if unset."""
    if gpus is None or gpus == "":
        return None
    if isinstance(gpus, int):
        return [gpus]
    if isinstance(gpus, str):
        gpus = [g for g in gpus.strip("[]() ").replace(" ", "").split(",") if g]
    return [int(g) for g in gpus]


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (0, 1, 0 without it)."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(device: str = "auto", gpus: Any = None,
                     timeout_s: float = 1800.0) -> DistInfo:
    """Join the torchrun process group (if any) and choose this process's device.

    Args:
        device: ``auto`` (CUDA when available, else CPU), ``cuda`` or ``cpu``.
        gpus: optional WeSpeaker-style list of GPU ids indexed by local rank;
            default: GPU ``LOCAL_RANK``.
        timeout_s: collective timeout.
    """
    if device not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device must be auto, cuda or cpu, got {device!r}")
    rank, world_size, local_rank = env_world()
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available in this torch build "
                              f"({torch.__version__}) or on this machine; use --device cpu")
        ids = _parse_gpus(gpus)
        if ids is not None and local_rank >= len(ids):
            raise ValueError(f"local rank {local_rank} has no entry in gpus={gpus!r}")
        index = ids[local_rank] if ids is not None else local_rank
        torch.cuda.set_device(index)
        dev = torch.device("cuda", index)
    else:
        dev = torch.device("cpu")
    backend = None
    if world_size > 1:
        backend = "nccl" if use_cuda else "gloo"
        if not dist.is_initialized():
            kwargs: dict[str, Any] = {"timeout": datetime.timedelta(seconds=timeout_s)}
            if use_cuda:
                kwargs["device_id"] = dev
            dist.init_process_group(backend=backend, **kwargs)
        logger.info("rank %d/%d (local %d) on %s, backend %s", rank, world_size, local_rank,
                    dev, backend)
    return DistInfo(rank, world_size, local_rank, dev, backend)


def cleanup() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def wrap_ddp(model: nn.Module, info: DistInfo, **kwargs: Any) -> nn.Module:
    """DistributedDataParallel around ``model`` (already on ``info.device``); as is if alone.

    Parameters with ``requires_grad=False`` (a frozen SSL model) are ignored by DDP.
    """
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, **kwargs)


def lr_scale_ratio(world_size: int, batch_size: int, accum_grad: int = 1,
                   reference_batch: int | None = None) -> float:
    """Multiplier of every learning rate: global batch / reference batch (1 when no reference).

    >>> lr_scale_ratio(4, 128, 1, 512), lr_scale_ratio(2, 64, 1, 512), lr_scale_ratio(8, 16)
    (1.0, 0.25, 1.0)
    """
    assert world_size >= 1 and batch_size >= 1 and accum_grad >= 1, (
        f"world_size, batch_size and accum_grad must be >= 1, got "
        f"{world_size}, {batch_size}, {accum_grad}"
    )
    if reference_batch is None:
        return 1.0
    assert reference_batch > 0, f"lr_reference_batch must be > 0, got {reference_batch}"
    return world_size * batch_size * accum_grad / reference_batch


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` when alone)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def any_true(flag: bool, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is true on at least one (one tiny all-reduce)."""
    if not info.distributed:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_reduce_mean(values: Sequence[float], info: DistInfo) -> list[float]:
    """Mean of each value over ranks (for logging)."""
    if not info.distributed:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return (t / info.world_size).tolist()
