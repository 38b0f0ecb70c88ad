"""A GroupNorm over time that takes each utterance's statistics over its own valid frames.

The CNN of the Base SSL models starts with a GroupNorm with one group per
channel, i.e. a normalisation over time, through which padding would reach the
valid frames of a batch; :class:`wespeaker_lap.frontend.ssl.SSLFrontend` swaps in this
drop-in subclass.
"""

from __future__ import annotations

import torch
from torch import nn


class LengthAwareGroupNorm(nn.GroupNorm):
    """GroupNorm with one group per channel, normalising over each utterance's valid frames.

    Same parameters and state-dict keys as the ``nn.GroupNorm`` it replaces. Before a
    forward, the owner sets :attr:`valid_frames` (``(B,)`` long); when it is ``None``
    every frame counts, exactly like ``nn.GroupNorm``. Each padded utterance is
    normalised by the native kernel on its valid frames alone (which accumulates in
    float32 for reduced-precision inputs too), so its output is the same computation
    as for the utterance run alone; padded frames come out as zeros.

    x: (B, C, T) -> (B, C, T)
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True):
        assert num_groups == num_channels, (
            f"LengthAwareGroupNorm needs one group per channel, got {num_groups} groups "
            f"for {num_channels} channels"
        )
        super().__init__(num_groups, num_channels, eps, affine)
        self.valid_frames: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[-1]
        if self.valid_frames is None:
            return super().forward(x)
        valid = self.valid_frames.tolist()
        if min(valid) >= t:
            return super().forward(x)
        out = x.new_zeros(x.shape)
        for i, v in enumerate(valid):
            out[i : i + 1, :, :v] = super().forward(x[i : i + 1, :, :v])
        return out
