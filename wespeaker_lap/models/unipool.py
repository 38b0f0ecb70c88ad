"""UniPool: a layer/frame network over the SSL layers, then LAP and ASTP.

Kim et al., "Universal Pooling Method of Multi-layer Features from Pretrained Models for
Speaker Verification", 2024.

Layout inside the layer/frame network is channels-first ``(B, C, L, T)`` (layers as
image rows, frames as columns) for the 2-D convolutions.
"""

from __future__ import annotations

import torch
from torch import nn

from wespeaker_lap.models.common import channels_first_batch_norm, lengths_to_mask
from wespeaker_lap.models.layer_aggregation import LayerAttentivePooling
from wespeaker_lap.models.pooling import ASTP, EmbeddingLayer


class LayerMixScale(nn.Module):
    """Mix layers, then scale every layer and frame by a sigmoid score.

    Output layer ``i`` is ``sum_j softmax(m_i)_j x_j`` with logits ``m_i`` initialised
    one-hot on layer ``i``; each (layer, frame) then gets
    ``sigmoid(v_i . x + c_i)`` (0 on padded frames).

    x: (B, C, L, T), mask (B, T) -> (B, C, L, T)
    """

    def __init__(self, channels: int, num_layers: int):
        super().__init__()
        self.mix_logits = nn.Parameter(torch.eye(num_layers))
        self.score_weight = nn.Parameter(torch.empty(num_layers, channels))
        self.score_bias = nn.Parameter(torch.zeros(num_layers))
        nn.init.xavier_uniform_(self.score_weight)

    def forward(self, x, mask=None):
        x = torch.einsum("bcjt,ij->bcit", x, torch.softmax(self.mix_logits, dim=1))
        s = torch.einsum("bcit,ic->bit", x, self.score_weight) + self.score_bias[:, None]
        s = torch.sigmoid(s)  # (B, L, T)
        if mask is not None:
            s = s * mask[:, None, :]
        return x * s[:, None]


class MultiDilatedConv(nn.Module):
    """Sum of BN-ReLU-Conv3x3 branches, branch ``j`` on input ``j`` with dilation ``d_j``.

    inputs: list of (B, C, L, T) -> (B, C, L, T). Padded frames are zeroed before each conv.
    """

    def __init__(self, channels: int, dilations: list[int]):
        super().__init__()
        self.bns = nn.ModuleList(nn.BatchNorm2d(channels) for _ in dilations)
        self.convs = nn.ModuleList(
            nn.Conv2d(channels, channels, kernel_size=3, dilation=d, padding=d) for d in dilations
        )

    def forward(self, inputs, mask=None, m=None):
        out = 0
        bn_mask = None if mask is None else mask[:, None]  # (B, 1, T) over (B, L, T)
        for x, bn, conv in zip(inputs, self.bns, self.convs, strict=True):
            y = torch.relu(channels_first_batch_norm(x, bn, bn_mask))
            out = out + conv(y if m is None else y * m)
        return out


class D2Block(nn.Module):
    """Densely connected multi-dilated block: 1x1 to ``growth``, then layer ``i`` sums
    convs (dilations 1, 2, 4...) over all earlier outputs; outputs concatenated.

    x: (B, C_in, L, T) -> (B, growth * (len(dilations) + 1), L, T)
    """

    def __init__(self, in_channels: int, growth: int, dilations=(1, 2, 4)):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, growth, kernel_size=1)
        self.dense = nn.ModuleList(
            MultiDilatedConv(growth, list(dilations[: i + 1])) for i in range(len(dilations))
        )
        self.out_channels = growth * (len(dilations) + 1)

    def forward(self, x, mask=None, m=None):
        outs = [self.proj(x)]
        for layer in self.dense:
            outs.append(layer(outs, mask, m))
        return torch.cat(outs, dim=1)


class ChannelAttention(nn.Module):
    """Squeeze-excitation over channels from the masked average and max over (L, T).

    x: (B, C, L, T) -> (B, C, L, T)
    """

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        def mlp():
            return nn.Sequential(
                nn.Linear(channels, hidden), nn.ReLU(), nn.BatchNorm1d(hidden),
                nn.Linear(hidden, channels),
            )

        self.avg_mlp = mlp()
        self.max_mlp = mlp()

    def forward(self, x, mask=None, m=None):
        if m is None:
            avg, mx = x.mean(dim=(2, 3)), x.amax(dim=(2, 3))
        else:
            avg = (x * m).sum(dim=(2, 3)) / (m.sum(dim=(2, 3)) * x.shape[2])
            mx = x.masked_fill(m == 0, torch.finfo(x.dtype).min).amax(dim=(2, 3))
        scale = torch.sigmoid(self.avg_mlp(avg) + self.max_mlp(mx))
        return x * scale[:, :, None, None]


class D3Block(nn.Module):
    """One UniPool block: layer mixing + scoring, then ``x + SE(D2Block(x))``."""

    def __init__(self, channels: int, num_layers: int, growth: int):
        super().__init__()
        assert channels == growth * 4, (
            f"block channels={channels} must equal 4 * growth={4 * growth} (3 dilations + input)"
        )
        self.mix = LayerMixScale(channels, num_layers)
        self.d2 = D2Block(channels, growth)
        self.se = ChannelAttention(channels, channels // 4)

    def forward(self, x, mask=None, m=None):
        x = self.mix(x, mask)
        return x + self.se(self.d2(x, mask, m), mask, m)


class UniPool(nn.Module):
    """UniPool backend: layers 1..L -> 1x1 conv to ``channels`` + BN -> D3 blocks ->
    LAP (4 heads, max over layers, ``channels`` out) -> ASTP -> 192-d embedding.

    x: (B, L, T, D), lengths (B,) -> (B, embed_dim); ``return_layer_scores`` adds LAP's
    scores (B, 4, T, L - 1) over the Transformer layers.

    Differences from the authors' code, all for padding-awareness or clarity: padded
    frames are zeroed before every 3x3 convolution and excluded from the channel
    attention statistics and from batch statistics; the block residual is added once
    (the authors' nesting adds the input twice); ASTP drops 10% of frames from its
    softmax in training (the authors drop attention weights).
    """

    def __init__(
        self,
        feat_dim: int,
        num_layers: int,
        embed_dim: int = 192,
        channels: int = 512,
        num_blocks: int = 1,
        heads: int = 4,
        drop_first_layer: bool = True,
        frame_dropout: float = 0.1,
    ):
        super().__init__()
        n = num_layers - 1 if drop_first_layer else num_layers
        assert n >= 2, f"UniPool needs at least 2 layers after dropping layer 0, got {n}"
        assert num_blocks >= 1, f"num_blocks must be >= 1, got {num_blocks}"
        assert channels % 4 == 0, f"channels={channels} must be divisible by 4"
        self.num_layers = num_layers
        self.first = 1 if drop_first_layer else 0
        self.embed_dim = embed_dim
        self.in_proj = nn.Conv2d(feat_dim, channels, kernel_size=1)
        self.in_norm = nn.BatchNorm2d(channels)
        self.blocks = nn.ModuleList(D3Block(channels, n, channels // 4) for _ in range(num_blocks))
        self.lap = LayerAttentivePooling(n, channels * num_blocks, channels, heads, bias=False)
        self.pooling = ASTP(channels, frame_dropout=frame_dropout)
        self.embedding = EmbeddingLayer(self.pooling.out_dim, embed_dim)

    def forward(self, x, lengths=None, return_layer_scores=False):
        b, n_layers, t, d = x.shape
        assert n_layers == self.num_layers, (
            f"UniPool built for {self.num_layers} layers got {n_layers}"
        )
        mask = lengths_to_mask(lengths, t)
        m = None if mask is None else mask[:, None, None, :].to(x.dtype)  # (B, 1, 1, T)
        y = x[:, self.first:].permute(0, 3, 1, 2)  # (B, D, L, T)
        y = channels_first_batch_norm(self.in_proj(y), self.in_norm,
                                      None if mask is None else mask[:, None])
        outs = []
        for block in self.blocks:
            y = block(y, mask, m)
            outs.append(y)
        y = torch.cat(outs, dim=1).permute(0, 2, 3, 1)  # (B, L, T, C)
        frames, scores = self.lap(y, mask, return_scores=True)
        emb = self.embedding(self.pooling(frames, mask))
        return (emb, scores) if return_layer_scores else emb
