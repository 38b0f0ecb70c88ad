"""Context-aware multi-head factorized attentive pooling (CA-MHFA), padding-aware.

J. Peng, L. Mošner, L. Zhang, O. Plchot, T. Stafylakis, L. Burget, J. Černocký,
"CA-MHFA: A Context-Aware Multi-Head Factorized Attentive Pooling for SSL-Based
Speaker Verification", ICASSP 2025 (arXiv 2409.15234).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wespeaker_lap.models.mhfa import MHFA


class CA_MHFA(MHFA):  # noqa: N801 - the registry name, as in the paper
    """CA-MHFA: MHFA whose attention logits look at a few neighbouring frames.

    What is followed. The paper's abstract: keys and values as in MHFA (two
    softmax layer weightings of the SSL hidden states, each compressed
    ``D -> compression_dim``), shared by every head; "grouped, learnable queries"
    bring in the context of the surrounding frames. The authors' public code
    (their ``MHFA_Group_Conv2D``, selected in their recipes as ``G_MHFA_Conv2D``)
    gives the details used here:

    * group ``g`` (one attention map, one "head") owns ``context`` learnable
      queries ``q_{g,-c..c}`` of size ``compression_dim`` (``c = context // 2``);
      its logit at frame ``t`` is ``sum_j q_{g,j} . k_{t+j}``, a convolution over
      time of the compressed keys with ``head_nb`` output channels, no bias;
    * a softmax over time per group gives the attention; each group pools the
      compressed values; the ``head_nb * compression_dim`` concatenation goes
      through ``Linear`` to ``embed_dim``.

    Choices made here (the abstract does not fix them):

    * ``head_nb=64`` groups and ``context=5`` frames: the authors' VoxCeleb recipe
      (their ``head_nb: 256, group: 64``, kernel ``256 / 64 + 1 = 5``);
      ``compression_dim=128`` and ``embed_dim=256`` as in MHFA;
    * the layer weights start equal (zeros before the softmax), as in this
      project's MHFA (the authors start from ones: the same softmax);
    * frames beyond an utterance's length are zero keys, exactly the zero padding
      the convolution sees at an utterance's edges when it is alone, and get no
      attention: an utterance's embedding is the same alone or padded in a batch;
    * ``context`` must be odd so the window is centred on its frame (the
      authors' kernel ``group_len + 1`` with padding ``group_len // 2`` is
      centred only for even ``group_len``).

    About 2.34M parameters on WavLM Base+ (13 x 768), 2.40M on Large (25 x 1024).

    x: (B, L, T, D), lengths (B,) frame counts or None -> (B, embed_dim);
    ``return_layer_scores`` adds the key and value layer weights as two "heads",
    (B, 2, T, L), as :class:`~wespeaker_lap.models.mhfa.MHFA` does.

    >>> m = CA_MHFA(feat_dim=16, num_layers=3, embed_dim=8, head_nb=4,
    ...             compression_dim=6, context=3)
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
        context: int = 5,
    ):
        assert context > 0 and context % 2 == 1, (
            f"CA_MHFA context must be a positive odd number of frames, got {context}"
        )
        super().__init__(feat_dim, num_layers, embed_dim, head_nb, compression_dim)
        del self.att_head  # MHFA's per-frame queries; here they look at `context` frames
        self.context = context
        # the grouped queries: weight (head_nb, compression_dim, context)
        self.queries = nn.Conv1d(compression_dim, head_nb, context, padding=context // 2,
                                 bias=False)

    def attention(self, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Grouped-query attention: keys (B, T, C) -> (B, H, T) over the valid frames."""
        if mask is not None:  # padding = the zeros the convolution pads an utterance with
            k = k.masked_fill(~mask[:, :, None], 0.0)
        att = self.queries(k.transpose(1, 2))  # (B, H, T)
        if mask is not None:
            att = att.masked_fill(~mask[:, None, :], torch.finfo(att.dtype).min)
        return F.softmax(att, dim=-1)
