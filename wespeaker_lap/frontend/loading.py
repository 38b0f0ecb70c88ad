"""The SSL model families, and building or loading one with its preprocessing settings.

:data:`SSL_FAMILIES` maps transformers' ``model_type`` to its config and model
classes. :func:`load_ssl_model` builds a model from a ``save_pretrained``
directory, a hub id or a config dict (random weights from a seed) and reads its
preprocessing (``do_normalize``, ``sampling_rate``) from
``preprocessor_config.json``; :func:`save_preprocessing` writes that file.
:func:`~wespeaker_lap.io.sources.is_local_path` is the one answer to "is this
name a local directory or a hub id" (re-exported here and from ``frontend``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn

from wespeaker_lap.frontend.attention import use_sdpa_attention
from wespeaker_lap.io.sources import is_local_path

logger = logging.getLogger(__name__)

# model_type -> (config class name, model class name) in transformers.
SSL_FAMILIES: dict[str, tuple[str, str]] = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "hubert": ("HubertConfig", "HubertModel"),
    "wavlm": ("WavLMConfig", "WavLMModel"),
    "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel"),
    "unispeech-sat": ("UniSpeechSatConfig", "UniSpeechSatModel"),
    "wav2vec2-bert": ("Wav2Vec2BertConfig", "Wav2Vec2BertModel"),
}

#: Families whose input is the stacked fbank of :class:`StackedFbank`, not the waveform.
FBANK_FAMILIES = frozenset({"wav2vec2-bert"})

ATTENTIONS = ("sdpa", "eager")


def _family(model_type: str) -> tuple[type, type]:
    if model_type not in SSL_FAMILIES:
        raise ValueError(
            f"unsupported SSL model type {model_type!r}; supported: {sorted(SSL_FAMILIES)}"
        )
    import transformers

    cfg_name, model_name = SSL_FAMILIES[model_type]
    return getattr(transformers, cfg_name), getattr(transformers, model_name)


def default_do_normalize(config: Any) -> bool:
    """transformers' convention for a checkpoint without ``preprocessor_config.json``:
    models whose CNN uses LayerNorm (the Large ones, data2vec-audio) take zero-mean,
    unit-variance input; GroupNorm (Base) models take the raw waveform."""
    return getattr(config, "feat_extract_norm", "layer") == "layer"


def save_preprocessing(directory: str | os.PathLike, sampling_rate: int,
                       do_normalize: bool, model_type: str | None = None) -> None:
    """Write the ``preprocessor_config.json`` that :func:`load_ssl_model` reads back.

    For w2v-BERT (``model_type="wav2vec2-bert"``) it is a ``SeamlessM4TFeatureExtractor``
    whose ``do_normalize`` stands for the per-mel-bin normalisation."""
    import transformers

    if model_type in FBANK_FAMILIES:
        ext = transformers.SeamlessM4TFeatureExtractor(sampling_rate=sampling_rate)
        ext.do_normalize = bool(do_normalize)
        ext.save_pretrained(directory)
        return
    transformers.Wav2Vec2FeatureExtractor(
        sampling_rate=sampling_rate, do_normalize=do_normalize
    ).save_pretrained(directory)


def _load_extractor(cls: type, name: str | None) -> Any:
    if name is None:
        return None
    try:
        return cls.from_pretrained(name)
    except OSError:
        return None


def _read_preprocessing(name: str | None, model_type: str, config: Any) -> dict[str, Any]:
    """``do_normalize`` / ``sampling_rate`` (+ fbank settings) from ``preprocessor_config.json``
    of checkpoint ``name``, or the family's defaults when there is none (or no checkpoint)."""
    import transformers

    if model_type in FBANK_FAMILIES:
        ext = _load_extractor(transformers.SeamlessM4TFeatureExtractor, name)
        pre = {
            "do_normalize": bool(getattr(ext, "do_normalize", True)),
            "sampling_rate": int(ext.sampling_rate) if ext is not None else 16000,
            "num_mel_bins": int(ext.num_mel_bins) if ext is not None else 80,
            "stride": int(ext.stride) if ext is not None else 2,
        }
        width = pre["num_mel_bins"] * pre["stride"]
        if width != config.feature_projection_input_dim:
            raise ValueError(
                f"{name or 'SSL config'}: {pre['num_mel_bins']} mel bins x stride "
                f"{pre['stride']} = "
                f"{width}-d frames, but the model takes {config.feature_projection_input_dim}-d"
            )
        return pre
    ext = _load_extractor(transformers.Wav2Vec2FeatureExtractor, name)
    return {
        "do_normalize": bool(ext.do_normalize) if ext is not None
        else default_do_normalize(config),
        "sampling_rate": int(ext.sampling_rate) if ext is not None else 16000,
    }


def _attn_implementation(model_type: str, attention: str) -> str:
    """What transformers builds: WavLM has no SDPA path there, so it is built eager and
    switched afterwards (:func:`use_sdpa_attention`)."""
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {list(ATTENTIONS)}, got {attention!r}")
    return "eager" if model_type == "wavlm" else attention


def load_ssl_model(
    model_name_or_path: str | os.PathLike | None = None,
    config: dict[str, Any] | None = None,
    init_seed: int = 0,
    attention: str = "sdpa",
) -> tuple[nn.Module, dict[str, Any]]:
    """Build a transformers SSL encoder and read its preprocessing settings.

    Exactly one of:

    * ``model_name_or_path``: a local directory written by ``save_pretrained``
      (a ``*ForPreTraining`` checkpoint works too), or a hub id such as
      ``microsoft/wavlm-base-plus`` (needs the hub or its cache; honours
      ``HF_HUB_OFFLINE``);
    * ``config``: a dict with ``model_type`` and config fields; random weights
      drawn from ``init_seed`` (in a forked RNG, so the caller's RNG state is
      untouched). The same config and seed always give the same weights, which
      is what lets a frozen random model be referenced by its config alone.

    ``attention``: ``sdpa`` (``scaled_dot_product_attention``; for WavLM through
    :mod:`wespeaker_lap.frontend.attention`) or ``eager`` (transformers' original).

    Returns ``(model, preprocessing)`` where preprocessing has ``do_normalize``
    and ``sampling_rate`` (from ``preprocessor_config.json`` when present,
    otherwise transformers' convention: normalise when the CNN uses LayerNorm;
    w2v-BERT: per-mel-bin normalisation on, and its fbank's ``num_mel_bins`` and
    ``stride``).
    """
    if (model_name_or_path is None) == (config is None):
        raise ValueError("give exactly one of model_name_or_path or config")
    import transformers

    if config is not None:
        config = dict(config)
        model_type = config.pop("model_type", None)
        if model_type is None:
            raise ValueError(f"SSL config needs a 'model_type' (one of {sorted(SSL_FAMILIES)})")
        cfg_cls, model_cls = _family(model_type)
        known = set(cfg_cls().to_dict())
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown {cfg_cls.__name__} field(s) {unknown} in SSL config")
        cfg = cfg_cls(**config, attn_implementation=_attn_implementation(model_type, attention))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            model = model_cls(cfg)
        source = f"random {model_type} config"
        pre = None
    else:
        name = os.fspath(model_name_or_path)
        if is_local_path(model_name_or_path):
            name = os.path.expanduser(name)
            if not os.path.isdir(name):
                raise FileNotFoundError(
                    f"SSL checkpoint directory not found: {name!r} (expected a directory "
                    "written by save_pretrained with config.json and model weights)"
                )
            if not os.path.isfile(os.path.join(name, "config.json")):
                raise FileNotFoundError(
                    f"SSL checkpoint directory {name!r} has no config.json; "
                    "is it a directory written by save_pretrained?"
                )
        try:
            cfg = transformers.AutoConfig.from_pretrained(name)
        except OSError as e:
            offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
            raise OSError(
                f"could not load SSL model {name!r}: it is not a local directory and the "
                f"hub lookup failed{' (HF_HUB_OFFLINE is set)' if offline else ''}. Give a "
                "local save_pretrained directory, or a hub id on a machine that can reach "
                f"the hub or has it cached. Cause: {e}"
            ) from e
        cfg_cls, model_cls = _family(cfg.model_type)
        model = model_cls.from_pretrained(
            name, attn_implementation=_attn_implementation(cfg.model_type, attention)
        )
        source = name
        pre = name
    model_type = model.config.model_type
    if model_type == "wavlm" and attention == "sdpa":
        use_sdpa_attention(model)
    preprocessing = _read_preprocessing(pre, model_type, model.config)
    logger.info(
        "loaded %s (%s, %d layers x %d) preprocessing=%s",
        source,
        model.config.model_type,
        model.config.num_hidden_layers,
        model.config.hidden_size,
        preprocessing,
    )
    return model, preprocessing
