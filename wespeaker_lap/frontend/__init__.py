"""Frontends: waveform -> stacked SSL hidden states (B, L, T, D)."""

from wespeaker_lap.frontend.ssl import (
    FRONTENDS,
    SSL_FAMILIES,
    LengthAwareGroupNorm,
    SSLFrontend,
    get_frontend,
    load_ssl_model,
    tiny_ssl_config,
)

__all__ = [
    "FRONTENDS",
    "SSL_FAMILIES",
    "LengthAwareGroupNorm",
    "SSLFrontend",
    "get_frontend",
    "load_ssl_model",
    "tiny_ssl_config",
]
