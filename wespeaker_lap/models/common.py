"""Small pieces shared by the backends: length masks, padding-aware batch norm, init.

All backends work channels-last: hidden states ``(B, L, T, D)`` from the frontend,
frame features ``(B, T, C)``. A frame mask is ``(B, T)`` bool, True on valid frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _tracing() -> bool:
    """True while ``torch.jit.trace`` or ``torch.export`` records the graph (ONNX export)."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting()


def lengths_to_mask(lengths: torch.Tensor | None, max_len: int) -> torch.Tensor | None:
    """Valid-frame mask from frame counts.

    lengths: (B,) long or None -> (B, max_len) bool, or None when lengths is None
    (every frame valid).

    >>> lengths_to_mask(torch.tensor([2, 3]), 3).tolist()
    [[True, True, False], [True, True, True]]
    """
    if lengths is None:
        return None
    lengths = lengths.to(torch.long)
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be (B,), got shape {tuple(lengths.shape)}")
    # (not while an ONNX export traces the graph: the values there are symbolic; the
    # ONNX runtime checks lengths before it runs the exported graph)
    if lengths.numel() and not _tracing() and (
            int(lengths.min()) < 1 or int(lengths.max()) > max_len):
        raise ValueError(f"frame lengths must lie in [1, {max_len}], got {lengths.tolist()}")
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def _momentum(bn: nn.modules.batchnorm._BatchNorm) -> float:
    """The running-average factor nn.BatchNorm would use for this step (bumps the counter)."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    return factor


def masked_batch_norm(
    x: torch.Tensor,
    bn: nn.modules.batchnorm._BatchNorm,
    mask: torch.Tensor | None = None,
    affine: bool = True,
) -> torch.Tensor:
    """Apply ``bn`` over the last axis of a channels-last tensor.

    x: (..., C) -> (..., C). ``mask`` (bool, broadcastable to ``x.shape[:-1]``)
    marks valid positions: in training, batch statistics (and the running
    averages) use valid positions only, so padding never shifts them. In eval
    mode every position is normalised alone with the running statistics and
    the mask is not needed. ``affine=False`` skips ``bn``'s weight and bias
    (the caller folds them elsewhere) while still updating its running stats.

    Works with any ``nn.BatchNorm{1,2}d`` (their state dicts are the same), so
    a layer built as ``BatchNorm2d`` over ``(B, C, H, W)`` elsewhere can load
    into one used here on ``(B, H, W, C)``.
    """
    c = x.shape[-1]
    assert c == bn.num_features, f"batch norm over {bn.num_features} channels got {c}"
    weight = bn.weight if affine else None
    bias = bn.bias if affine else None
    use_batch = bn.training or bn.running_mean is None
    if mask is not None and use_batch:
        mask = mask.expand(x.shape[:-1])
        if bool(mask.all()):
            mask = None
    if not use_batch:
        # eval: each position alone with the running statistics, written out (rather than
        # F.batch_norm on a reshaped view) so that the ONNX export keeps the channel size
        y = (x - bn.running_mean) * torch.rsqrt(bn.running_var + bn.eps)
        if affine and bn.affine:
            y = y * bn.weight + bn.bias
        return y
    if mask is None:
        factor = _momentum(bn)
        y = F.batch_norm(
            x.reshape(-1, c), bn.running_mean, bn.running_var, weight, bias,
            use_batch, factor, bn.eps,
        )
        return y.view(x.shape)

    # Training with padding: statistics over valid positions only.
    factor = _momentum(bn)
    valid = x[mask]  # (N, C)
    n = valid.shape[0]
    assert n > 0, "masked_batch_norm got no valid position"
    var, mean = torch.var_mean(valid, dim=0, correction=0)
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            bn.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
            unbiased = var.detach() * (n / max(n - 1, 1))
            bn.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
    y = (x - mean) * torch.rsqrt(var + bn.eps)
    if affine and bn.affine:
        y = y * bn.weight + bn.bias
    return y


def weighted_layer_sum(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sums over the layer axis, one per row of ``weights``.

    x: (B, L, T, D), weights: (N, L) -> (B, N, T, D). An explicit ``bmm`` on the
    ``(B, L, T*D)`` view: x is never copied or permuted, forward or backward
    (``matmul``/``einsum`` copy a transposed x for the weight gradient, 3x slower).
    """
    b, n_layers, t, d = x.shape
    w = weights.to(x.dtype).expand(b, *weights.shape)
    return torch.bmm(w, x.reshape(b, n_layers, t * d)).view(b, -1, t, d)


def masked_mean_std(
    x: torch.Tensor, mask: torch.Tensor | None, eps: float, unbiased: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation over time of the valid frames.

    x: (B, T, C), mask: (B, T) bool or None -> (mean (B, C), std (B, C)).
    The variance is clamped at ``eps`` before the square root; ``unbiased``
    divides by N - 1 (N valid frames, at least 1).
    """
    if mask is None:
        var, mean = torch.var_mean(x, dim=1, correction=1 if unbiased else 0)
        if unbiased and x.shape[1] == 1:
            var = torch.zeros_like(mean)
    else:
        m = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
        n = m.sum(1)  # (B, 1)
        mean = (x * m).sum(1) / n
        denom = (n - 1).clamp(min=1) if unbiased else n
        var = (((x - mean[:, None, :]) * m) ** 2).sum(1) / denom
    return mean, torch.sqrt(var.clamp(min=eps))


def xavier_init_(module: nn.Module) -> None:
    """Xavier-uniform every weight with more than one dimension, zero every bias.

    The LAP authors' initialisation for their backends (batch-norm weights are
    1-D and keep their ones; their biases are zero already).
    """
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if "weight" in leaf and p.dim() > 1:
            nn.init.xavier_uniform_(p)
        elif "bias" in leaf:
            nn.init.zeros_(p)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def channels_first_batch_norm(
    x: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm, mask: torch.Tensor | None
) -> torch.Tensor:
    """``bn`` on a channels-first tensor, padding-aware in training.

    x: (B, C, *S) -> (B, C, *S); mask: bool broadcastable to (B, *S) or None.
    Without padding (or in eval mode) this is exactly ``bn(x)``.
    """
    if mask is None or not bn.training or bool(mask.all()):
        return bn(x)
    perm = (0, *range(2, x.dim()), 1)
    inv = (0, x.dim() - 1, *range(1, x.dim() - 1))
    return masked_batch_norm(x.permute(perm), bn, mask).permute(inv)
