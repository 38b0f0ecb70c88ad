"""What the extractor asks of a speaker model: two small ``typing.Protocol`` interfaces.

Every model of the registry (:data:`wespeaker_lap.models.SPEAKER_MODELS`) is a
:class:`SpeakerBackend`: it reports its output size and maps the frontend's
hidden states to embeddings. Most are also a :class:`FramePoolingBackend`: their
forward is a per-frame part followed by an utterance-level part, which lets
:meth:`~wespeaker_lap.models.extractor.SpeakerEmbeddingExtractor.embed` run long
audio window by window and pool once (ESPnet's abstract encoder and pooling
classes play this role there). UniPool, whose layer/frame network convolves
over time, is a backend without the split.

The protocols are checked structurally (``isinstance`` looks for the members),
so a new backend needs no base class: it implements the methods.

>>> from wespeaker_lap.models import LAP_ASTP, UniPool
>>> lap = LAP_ASTP(feat_dim=16, num_layers=3, embed_dim=8, lap_dim=16, heads=4)
>>> isinstance(lap, SpeakerBackend), isinstance(lap, FramePoolingBackend)
(True, True)
>>> uni = UniPool(feat_dim=16, num_layers=3, embed_dim=8, channels=16, heads=4)
>>> isinstance(uni, SpeakerBackend), isinstance(uni, FramePoolingBackend)
(True, False)
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class SpeakerBackend(Protocol):
    """A speaker model on SSL hidden states.

    ``embed_dim``: the size of the embedding it returns.
    ``forward(x (B, L, T, D), lengths (B,) valid frames or None, return_layer_scores)``
    -> ``(B, embed_dim)``, or with ``return_layer_scores`` ``(embedding, scores or None)``.
    """

    embed_dim: int

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None,
                return_layer_scores: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]: ...


@runtime_checkable
class FramePoolingBackend(SpeakerBackend, Protocol):
    """A :class:`SpeakerBackend` whose forward is ``pool_frames(frame_features(x))``.

    ``frame_features(x (B, L, T, D), lengths)`` -> ``(frames (B, T, C), layer scores
    (B, H, T, L) or None)``: per frame only, so it may run on windows of an utterance.
    ``pool_frames(frames (B, T, C), lengths)`` -> ``(B, embed_dim)``: over all frames.
    """

    def frame_features(self, x: torch.Tensor, lengths: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def pool_frames(self, frames: torch.Tensor, lengths: torch.Tensor | None = None
                    ) -> torch.Tensor: ...
