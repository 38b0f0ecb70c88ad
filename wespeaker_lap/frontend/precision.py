"""The frozen forward's precision: the dtype names, and the probe behind ``dtype: auto``.

:func:`auto_dtype` chooses, per device type, the dtype a frozen SSL forward runs
in: bfloat16 on GPUs that support it; on CPUs only where a short probe finds
bfloat16 matrix products clearly faster than float32.
"""

from __future__ import annotations

import math
import time

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = (*DTYPES, "auto")

_AUTO_CACHE: dict[str, tuple[torch.dtype, str]] = {}


def _gemm_seconds(dtypes: tuple[torch.dtype, ...], repeats: int = 9) -> list[float]:
    """Best wall time per dtype of a Base+-sized FFN product (256 x 768 @ 768 x 3072) on
    the CPU; the dtypes alternate, so that load from other processes hits them alike."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(256, 768, generator=gen)
    b = torch.randn(768, 3072, generator=gen)
    pairs = [(a.to(dt), b.to(dt)) for dt in dtypes]
    best = [math.inf] * len(dtypes)
    with torch.no_grad():
        for x, y in pairs:
            x @ y  # first call: kernel selection, packing
        for _ in range(repeats):
            for i, (x, y) in enumerate(pairs):
                t0 = time.perf_counter()
                x @ y
                best[i] = min(best[i], time.perf_counter() - t0)
    return best


def auto_dtype(device: torch.device | str) -> tuple[torch.dtype, str]:
    """The frozen-forward dtype that is fastest on ``device``, and why (cached per device type).

    * CUDA: bfloat16 where the GPU supports it (Ampere and later), else float32;
    * CPU: a start-up probe (a few milliseconds) times one float32 and one
      bfloat16 matrix product of a Base+ FFN's shape; bfloat16 is chosen only
      when it is at least 1.25x faster (CPUs with AMX; with AVX-512 BF16 alone
      it is usually slower than float32);
    * anything else: float32.
    """
    kind = torch.device(device).type
    if kind in _AUTO_CACHE:
        return _AUTO_CACHE[kind]
    if kind == "cuda":
        if torch.cuda.is_bf16_supported():
            choice = (torch.bfloat16, "CUDA device supports bfloat16")
        else:
            choice = (torch.float32, "CUDA device without bfloat16 support")
    elif kind == "cpu":
        choice = _cpu_choice()
    else:
        choice = (torch.float32, f"no reduced-precision rule for device type {kind!r}")
    _AUTO_CACHE[kind] = choice
    return choice


def cpu_has_bf16_kernels() -> bool:
    """Whether oneDNN has native bfloat16 kernels on this CPU (AVX-512 BF16, AMX, ...)."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without the op
        return False


def _cpu_choice() -> tuple[torch.dtype, str]:
    """The CPU rule of :func:`auto_dtype`: float32 without bf16 kernels or when the probe
    fails; else the faster of the two by at least 1.25x."""
    if not cpu_has_bf16_kernels():
        return torch.float32, "CPU without bfloat16 kernels (oneDNN): float32"
    try:
        fp32, bf16 = _gemm_seconds((torch.float32, torch.bfloat16))
    except RuntimeError as e:  # a probe that cannot run keeps float32
        return torch.float32, f"CPU probe failed ({e}): float32"
    flops = 2 * 256 * 768 * 3072
    speed = f"CPU probe: float32 {flops / fp32 / 1e9:.0f} GFLOP/s, bfloat16 " \
            f"{flops / bf16 / 1e9:.0f} GFLOP/s"
    return (torch.bfloat16, speed) if bf16 * 1.25 <= fp32 else (torch.float32, speed)


def autocast_dtype(requested: str, device: torch.device | str) -> tuple[torch.dtype, str]:
    """The autocast dtype of a trained forward: ``float32`` (autocast off), ``bfloat16``,
    or ``auto`` (:func:`auto_dtype`'s choice: bfloat16 only where it is faster).

    float16 is not offered: training in it needs loss scaling (``amp_dtype`` does that on
    GPUs). Returns the dtype and why.
    """
    if requested == "float32":
        return torch.float32, "float32 requested"
    if requested == "bfloat16":
        return torch.bfloat16, "bfloat16 requested"
    if requested == "auto":
        return auto_dtype(device)
    raise ValueError(f"dtype must be one of ['float32', 'bfloat16', 'auto'], got {requested!r}")


def dtype_name(dtype: torch.dtype) -> str:
    """The :data:`DTYPES` name of ``dtype``."""
    return next(k for k, v in DTYPES.items() if v == dtype)
