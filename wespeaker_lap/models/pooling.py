"""Temporal pooling: a padded frame sequence -> one utterance-level vector.

Both poolings take ``x: (B, T, C)`` and a frame mask ``(B, T)`` (True on valid
frames, ``None`` when every frame is valid); padded frames never enter a
statistic, so an utterance's output does not change when it is padded inside a
batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wespeaker_lap.models.common import masked_batch_norm, masked_mean_std


class TSTP(nn.Module):
    """Temporal statistics pooling (x-vector): mean and standard deviation over time.

    x: (B, T, C) -> (B, 2C). The std uses N - 1 and a floor of ``eps`` on the variance.
    """

    def __init__(self, in_dim: int, eps: float = 1e-7):
        super().__init__()
        assert in_dim > 0, f"in_dim must be positive, got {in_dim}"
        self.in_dim = in_dim
        self.out_dim = 2 * in_dim
        self.eps = eps

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mean, std = masked_mean_std(x, mask, self.eps, unbiased=True)
        return torch.cat([mean, std], dim=1)


class ASTP(nn.Module):
    """Attentive statistics pooling (ECAPA-TDNN), channel-wise and padding-aware.

    With ``global_context`` the attention sees ``[x, mean_t(x), std_t(x)]``; the
    first 1x1 layer ``3C -> K`` is applied as ``W_x x + (W_m mean + W_s std)`` so the
    time-constant part is computed once per utterance, not once per frame.
    ``activation="relu_bn"`` is the LAP paper's attention (``Linear, ReLU,
    BatchNorm, Linear``, ``K = C/2``); ``"tanh"`` is WeSpeaker's (``Linear, tanh,
    Linear``, ``K = 128``). A softmax over time per channel gives the weights;
    in training, each valid frame is dropped from the softmax with probability
    ``frame_dropout`` (at least one frame is always kept). Weighted mean and
    weighted std (variance clamped at ``eps``).

    x: (B, T, C), mask (B, T) -> (B, 2C)

    >>> pool = ASTP(8).eval()
    >>> tuple(pool(torch.randn(2, 5, 8), torch.tensor([[1] * 5, [1] * 3 + [0] * 2]).bool()).shape)
    (2, 16)
    """

    def __init__(
        self,
        in_dim: int,
        bottleneck_dim: int | None = None,
        global_context: bool = True,
        activation: str = "relu_bn",
        frame_dropout: float = 0.1,
        eps: float = 1e-4,
    ):
        super().__init__()
        assert in_dim > 0, f"in_dim must be positive, got {in_dim}"
        assert activation in ("relu_bn", "tanh"), (
            f"activation must be 'relu_bn' or 'tanh', got {activation!r}"
        )
        assert 0.0 <= frame_dropout < 1.0, f"frame_dropout must be in [0, 1), got {frame_dropout}"
        bottleneck_dim = in_dim // 2 if bottleneck_dim is None else bottleneck_dim
        assert bottleneck_dim > 0, f"bottleneck_dim must be positive, got {bottleneck_dim}"
        self.in_dim = in_dim
        self.out_dim = 2 * in_dim
        self.global_context = global_context
        self.activation = activation
        self.frame_dropout = frame_dropout
        self.eps = eps
        self.attn_in = nn.Linear(in_dim * (3 if global_context else 1), bottleneck_dim)
        self.attn_norm = nn.BatchNorm1d(bottleneck_dim) if activation == "relu_bn" else None
        self.attn_out = nn.Linear(bottleneck_dim, in_dim)

    #: In eval mode, utterances longer than this many frames are pooled in blocks of it
    #: (an online softmax over time), so memory does not hold several (T, C) temporaries.
    eval_block_frames = 8192

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, c = x.shape
        assert c == self.in_dim, f"ASTP built for {self.in_dim} channels got {c}"
        if not self.training and t > self.eval_block_frames:
            return self._forward_blocks(x, mask)
        ctx = None
        if self.global_context:
            ctx = self._context(*masked_mean_std(x, mask, self.eps, unbiased=True))
        logits = self._logits(x, ctx, mask)  # (B, T, C)

        keep = mask
        if self.training and self.frame_dropout > 0:
            drop = torch.rand(b, t, device=x.device) < self.frame_dropout
            kept = ~drop if mask is None else mask & ~drop
            # an utterance whose every frame was dropped keeps them all
            empty = ~kept.any(dim=1, keepdim=True)
            full = torch.ones_like(kept) if mask is None else mask
            keep = torch.where(empty, full, kept)
        if keep is not None:
            logits = logits.masked_fill(~keep[:, :, None], torch.finfo(logits.dtype).min)
        alpha = torch.softmax(logits, dim=1)
        mu = (alpha * x).sum(1)  # (B, C)
        var = (alpha * x * x).sum(1) - mu * mu
        return torch.cat([mu, torch.sqrt(var.clamp(min=self.eps))], dim=1)

    def _context(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """The global context's part of ``attn_in`` (with its bias): (B, C) x 2 -> (B, K)."""
        return F.linear(torch.cat([mean, std], dim=1), self.attn_in.weight[:, self.in_dim:],
                        self.attn_in.bias)

    def _logits(self, x: torch.Tensor, ctx: torch.Tensor | None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention logits of frames (B, t, C) -> (B, t, C); ``ctx`` (B, K) is the
        global context's part of ``attn_in`` (with its bias), ``mask`` the frames the
        batch norm's statistics use in training."""
        c = self.in_dim
        if ctx is not None:
            h = F.linear(x, self.attn_in.weight[:, :c]) + ctx[:, None, :]  # (B, t, K)
        else:
            h = self.attn_in(x)
        if self.attn_norm is not None:
            h = masked_batch_norm(torch.relu(h), self.attn_norm, mask)
        else:
            h = torch.tanh(h)
        return self.attn_out(h)

    def _forward_blocks(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Eval-mode pooling of long utterances, ``eval_block_frames`` frames at a time.

        The same function as :meth:`forward` in eval mode (equal to rounding): the
        global mean and std are sums over blocks, and the softmax over time is an
        online one (a running maximum per channel rescales the running sums).
        """
        b, t, c = x.shape
        step = self.eval_block_frames
        valid = torch.ones(b, t, dtype=torch.bool, device=x.device) if mask is None else mask
        n = valid.sum(1, keepdim=True).to(x.dtype)  # (B, 1)
        ctx = None
        if self.global_context:
            total = x.new_zeros(b, c)
            for s in range(0, t, step):
                total += (x[:, s:s + step] * valid[:, s:s + step, None]).sum(1)
            mean = total / n
            sq = x.new_zeros(b, c)
            for s in range(0, t, step):
                d = (x[:, s:s + step] - mean[:, None, :]) * valid[:, s:s + step, None]
                sq += (d * d).sum(1)
            std = torch.sqrt((sq / (n - 1).clamp(min=1)).clamp(min=self.eps))
            ctx = self._context(mean, std)
        run_max = x.new_full((b, c), float("-inf"))
        den = x.new_zeros(b, c)
        sum_x = x.new_zeros(b, c)
        sum_xx = x.new_zeros(b, c)
        for s in range(0, t, step):
            xb = x[:, s:s + step]
            logits = self._logits(xb, ctx)
            logits = logits.masked_fill(~valid[:, s:s + step, None], float("-inf"))
            new_max = torch.maximum(run_max, logits.amax(1))
            safe = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
            scale = torch.exp(run_max - safe)  # exp(-inf) = 0 before the first valid frame
            w = torch.exp(logits - safe[:, None, :])
            den = den * scale + w.sum(1)
            sum_x = sum_x * scale + (w * xb).sum(1)
            sum_xx = sum_xx * scale + (w * xb * xb).sum(1)
            run_max = new_max
        mu = sum_x / den
        var = sum_xx / den - mu * mu
        return torch.cat([mu, torch.sqrt(var.clamp(min=self.eps))], dim=1)


class EmbeddingLayer(nn.Module):
    """Pooled statistics -> speaker embedding: ``BatchNorm, Linear, BatchNorm``.

    x: (B, in_dim) -> (B, embed_dim). ``pre_bn`` / ``post_bn`` switch the two norms
    (WeSpeaker's ECAPA has no embedding norm: ``post_bn=False``).
    """

    def __init__(self, in_dim: int, embed_dim: int, pre_bn: bool = True, post_bn: bool = True):
        super().__init__()
        assert in_dim > 0 and embed_dim > 0, (
            f"sizes must be positive, got in_dim={in_dim} embed_dim={embed_dim}"
        )
        self.pre_norm = nn.BatchNorm1d(in_dim) if pre_bn else nn.Identity()
        self.linear = nn.Linear(in_dim, embed_dim)
        self.post_norm = nn.BatchNorm1d(embed_dim) if post_bn else nn.Identity()
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post_norm(self.linear(self.pre_norm(x)))
