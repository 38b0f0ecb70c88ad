"""Frontends: waveform -> stacked SSL hidden states (B, L, T, D), and the SSL model around them.

Modules: ``ssl`` (:class:`SSLFrontend`), ``loading`` (families, loading,
:func:`is_local_path`), ``precision`` (``dtype: auto``), ``groupnorm``,
``attention``, ``fbank``, ``fingerprint`` (which SSL model an experiment used),
``lora`` (LoRA on the SSL Transformer), ``testing`` (tiny random configs for
tests and benchmarks).
"""

from wespeaker_lap.frontend.attention import WavLMSdpaAttention, use_sdpa_attention
from wespeaker_lap.frontend.fbank import StackedFbank
from wespeaker_lap.frontend.groupnorm import LengthAwareGroupNorm
from wespeaker_lap.frontend.loading import SSL_FAMILIES, is_local_path, load_ssl_model
from wespeaker_lap.frontend.precision import DTYPE_CHOICES, auto_dtype
from wespeaker_lap.frontend.ssl import FRONTENDS, SSLFrontend, get_frontend
from wespeaker_lap.frontend.testing import tiny_ssl_config

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
    "is_local_path",
    "load_ssl_model",
    "tiny_ssl_config",
    "use_sdpa_attention",
]
