"""Multi-head factorized attentive pooling (MHFA), padding-aware.

Peng, Stafylakis, Gu, Plchot, Mošner, Burget, Černocký, "An attention-based backend
allowing efficient fine-tuning of transformer models for speaker verification", IEEE SLT 2022."""

from __future__ import annotations

import torch
from torch import nn

from wespeaker_lap.models.common import lengths_to_mask, weighted_layer_sum


class MHFA(nn.Module):
    """MHFA: keys and values from two softmax layer weightings, H attention heads over time.

    ``k = sum_l softmax(w_k)_l x_l``, ``v = sum_l softmax(w_v)_l x_l`` (weights start
    equal); both compressed ``D -> compression_dim``; ``Linear(compression_dim, H)``
    on the keys and a softmax over the valid frames give H attention maps; each
    pools the compressed values; the ``H * compression_dim`` concatenation goes
    through ``Linear`` to ``embed_dim``. H = 64 as in WeSpeaker's recipes: about
    2.3M parameters on 13 x 768.

    x: (B, L, T, D), lengths (B,) -> (B, embed_dim); ``return_layer_scores`` adds
    the key and value layer weights as two "heads", (B, 2, T, L).

    >>> m = MHFA(feat_dim=16, num_layers=3, embed_dim=8, head_nb=4, compression_dim=6)
    >>> tuple(m(torch.randn(2, 3, 5, 16), torch.tensor([5, 3])).shape)
    (2, 8)
    """

    def __init__(
        self,
        feat_dim: int,
        num_layers: int,
        embed_dim: int = 256,
        head_nb: int = 64,
        compression_dim: int = 128,
    ):
        super().__init__()
        assert min(feat_dim, num_layers, embed_dim, head_nb, compression_dim) > 0, (
            f"MHFA sizes must be positive: feat_dim={feat_dim} num_layers={num_layers} "
            f"embed_dim={embed_dim} head_nb={head_nb} compression_dim={compression_dim}"
        )
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.weights_k = nn.Parameter(torch.zeros(num_layers))
        self.weights_v = nn.Parameter(torch.zeros(num_layers))
        self.cmp_linear_k = nn.Linear(feat_dim, compression_dim)
        self.cmp_linear_v = nn.Linear(feat_dim, compression_dim)
        self.att_head = nn.Linear(compression_dim, head_nb)
        self.pooling_fc = nn.Linear(head_nb * compression_dim, embed_dim)

    def layer_weights(self) -> torch.Tensor:
        """Softmax layer weights of keys and values, (2, L)."""
        return torch.softmax(torch.stack([self.weights_k, self.weights_v]), dim=-1)

    def keys_values(self, x: torch.Tensor, lengths: torch.Tensor | None):
        """``(k, v, mask, w)``: compressed keys and values (B, T, C), frame mask, layer weights."""
        n_layers, t = x.shape[1], x.shape[2]
        assert n_layers == self.num_layers, (
            f"{type(self).__name__} built for {self.num_layers} layers got {n_layers}"
        )
        mask = lengths_to_mask(lengths, t)
        w = self.layer_weights()  # (2, L)
        kv = weighted_layer_sum(x, w)  # (B, 2, T, D): both sums in one pass over x
        return self.cmp_linear_k(kv[:, 0]), self.cmp_linear_v(kv[:, 1]), mask, w

    def attention(self, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Per-head attention over the valid frames: keys (B, T, C) -> (B, H, T), rows sum to 1."""
        att = self.att_head(k).transpose(1, 2)  # (B, H, T)
        if mask is not None:
            att = att.masked_fill(~mask[:, None, :], torch.finfo(att.dtype).min)
        return torch.softmax(att, dim=-1)

    def forward(self, x, lengths=None, return_layer_scores=False):
        b, n_layers, t, _ = x.shape
        k, v, mask, w = self.keys_values(x, lengths)
        emb = self._pool(k, v, mask)
        if return_layer_scores:
            return emb, w.view(1, 2, 1, n_layers).expand(b, 2, t, n_layers)
        return emb

    def _pool(self, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        att = self.attention(k, mask)
        pooled = torch.bmm(att, v.to(att.dtype)).reshape(k.shape[0], -1)  # (B, H * C)
        return self.pooling_fc(pooled)

    # -- the two halves, for long audio (see SpeakerEmbeddingExtractor.embed)
    def frame_features(self, x: torch.Tensor, lengths: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compressed keys and values, frame by frame: (B, L, T, D) -> (B, T, 2C), scores."""
        b, n_layers, t, _ = x.shape
        k, v, _, w = self.keys_values(x, lengths)
        return torch.cat([k, v], dim=-1), w.view(1, 2, 1, n_layers).expand(b, 2, t, n_layers)

    def pool_frames(self, frames: torch.Tensor, lengths: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """Attention over time and pooling: (B, T, 2C) -> (B, embed_dim)."""
        k, v = frames.chunk(2, dim=-1)
        return self._pool(k, v, lengths_to_mask(lengths, frames.shape[1]))
