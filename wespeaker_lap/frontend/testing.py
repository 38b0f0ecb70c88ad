"""Tiny random configs for tests and benchmarks, never for real use.

The models they build have random weights and a few thousand parameters: they
exercise shapes, padding, dtypes and code paths of every SSL family in
milliseconds, and say nothing about speaker verification.
"""

from __future__ import annotations

from typing import Any


def tiny_ssl_config(
    model_type: str = "wavlm",
    num_hidden_layers: int = 2,
    hidden_size: int = 32,
    num_attention_heads: int = 2,
    intermediate_size: int = 64,
    conv_dim: int = 32,
    stable_layer_norm: bool = False,
) -> dict[str, Any]:
    """A tiny random config of any family, for tests and benchmarks.

    The CNN keeps the real kernel/stride stack (25 ms window, 20 ms hop at
    16 kHz), so frame counts match the full-size models. For ``wav2vec2-bert``
    (no CNN) the input stays the real 160-d stacked fbank, the positional
    scheme w2v-BERT 2.0's (relative-key, 64 left / 8 right), and the Conformer's
    depthwise kernel 5 frames instead of 31.

    >>> cfg = tiny_ssl_config("hubert")
    >>> cfg["model_type"], cfg["num_hidden_layers"]
    ('hubert', 2)
    """
    if model_type == "wav2vec2-bert":
        if stable_layer_norm:
            raise ValueError("wav2vec2-bert has no stable_layer_norm variant")
        return {
            "model_type": model_type,
            "hidden_size": hidden_size,
            "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": num_attention_heads,
            "intermediate_size": intermediate_size,
            "feature_projection_input_dim": 160,
            "position_embeddings_type": "relative_key",
            "left_max_position_embeddings": 64,
            "right_max_position_embeddings": 8,
            "conv_depthwise_kernel_size": 5,
        }
    cfg: dict[str, Any] = {
        "model_type": model_type,
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "intermediate_size": intermediate_size,
        "conv_dim": [conv_dim] * 7,
        "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
        "conv_stride": [5, 2, 2, 2, 2, 2, 2],
        "num_conv_pos_embedding_groups": 4,
        "do_stable_layer_norm": stable_layer_norm,
        "feat_extract_norm": "layer" if stable_layer_norm else "group",
    }
    if model_type == "data2vec-audio":
        cfg.update(num_conv_pos_embeddings=2, conv_pos_kernel_size=5)
        # data2vec-audio always uses LayerNorm in its CNN and has no stable-LN switch
        del cfg["do_stable_layer_norm"], cfg["feat_extract_norm"]
    else:
        cfg["num_conv_pos_embeddings"] = 16
    if model_type == "wavlm":
        cfg.update(num_buckets=32, max_bucket_distance=64)
    return cfg
