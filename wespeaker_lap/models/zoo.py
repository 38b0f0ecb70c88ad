"""The speaker-model zoo: every backend by its config name (WeSpeaker's ``model`` / ``model_args``).

Every model takes ``feat_dim`` and ``num_layers`` (the frontend's ``hidden_size`` and
``num_layers``; ``-1`` in a config means "fill from the frontend") and maps hidden
states ``(B, L, T, D)`` + frame lengths ``(B,)`` to embeddings ``(B, embed_dim)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from wespeaker_lap.models.ca_mhfa import CA_MHFA
from wespeaker_lap.models.ecapa_tdnn import SSL_ECAPA_TDNN_c512, SSL_ECAPA_TDNN_c1024
from wespeaker_lap.models.mhfa import MHFA
from wespeaker_lap.models.speaker_models import (
    LAP_ASTP,
    SUPERB_ASTP,
    SUPERB_TSTP,
    LastLayer_ASTP,
)
from wespeaker_lap.models.unipool import UniPool
from wespeaker_lap.registry import Registry

SPEAKER_MODELS: Registry[type[nn.Module]] = Registry("speaker model", {
    "LAP_ASTP": LAP_ASTP,
    "SUPERB_ASTP": SUPERB_ASTP,
    "SUPERB_TSTP": SUPERB_TSTP,
    "LastLayer_ASTP": LastLayer_ASTP,
    "MHFA": MHFA,
    "CA_MHFA": CA_MHFA,
    "UniPool": UniPool,
    "SSL_ECAPA_TDNN_c512": SSL_ECAPA_TDNN_c512,
    "SSL_ECAPA_TDNN_c1024": SSL_ECAPA_TDNN_c1024,
})

# model_args keys filled from the frontend when absent or -1
FRONTEND_SIZES = ("feat_dim", "num_layers")


def get_speaker_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a speaker model by registry name; unknown names or arguments list the valid ones.

    >>> m = get_speaker_model("SUPERB_TSTP", feat_dim=8, num_layers=3)
    >>> type(m).__name__, m.embed_dim
    ('SUPERB_TSTP', 192)
    """
    return SPEAKER_MODELS.build(name, **kwargs)


def build_speaker_model(
    name: str, model_args: Mapping[str, Any] | None, feat_dim: int, num_layers: int
) -> nn.Module:
    """Build from config ``model`` / ``model_args``, wiring sizes reported by the frontend.

    ``feat_dim`` / ``num_layers`` missing or ``-1`` in ``model_args`` take the
    frontend's values; any other value must agree with them (``ValueError``).
    """
    args = dict(model_args or {})
    for key, value in zip(FRONTEND_SIZES, (feat_dim, num_layers), strict=True):
        given = args.get(key, -1)
        if given is None or given == -1:
            args[key] = int(value)
        elif int(given) != int(value):
            raise ValueError(
                f"model_args.{key}={given} disagrees with the frontend's {value}; "
                "use -1 to take it from the frontend"
            )
    return get_speaker_model(name, **args)
