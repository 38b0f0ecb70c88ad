"""ECAPA-TDNN on the SUPERB weighted sum of SSL layers (the WavLM paper's baseline).

The network is WeSpeaker's ``ECAPA_TDNN_GLOB_c512/c1024`` (SE-Res2Net blocks with
dilations 2, 3, 4, scale 8, SE bottleneck 128; 1x1 conv of the three block
outputs to 1536; ASTP with global context, tanh attention, bottleneck 128;
BatchNorm; Linear to 192; no embedding norm), made padding-aware: padded
frames are zeroed before every convolution wider than one frame, so valid
frames see exactly the zero padding they would see alone, and the SE means and
the pooling use valid frames only. About 7.95M parameters on 768-d features
(c512).
"""

from __future__ import annotations

import torch
from torch import nn

from wespeaker_lap.models.common import channels_first_batch_norm, lengths_to_mask
from wespeaker_lap.models.layer_aggregation import WeightedLayerSum
from wespeaker_lap.models.pooling import ASTP, EmbeddingLayer


def _zero_pad(x: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
    return x if m is None else x * m


class Conv1dReluBn(nn.Module):
    """Conv1d -> ReLU -> BatchNorm. x: (B, C_in, T) -> (B, C_out, T)."""

    def __init__(self, in_channels, out_channels, kernel_size=1, padding=0, dilation=1):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=padding,
                              dilation=dilation)
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x, mask=None, m=None):
        if self.conv.kernel_size[0] > 1:
            x = _zero_pad(x, m)
        return channels_first_batch_norm(torch.relu(self.conv(x)), self.bn, mask)


class Res2Conv1dReluBn(nn.Module):
    """Res2Net convolution: ``scale`` channel groups, each conv sees the previous one's output.

    x: (B, C, T) -> (B, C, T)
    """

    def __init__(self, channels, kernel_size, padding, dilation, scale=8):
        super().__init__()
        assert channels % scale == 0, f"channels={channels} not divisible by scale={scale}"
        self.width = channels // scale
        self.nums = scale - 1 if scale > 1 else 1
        self.scale = scale
        self.convs = nn.ModuleList(
            nn.Conv1d(self.width, self.width, kernel_size, padding=padding, dilation=dilation)
            for _ in range(self.nums)
        )
        self.bns = nn.ModuleList(nn.BatchNorm1d(self.width) for _ in range(self.nums))

    def forward(self, x, mask=None, m=None):
        spx = torch.split(x, self.width, dim=1)
        out = []
        sp = spx[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            if i:
                sp = sp + spx[i]
            sp = channels_first_batch_norm(torch.relu(conv(_zero_pad(sp, m))), bn, mask)
            out.append(sp)
        if self.scale > 1:
            out.append(spx[self.nums])
        return torch.cat(out, dim=1)


class SEConnect(nn.Module):
    """Squeeze-excitation over channels from the mean of the valid frames. (B, C, T) -> same."""

    def __init__(self, channels, bottleneck=128):
        super().__init__()
        self.linear1 = nn.Linear(channels, bottleneck)
        self.linear2 = nn.Linear(bottleneck, channels)

    def forward(self, x, mask=None, m=None):
        s = x.mean(dim=2) if m is None else (x * m).sum(2) / m.sum(2)
        s = torch.sigmoid(self.linear2(torch.relu(self.linear1(s))))
        return x * s[:, :, None]


class SERes2Block(nn.Module):
    """1x1 conv, Res2 conv, 1x1 conv, SE, residual. (B, C, T) -> (B, C, T)."""

    def __init__(self, channels, kernel_size, padding, dilation, scale=8):
        super().__init__()
        self.conv1 = Conv1dReluBn(channels, channels)
        self.res2 = Res2Conv1dReluBn(channels, kernel_size, padding, dilation, scale)
        self.conv2 = Conv1dReluBn(channels, channels)
        self.se = SEConnect(channels)

    def forward(self, x, mask=None, m=None):
        y = self.conv1(x, mask, m)
        y = self.res2(y, mask, m)
        y = self.conv2(y, mask, m)
        return x + self.se(y, mask, m)


class SSL_ECAPA_TDNN(nn.Module):
    """SUPERB weighted sum of the SSL layers -> ECAPA-TDNN (``channels`` 512 or 1024).

    x: (B, L, T, D), lengths (B,) -> (B, embed_dim); ``return_layer_scores`` adds
    the weighted sum's weights as (B, 1, T, L).
    """

    def __init__(
        self,
        feat_dim: int,
        num_layers: int,
        embed_dim: int = 192,
        channels: int = 512,
        emb_bn: bool = False,
    ):
        super().__init__()
        assert channels > 0 and channels % 8 == 0, (
            f"channels must be a positive multiple of 8, got {channels}"
        )
        self.embed_dim = embed_dim
        self.aggregation = WeightedLayerSum(num_layers)
        self.layer1 = Conv1dReluBn(feat_dim, channels, kernel_size=5, padding=2)
        self.layer2 = SERes2Block(channels, kernel_size=3, padding=2, dilation=2)
        self.layer3 = SERes2Block(channels, kernel_size=3, padding=3, dilation=3)
        self.layer4 = SERes2Block(channels, kernel_size=3, padding=4, dilation=4)
        self.conv = nn.Conv1d(channels * 3, 1536, kernel_size=1)
        self.pooling = ASTP(1536, bottleneck_dim=128, activation="tanh", frame_dropout=0.0,
                            eps=1e-7)
        self.embedding = EmbeddingLayer(self.pooling.out_dim, embed_dim, post_bn=emb_bn)

    def forward(self, x, lengths=None, return_layer_scores=False):
        mask = lengths_to_mask(lengths, x.shape[2])
        if return_layer_scores:
            feats, scores = self.aggregation(x, mask, return_scores=True)
        else:
            feats = self.aggregation(x, mask)
        emb = self.pool_frames(feats, lengths)
        return (emb, scores) if return_layer_scores else emb

    # -- the two halves, for long audio (see SpeakerEmbeddingExtractor.embed)
    def frame_features(self, x: torch.Tensor, lengths: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weighted layer sum, frame by frame: (B, L, T, D) -> (B, T, D), layer weights."""
        return self.aggregation(x, lengths_to_mask(lengths, x.shape[2]), return_scores=True)

    def pool_frames(self, feats: torch.Tensor, lengths: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """The TDNN (time context) and pooling: (B, T, D) -> (B, embed_dim)."""
        mask = lengths_to_mask(lengths, feats.shape[1])
        m = None if mask is None else mask[:, None, :].to(feats.dtype)  # (B, 1, T)
        y = feats.transpose(1, 2)  # (B, D, T)
        out1 = self.layer1(y, mask, m)
        out2 = self.layer2(out1, mask, m)
        out3 = self.layer3(out2, mask, m)
        out4 = self.layer4(out3, mask, m)
        out = torch.relu(self.conv(torch.cat([out2, out3, out4], dim=1)))  # (B, 1536, T)
        return self.embedding(self.pooling(out.transpose(1, 2), mask))


class SSL_ECAPA_TDNN_c512(SSL_ECAPA_TDNN):
    """ECAPA-TDNN with 512 channels on the weighted sum (7.95M on 768-d features)."""

    def __init__(self, feat_dim: int, num_layers: int, embed_dim: int = 192, emb_bn: bool = False):
        super().__init__(feat_dim, num_layers, embed_dim, channels=512, emb_bn=emb_bn)


class SSL_ECAPA_TDNN_c1024(SSL_ECAPA_TDNN):
    """ECAPA-TDNN with 1024 channels on the weighted sum."""

    def __init__(self, feat_dim: int, num_layers: int, embed_dim: int = 192, emb_bn: bool = False):
        super().__init__(feat_dim, num_layers, embed_dim, channels=1024, emb_bn=emb_bn)
