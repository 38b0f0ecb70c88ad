"""Speaker models on SSL hidden states, training heads, the extractor and its loading.

Registries (dicts; unknown names raise ``ValueError`` listing the valid ones):

* :func:`get_speaker_model` / :data:`SPEAKER_MODELS`: ``LAP_ASTP``, ``SUPERB_ASTP``,
  ``SUPERB_TSTP``, ``LastLayer_ASTP``, ``MHFA``, ``CA_MHFA``, ``UniPool``, ``SSL_ECAPA_TDNN_c512``,
  ``SSL_ECAPA_TDNN_c1024``; each a :class:`SpeakerBackend`
  (``forward(x (B, L, T, D), lengths (B,)) -> (B, E)``, ``embed_dim``), all but
  UniPool a :class:`FramePoolingBackend` (``frame_features``, ``pool_frames``).
* :func:`get_projection` / :data:`PROJECTIONS`: ``arc_margin``,
  ``arc_margin_intertopk_subcenter``, ``softmax``; ``forward(emb, label) -> logits``.

From a WeSpeaker-grammar config: :func:`build_extractor` (frontend + model) and
:func:`build_projection` (training head).
"""

from wespeaker_lap.models.ca_mhfa import CA_MHFA
from wespeaker_lap.models.common import count_parameters, lengths_to_mask
from wespeaker_lap.models.ecapa_tdnn import (
    SSL_ECAPA_TDNN,
    SSL_ECAPA_TDNN_c512,
    SSL_ECAPA_TDNN_c1024,
)
from wespeaker_lap.models.extractor import (
    SpeakerEmbeddingExtractor,
    build_extractor,
    build_projection,
)
from wespeaker_lap.models.interfaces import FramePoolingBackend, SpeakerBackend
from wespeaker_lap.models.layer_aggregation import (
    LayerAttentivePooling,
    SingleLayer,
    WeightedLayerSum,
)
from wespeaker_lap.models.mhfa import MHFA
from wespeaker_lap.models.pooling import ASTP, TSTP, EmbeddingLayer
from wespeaker_lap.models.projections import (
    PROJECTIONS,
    ArcMarginProduct,
    ArcMarginProduct_intertopk_subcenter,
    SoftmaxProjection,
    get_projection,
)
from wespeaker_lap.models.speaker_models import (
    LAP_ASTP,
    SUPERB_ASTP,
    SUPERB_TSTP,
    AggregatePoolModel,
    LastLayer_ASTP,
)
from wespeaker_lap.models.unipool import UniPool
from wespeaker_lap.models.zoo import SPEAKER_MODELS, build_speaker_model, get_speaker_model

__all__ = [
    "ASTP",
    "CA_MHFA",
    "LAP_ASTP",
    "MHFA",
    "PROJECTIONS",
    "SPEAKER_MODELS",
    "SSL_ECAPA_TDNN",
    "SSL_ECAPA_TDNN_c1024",
    "SSL_ECAPA_TDNN_c512",
    "SUPERB_ASTP",
    "SUPERB_TSTP",
    "TSTP",
    "AggregatePoolModel",
    "ArcMarginProduct",
    "ArcMarginProduct_intertopk_subcenter",
    "EmbeddingLayer",
    "FramePoolingBackend",
    "LastLayer_ASTP",
    "LayerAttentivePooling",
    "SingleLayer",
    "SoftmaxProjection",
    "SpeakerBackend",
    "SpeakerEmbeddingExtractor",
    "UniPool",
    "WeightedLayerSum",
    "build_extractor",
    "build_projection",
    "build_speaker_model",
    "count_parameters",
    "get_projection",
    "get_speaker_model",
    "lengths_to_mask",
]
