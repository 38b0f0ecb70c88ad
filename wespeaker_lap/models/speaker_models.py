"""Light backends: layer aggregation + temporal pooling + embedding layer.

Every speaker model in this package has the same interface:
``Model(feat_dim, num_layers, embed_dim=..., ...)`` (``feat_dim``/``num_layers`` are
the frontend's ``hidden_size``/``num_layers``) and
``forward(x (B, L, T, D), lengths (B,) frames or None) -> (B, embed_dim)``.
"""

from __future__ import annotations

import torch
from torch import nn

from wespeaker_lap.models.common import lengths_to_mask, xavier_init_
from wespeaker_lap.models.layer_aggregation import (
    LayerAttentivePooling,
    SingleLayer,
    WeightedLayerSum,
)
from wespeaker_lap.models.pooling import ASTP, TSTP, EmbeddingLayer


class AggregatePoolModel(nn.Module):
    """``aggregation -> pooling -> embedding``, padding-aware throughout.

    x: (B, L, T, D), lengths (B,) -> (B, embed_dim); with ``return_layer_scores``
    also the aggregation's layer scores (B, heads, T, L).
    """

    def __init__(self, aggregation: nn.Module, pooling: nn.Module, embed_dim: int):
        super().__init__()
        self.aggregation = aggregation
        self.pooling = pooling
        self.embedding = EmbeddingLayer(pooling.out_dim, embed_dim)
        self.embed_dim = embed_dim
        xavier_init_(self)  # the LAP authors' initialisation of the whole backend

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        return_layer_scores: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        mask = lengths_to_mask(lengths, x.shape[2])
        if return_layer_scores:
            frames, scores = self.aggregation(x, mask, return_scores=True)
        else:
            frames = self.aggregation(x, mask)
        emb = self.embedding(self.pooling(frames, mask))
        return (emb, scores) if return_layer_scores else emb

    # -- the two halves, for long audio (see SpeakerEmbeddingExtractor.embed)
    def frame_features(self, x: torch.Tensor, lengths: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-frame part (each frame on its own in eval mode): (B, L, T, D) -> (B, T, C).

        Also returns the layer scores (B, heads, T, L) when the aggregation has them.
        """
        mask = lengths_to_mask(lengths, x.shape[2])
        return self.aggregation(x, mask, return_scores=True)

    def pool_frames(self, frames: torch.Tensor, lengths: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """Utterance part: frame features (B, T, C) -> embeddings (B, embed_dim)."""
        return self.embedding(self.pooling(frames, lengths_to_mask(lengths, frames.shape[1])))


class LAP_ASTP(AggregatePoolModel):
    """The LAP paper's backend: LAP (16 heads, 512 out) + ASTP + 192-d embedding.

    About 1.71M parameters on 13 x 768 features, 2.31M on 25 x 1024.
    """

    def __init__(
        self,
        feat_dim: int,
        num_layers: int,
        embed_dim: int = 192,
        lap_dim: int = 512,
        heads: int = 16,
        score_dropout: float = 0.1,
        frame_dropout: float = 0.1,
    ):
        super().__init__(
            LayerAttentivePooling(num_layers, feat_dim, lap_dim, heads, score_dropout),
            ASTP(lap_dim, frame_dropout=frame_dropout),
            embed_dim,
        )


class SUPERB_ASTP(AggregatePoolModel):
    """SUPERB weighted sum + ASTP (on the SSL width) + 192-d embedding (1.48M on 13 x 768)."""

    def __init__(
        self, feat_dim: int, num_layers: int, embed_dim: int = 192, frame_dropout: float = 0.1
    ):
        super().__init__(
            WeightedLayerSum(num_layers), ASTP(feat_dim, frame_dropout=frame_dropout), embed_dim
        )


class SUPERB_TSTP(AggregatePoolModel):
    """SUPERB weighted sum + mean/std pooling + 192-d embedding (the plainest baseline)."""

    def __init__(self, feat_dim: int, num_layers: int, embed_dim: int = 192):
        super().__init__(WeightedLayerSum(num_layers), TSTP(feat_dim), embed_dim)


class LastLayer_ASTP(AggregatePoolModel):
    """One hidden state (``layer``, default the last) + ASTP + 192-d embedding."""

    def __init__(
        self,
        feat_dim: int,
        num_layers: int,
        embed_dim: int = 192,
        layer: int = -1,
        frame_dropout: float = 0.1,
    ):
        super().__init__(
            SingleLayer(num_layers, layer), ASTP(feat_dim, frame_dropout=frame_dropout), embed_dim
        )
