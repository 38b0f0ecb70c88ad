"""Frontends: waveform -> stacked SSL hidden states (B, L, T, D)."""

from wespeaker_lap.frontend.attention import WavLMSdpaAttention, use_sdpa_attention
from wespeaker_lap.frontend.fbank import StackedFbank
from wespeaker_lap.frontend.ssl import (
    DTYPE_CHOICES,
    FRONTENDS,
    SSL_FAMILIES,
    LengthAwareGroupNorm,
    SSLFrontend,
    auto_dtype,
    get_frontend,
    load_ssl_model,
    tiny_ssl_config,
)

__all__ = [
    "DTYPE_CHOICES",
    "FRONTENDS",
    "SSL_FAMILIES",
    "LengthAwareGroupNorm",
    "SSLFrontend",
    "StackedFbank",
    "WavLMSdpaAttention",
    "auto_dtype",
    "get_frontend",
    "load_ssl_model",
    "tiny_ssl_config",
    "use_sdpa_attention",
]
