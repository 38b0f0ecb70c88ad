"""Frozen (or trainable) multi-layer front end over a transformers speech SSL encoder.

:class:`SSLFrontend` turns 16 kHz waveforms into the stack of all hidden states
of a pre-trained speech Transformer (WavLM, HuBERT, wav2vec 2.0, data2vec-audio,
UniSpeech-SAT, w2v-BERT 2.0): ``(B, L, T, D)`` with ``L = num_hidden_layers + 1``
(the encoder input, i.e. the projected CNN or fbank features, first; then one
entry per Transformer layer), plus the number of valid frames of each utterance.
Frames are 20 ms apart in every family.

w2v-BERT 2.0 (``model_type: wav2vec2-bert``, a Conformer without a CNN) takes
stacked log-mel filterbanks instead of the waveform; they are computed inside
the frontend from the waveform (:class:`wespeaker_lap.frontend.fbank.StackedFbank`,
equal to transformers' ``SeamlessM4TFeatureExtractor``), so callers pass raw
16 kHz audio to every family.

Attention runs through ``torch.nn.functional.scaled_dot_product_attention``:
transformers' own SDPA path for every family that has one, and
:mod:`wespeaker_lap.frontend.attention` for WavLM (``attention="eager"`` keeps
transformers' original attention, for comparison).

Batch independence
------------------
An utterance's hidden states never depend on what else is in the batch. These
places could leak padding into valid frames, and each is closed:

* input normalisation (``do_normalize`` models): mean and variance are taken
  over each utterance's valid samples only, and the padding is zeroed after;
* the CNN of the *Base* models, whose first layer is a GroupNorm with one group
  per channel, i.e. a normalisation **over time**: its statistics are computed
  over each utterance's valid frames only (:class:`LengthAwareGroupNorm`, a
  drop-in subclass with the same parameters, so checkpoints load and save
  unchanged). The rest of the CNN is convolutions whose valid outputs only see
  valid inputs, so the whole CNN stays batched and exact;
* the Transformer: the frame-level attention mask (from transformers) zeroes
  padded frames before the positional convolution and masks them as keys;
  data2vec-audio's positional embedding is a *stack* of convolutions, so padded
  frames are zeroed again after each of them (a forward hook, no new weights).
  w2v-BERT's Conformer convolution is causal and transformers zeroes padded
  frames before it, so valid frames never see padding;
* w2v-BERT's fbank: per-utterance statistics over valid frames only.

Valid frames of a padded batch therefore equal the outputs of the same
utterance run alone, up to float rounding (checked for every family in
``tests/test_frontend.py`` and ``tests/test_frontend_w2vbert.py``). Padded frames
of the output are set to zero.

Precision and long audio
------------------------
``dtype="auto"`` picks the frozen forward's dtype on the device it first runs on
(:func:`auto_dtype`: bfloat16 on GPUs that support it, on CPUs only where a
short probe finds bfloat16 matrix products clearly faster), and logs why.
:meth:`SSLFrontend.forward_windows` runs long utterances in overlapping windows
whose kept frames tile the utterance, so memory stays bounded by one window.

Note on the last hidden state of "stable layer norm" models (the Large ones):
as in transformers, the stacked entries are the raw outputs of each layer, so
the final encoder LayerNorm is not applied to the last entry.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from wespeaker_lap.frontend.attention import use_sdpa_attention
from wespeaker_lap.frontend.fbank import StackedFbank
from wespeaker_lap.registry import Registry

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

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = (*DTYPES, "auto")
ATTENTIONS = ("sdpa", "eager")


def _family(model_type: str) -> tuple[type, type]:
    if model_type not in SSL_FAMILIES:
        raise ValueError(
            f"unsupported SSL model type {model_type!r}; supported: {sorted(SSL_FAMILIES)}"
        )
    import transformers

    cfg_name, model_name = SSL_FAMILIES[model_type]
    return getattr(transformers, cfg_name), getattr(transformers, model_name)


def tiny_ssl_config(
    model_type: str = "wavlm",
    num_hidden_layers: int = 2,
    hidden_size: int = 32,
    num_attention_heads: int = 2,
    intermediate_size: int = 64,
    conv_dim: int = 32,
    stable_layer_norm: bool = False,
) -> dict[str, Any]:
    """A tiny random config of any family, for tests and small experiments.

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


class LengthAwareGroupNorm(nn.GroupNorm):
    """GroupNorm with one group per channel, normalising over each utterance's valid frames.

    Same parameters and state-dict keys as the ``nn.GroupNorm`` it replaces. Before a
    forward, the owner sets :attr:`valid_frames` (``(B,)`` long); when it is ``None``
    every frame counts, exactly like ``nn.GroupNorm``. Each padded utterance is
    normalised by the native kernel on its valid frames alone (which accumulates in
    float32 for reduced-precision inputs too), so its output is the same computation
    as for the utterance run alone; padded frames come out as zeros.

    x: (B, C, T) -> (B, C, T)
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True):
        assert num_groups == num_channels, (
            f"LengthAwareGroupNorm needs one group per channel, got {num_groups} groups "
            f"for {num_channels} channels"
        )
        super().__init__(num_groups, num_channels, eps, affine)
        self.valid_frames: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[-1]
        if self.valid_frames is None:
            return super().forward(x)
        valid = self.valid_frames.tolist()
        if min(valid) >= t:
            return super().forward(x)
        out = x.new_zeros(x.shape)
        for i, v in enumerate(valid):
            out[i : i + 1, :, :v] = super().forward(x[i : i + 1, :, :v])
        return out


def default_do_normalize(config: Any) -> bool:
    """transformers' convention for a checkpoint without ``preprocessor_config.json``:
    models whose CNN uses LayerNorm (the Large ones, data2vec-audio) take zero-mean,
    unit-variance input; GroupNorm (Base) models take the raw waveform."""
    return getattr(config, "feat_extract_norm", "layer") == "layer"


def normalize_waveforms(wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over each utterance's valid samples; padding stays zero.

    As transformers' feature extractor does it (biased variance, eps 1e-7), but
    per utterance of a padded batch. wavs: (B, N) float, lengths: (B,) -> (B, N).
    """
    mask = torch.arange(wavs.shape[1], device=wavs.device)[None, :] < lengths[:, None]
    x = wavs * mask
    cnt = lengths[:, None].to(x.dtype)
    mean = x.sum(1, keepdim=True) / cnt
    var = (((x - mean) * mask) ** 2).sum(1, keepdim=True) / cnt
    return (x - mean) * torch.rsqrt(var + 1e-7) * mask


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


def _looks_local(name: str) -> bool:
    return (
        os.path.isabs(name)
        or name.startswith(("./", "../", "~"))
        or os.path.exists(name)
        or name.count("/") > 1
    )


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
        if _looks_local(name):
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


# ------------------------------------------------------------------- dtype "auto"
_AUTO_CACHE: dict[str, tuple[torch.dtype, str]] = {}


def _gemm_seconds(dtypes: tuple[torch.dtype, ...], repeats: int = 5) -> list[float]:
    """Best wall time per dtype of a Base+-sized FFN product (256 x 768 @ 768 x 3072) on
    the CPU; the dtypes alternate, so that load from other processes hits them alike."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(256, 768, generator=gen)
    b = torch.randn(768, 3072, generator=gen)
    pairs = [(a.to(dt), b.to(dt)) for dt in dtypes]
    best = [math.inf] * len(dtypes)
    with torch.no_grad():
        for x, y in pairs:
            x @ y  # first call: kernel selection, packing
        for _ in range(repeats):
            for i, (x, y) in enumerate(pairs):
                t0 = time.perf_counter()
                x @ y
                best[i] = min(best[i], time.perf_counter() - t0)
    return best


def auto_dtype(device: torch.device | str) -> tuple[torch.dtype, str]:
    """The frozen-forward dtype that is fastest on ``device``, and why (cached per device type).

    * CUDA: bfloat16 where the GPU supports it (Ampere and later), else float32;
    * CPU: a start-up probe (a few milliseconds) times one float32 and one
      bfloat16 matrix product of a Base+ FFN's shape; bfloat16 is chosen only
      when it is at least 1.25x faster (CPUs with AMX; with AVX-512 BF16 alone
      it is usually slower than float32);
    * anything else: float32.
    """
    kind = torch.device(device).type
    if kind in _AUTO_CACHE:
        return _AUTO_CACHE[kind]
    if kind == "cuda":
        if torch.cuda.is_bf16_supported():
            choice = (torch.bfloat16, "CUDA device supports bfloat16")
        else:
            choice = (torch.float32, "CUDA device without bfloat16 support")
    elif kind == "cpu":
        fp32, bf16 = _gemm_seconds((torch.float32, torch.bfloat16))
        flops = 2 * 256 * 768 * 3072
        speed = f"CPU probe: float32 {flops / fp32 / 1e9:.0f} GFLOP/s, bfloat16 " \
                f"{flops / bf16 / 1e9:.0f} GFLOP/s"
        choice = (torch.bfloat16, speed) if bf16 * 1.25 <= fp32 else (torch.float32, speed)
    else:
        choice = (torch.float32, f"no reduced-precision rule for device type {kind!r}")
    _AUTO_CACHE[kind] = choice
    return choice


def _dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


class SSLFrontend(nn.Module):
    """All hidden states of a speech SSL encoder, batch-independent and frozen by default.

    Args:
        model_name_or_path: local ``save_pretrained`` directory or hub id.
        config: dict with ``model_type`` + config fields, for a random model
            (see :func:`tiny_ssl_config`). Exactly one of the two.
        frozen: no gradients, eval mode always (no dropout, no layer drop),
            forward under ``torch.no_grad`` so no activations are kept.
        freeze_feature_encoder: in trainable mode, keep the CNN frozen
            (w2v-BERT has no CNN: the flag does nothing there).
        layerdrop: Transformer layer drop probability in trainable mode.
        dtype: ``float32``, ``bfloat16`` or ``float16`` weights for the frozen
            forward (outputs are returned as float32), or ``auto``: at the
            first forward, what :func:`auto_dtype` finds fastest on the input's
            device (logged with the reason). Trainable mode takes ``float32``
            (``auto`` resolves to it); use autocast in the training loop instead.
        layers: indices of the hidden states to keep (0 = encoder input);
            ``None`` keeps all ``num_hidden_layers + 1``.
        sample_rate: the rate of the audio the caller will pass; must equal
            the model's rate (no silent resampling: resample in the data pipeline).
            ``None`` (default): the model's rate, from its preprocessor config. The
            frontend reports it as ``.sample_rate``: the one source of the rate
            that training data, extraction and the CLI resample to.
        normalize: override the checkpoint's ``do_normalize`` (for w2v-BERT:
            the per-mel-bin normalisation of its fbank).
        init_seed: seed of the random weights when built from ``config``.
        attention: ``sdpa`` (default) or ``eager`` (transformers' original
            attention; same outputs to rounding, slower, more memory).

    forward(wavs (B, N), lengths (B,)) -> (hidden (B, L, T, D) float32, frame_lengths (B,))

    >>> fe = SSLFrontend(config=tiny_ssl_config("wav2vec2"))
    >>> h, n = fe(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    >>> tuple(h.shape), n.tolist(), fe.num_layers, fe.hidden_size
    ((2, 3, 49, 32), [49, 24], 3, 32)
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike | None = None,
        config: dict[str, Any] | None = None,
        frozen: bool = True,
        freeze_feature_encoder: bool = True,
        layerdrop: float = 0.0,
        dtype: str = "float32",
        layers: list[int] | None = None,
        sample_rate: int | None = None,
        normalize: bool | None = None,
        init_seed: int = 0,
        attention: str = "sdpa",
    ):
        super().__init__()
        if dtype not in DTYPE_CHOICES:
            raise ValueError(f"dtype must be one of {list(DTYPE_CHOICES)}, got {dtype!r}")
        if not frozen and dtype not in ("float32", "auto"):
            raise ValueError(
                f"dtype={dtype!r} is for the frozen forward only; a trainable frontend keeps "
                "float32 weights (use autocast in training)"
            )
        assert 0.0 <= layerdrop < 1.0, f"layerdrop must be in [0, 1), got {layerdrop}"
        model, pre = load_ssl_model(model_name_or_path, config, init_seed, attention)
        if sample_rate is None:
            sample_rate = pre["sampling_rate"]
        if int(sample_rate) != pre["sampling_rate"]:
            raise ValueError(
                f"audio sample rate {sample_rate} Hz differs from the SSL model's "
                f"{pre['sampling_rate']} Hz; resample in the data pipeline"
            )
        self.model_name_or_path = (
            None if model_name_or_path is None else os.fspath(model_name_or_path)
        )
        self.model_type = str(model.config.model_type)
        self.attention = attention
        self.sample_rate = int(sample_rate)
        self.do_normalize = pre["do_normalize"] if normalize is None else bool(normalize)
        self.frozen = bool(frozen)
        self.auto_dtype = dtype == "auto" and self.frozen
        self.dtype = torch.float32 if dtype == "auto" else DTYPES[dtype]
        self._dtype_checked: set[str] = set()

        # Layer drop and SpecAugment-style masking only ever act in trainable mode.
        model.config.layerdrop = 0.0 if frozen else float(layerdrop)
        model.config.apply_spec_augment = False
        self.model = model
        self.fbank: StackedFbank | None = None
        if self.model_type in FBANK_FAMILIES:
            self.fbank = StackedFbank(self.sample_rate, pre["num_mel_bins"], pre["stride"],
                                      normalize=self.do_normalize)
        self._groupnorm = self._install_length_aware_groupnorm()
        self._frame_mask: torch.Tensor | None = None
        self._install_positional_conv_masks()

        total = model.config.num_hidden_layers + 1
        if layers is None:
            layers = list(range(total))
        layers = [int(i) for i in layers]
        bad = [i for i in layers if not 0 <= i < total]
        if bad or not layers or len(set(layers)) != len(layers):
            raise ValueError(
                f"layers must be distinct indices in [0, {total - 1}], got {layers}"
            )
        self.layers = layers

        if frozen:
            self.model.requires_grad_(False)
            self.model.to(self.dtype)
        elif freeze_feature_encoder and self.fbank is None:
            self.model.feature_extractor._freeze_parameters()
        self.train(False)

    # ----------------------------------------------------------------- sizes
    @property
    def num_layers(self) -> int:
        """Number of stacked hidden states returned (``L``)."""
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        """Width of each hidden state (``D``)."""
        return int(self.model.config.hidden_size)

    @property
    def hop_samples(self) -> int:
        """Samples per output frame (320 for the standard CNN and for w2v-BERT)."""
        if self.fbank is not None:
            return self.fbank.hop_samples
        hop = 1
        for s in self.model.config.conv_stride:
            hop *= int(s)
        return hop

    @property
    def min_samples(self) -> int:
        """Shortest input that yields one frame (the CNN's receptive field, 400 samples;
        560 for w2v-BERT: two 25 ms fbank frames)."""
        if self.fbank is not None:
            return self.fbank.min_samples
        n = 1
        for k, s in reversed(list(zip(self.model.config.conv_kernel, self.model.config.conv_stride,
                                      strict=True))):
            n = (n - 1) * int(s) + int(k)
        return n

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames for input sample counts ``lengths`` (B,)."""
        if self.fbank is not None:
            return self.fbank.frame_lengths(lengths.to(torch.long))
        return self.model._get_feat_extract_output_lengths(lengths).to(torch.long)

    # ----------------------------------------------------------------- modes
    def train(self, mode: bool = True) -> SSLFrontend:
        """A frozen frontend stays in eval mode whatever its parent asks."""
        super().train(mode and not self.frozen)
        return self

    def _install_length_aware_groupnorm(self) -> LengthAwareGroupNorm | None:
        cnn = getattr(self.model, "feature_extractor", None)
        if cnn is None:
            return None  # w2v-BERT: no CNN
        first = cnn.conv_layers[0]
        norm = getattr(first, "layer_norm", None)
        if not isinstance(norm, nn.GroupNorm):
            return None  # LayerNorm CNNs normalise each frame alone: nothing to fix
        new = LengthAwareGroupNorm(norm.num_groups, norm.num_channels, norm.eps, norm.affine)
        new.load_state_dict(norm.state_dict())
        new.to(norm.weight.device)
        first.layer_norm = new
        return new

    def _install_positional_conv_masks(self) -> None:
        pos = getattr(self.model.encoder, "pos_conv_embed", None)
        stack = getattr(pos, "layers", None)
        if not isinstance(stack, nn.ModuleList) or len(stack) < 2:
            return  # a single positional conv sees zeroed padding already

        def zero_padding(module, args, output):  # output: (B, D, T)
            if self._frame_mask is None:
                return output
            return output * self._frame_mask[:, None, : output.shape[-1]].to(output.dtype)

        for layer in stack:
            layer.register_forward_hook(zero_padding)

    def _resolve_dtype(self, device: torch.device) -> None:
        """``dtype="auto"``: cast to what is fastest on ``device``; an explicit reduced
        precision that is slower there than float32 is kept, with a warning (once)."""
        if self.auto_dtype:
            want, why = auto_dtype(device)
            if want != self.dtype:
                logger.info("dtype auto on %s: %s (%s)", device.type, _dtype_name(want), why)
                self.dtype = want
                self.model.to(want)
            return
        if (self.frozen and self.dtype != torch.float32 and device.type == "cpu"
                and "cpu" not in self._dtype_checked):
            self._dtype_checked.add("cpu")
            want, why = auto_dtype(device)
            if want == torch.float32:
                logger.warning("dtype %s is slower than float32 on this CPU (%s); dtype auto "
                               "would choose float32", _dtype_name(self.dtype), why)

    # --------------------------------------------------------------- forward
    def forward(
        self, wavs: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """wavs: (B, N) float waveforms, zero padded; lengths: (B,) valid samples.

        Returns hidden (B, L, T, D) float32 with padded frames zeroed, and
        frame_lengths (B,) long.
        """
        lengths = self._check_input(wavs, lengths)
        self._resolve_dtype(wavs.device)
        with torch.no_grad() if self.frozen else torch.enable_grad():
            return self._forward(wavs, lengths)

    def _check_input(self, wavs: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if wavs.dim() != 2:
            raise ValueError(f"wavs must be (B, N), got shape {tuple(wavs.shape)}")
        b, n = wavs.shape
        if lengths is None:
            lengths = torch.full((b,), n, dtype=torch.long, device=wavs.device)
        lengths = lengths.to(device=wavs.device, dtype=torch.long)
        if lengths.shape != (b,) or int(lengths.max()) > n or int(lengths.min()) < 1:
            raise ValueError(
                f"lengths must be (B,) in [1, {n}] for wavs of shape {tuple(wavs.shape)}, "
                f"got {lengths.tolist()}"
            )
        if int(lengths.min()) < self.min_samples:
            raise ValueError(
                f"utterance of {int(lengths.min())} samples is shorter than the SSL model's "
                f"receptive field ({self.min_samples} samples)"
            )
        return lengths

    def _model_inputs(self, wavs: torch.Tensor, lengths: torch.Tensor):
        """(model input, its attention mask, frame_lengths (B,)) for this family."""
        if self.fbank is not None:
            feats, frame_lengths = self.fbank(wavs, lengths)  # (B, T, 160) float32
            t = torch.arange(feats.shape[1], device=wavs.device)
            return feats, t[None, :] < frame_lengths[:, None], frame_lengths
        n = wavs.shape[1]
        sample_mask = torch.arange(n, device=wavs.device)[None, :] < lengths[:, None]
        x = wavs.float() * sample_mask
        if self.do_normalize:
            x = normalize_waveforms(x, lengths)
        if self._groupnorm is not None:
            first = self.model.feature_extractor.conv_layers[0].conv
            k, s = first.kernel_size[0], first.stride[0]
            self._groupnorm.valid_frames = torch.div(lengths - k, s, rounding_mode="floor") + 1
        return x, sample_mask, self.frame_lengths(lengths)

    def _forward(self, wavs: torch.Tensor, lengths: torch.Tensor):
        x, input_mask, frame_lengths = self._model_inputs(wavs, lengths)
        t_max = int(frame_lengths.max())
        self._frame_mask = torch.arange(t_max, device=wavs.device)[None, :] < frame_lengths[:, None]
        try:
            with warnings.catch_warnings():
                # Eager WavLM attention in transformers passes a bool padding mask beside a
                # float position bias; torch warns about the mixed types, the result is correct.
                warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
                out = self.model(
                    x.to(self.dtype) if self.frozen else x,
                    attention_mask=input_mask.long(),
                    output_hidden_states=True,
                )
        finally:
            if self._groupnorm is not None:
                self._groupnorm.valid_frames = None
            frame_mask, self._frame_mask = self._frame_mask, None
        states = out.hidden_states
        hidden = torch.stack([states[i] for i in self.layers], dim=1)  # (B, L, T, D)
        assert hidden.shape[2] == t_max, (hidden.shape, t_max)
        hidden = hidden.float() if hidden.dtype != torch.float32 else hidden
        hidden.mul_(frame_mask[:, None, :, None])
        return hidden, frame_lengths

    # ------------------------------------------------------- long audio
    def forward_windows(
        self,
        wavs: torch.Tensor,
        lengths: torch.Tensor | None = None,
        window: float = 20.0,
        overlap: float = 4.0,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Hidden states of long audio, one overlapping window at a time.

        The SSL model runs on windows of ``window`` seconds whose starts are
        ``window - overlap`` seconds apart (rounded down to whole 20 ms frames;
        the last window of an utterance is moved back to end at its end, so it
        is never short). Of each window, the frames up to the middle of its
        overlap with the next window are kept, so the yielded chunks tile
        every utterance's frames exactly once, in order.

        Yields ``(hidden (B, L, t, D) float32, frame_lengths (B,))`` per window
        index: utterance ``i``'s next ``frame_lengths[i]`` frames (0 once it has
        no more windows), padded frames zeroed. Concatenating each utterance's
        valid chunk frames gives ``frontend.frame_lengths(lengths)[i]`` frames.
        Memory is bounded by one window batch, so it grows linearly with length.

        Relation to the whole-utterance forward: an utterance no longer than
        ``window`` is one chunk equal to the whole forward of it. A longer one
        differs, because every window is a separate utterance to the model:
        attention and the positional convolution see only the window, and
        per-utterance statistics (waveform normalisation, the Base CNN's
        GroupNorm, w2v-BERT's fbank normalisation) are taken per window. The
        kept frames sit at least ``overlap / 2`` seconds from an inner window
        edge, which limits the edge effects.

        Defaults: 20 s windows (pre-training crops are about 15.6 s for
        wav2vec 2.0, HuBERT and WavLM, so a window stays close to the lengths
        these models saw) with 4 s overlap (2 s of context on each side of a
        cut, beyond the WavLM Base+ positional convolution's 1.28 s half-width),
        at 1.25x the cost of a single pass.
        """
        lengths = self._check_input(wavs, lengths)
        hop = self.hop_samples
        win = int(round(window * self.sample_rate))
        step = (int(round((window - overlap) * self.sample_rate)) // hop) * hop
        if win < self.min_samples or step <= 0 or overlap < 0:
            raise ValueError(
                f"window {window} s / overlap {overlap} s: need a window of at least "
                f"{self.min_samples} samples and 0 <= overlap < window by at least one "
                f"{hop}-sample frame"
            )
        if int(lengths.max()) <= win:
            yield self.forward(wavs, lengths)
            return
        plans = [self._window_plan(int(n), win, step) for n in lengths.tolist()]
        total = self.frame_lengths(lengths)
        for k in range(max(len(p) for p in plans)):
            rows = [i for i, p in enumerate(plans) if k < len(p)]
            starts = [plans[i][k][0] for i in rows]
            seg_len = torch.tensor([min(win, int(lengths[i]) - s) for i, s in zip(rows, starts,
                                                                                   strict=True)])
            segs = torch.zeros(len(rows), int(seg_len.max()), dtype=wavs.dtype,
                               device=wavs.device)
            for j, (i, s) in enumerate(zip(rows, starts, strict=True)):
                segs[j, : seg_len[j]] = wavs[i, s : s + int(seg_len[j])]
            hidden, _ = self.forward(segs, seg_len.to(wavs.device))
            keep = [(plans[i][k][1], plans[i][k][2]) for i in rows]  # window-frame ranges
            t = max(b - a for a, b in keep)
            out = hidden.new_zeros(len(lengths), hidden.shape[1], t, hidden.shape[3])
            counts = torch.zeros(len(lengths), dtype=torch.long)
            for j, (i, (a, b)) in enumerate(zip(rows, keep, strict=True)):
                out[i, :, : b - a] = hidden[j, :, a:b]
                counts[i] = b - a
            yield out, counts.to(total.device)

    def _window_plan(self, n: int, win: int, step: int) -> list[tuple[int, int, int]]:
        """Windows of an ``n``-sample utterance: ``(start sample, first kept frame,
        end kept frame)``, frames counted within the window."""
        hop = self.hop_samples
        if n <= win:
            return [(0, 0, int(self.frame_lengths(torch.tensor([n]))[0]))]
        starts = list(range(0, n - win, step))
        last = -(-(n - win) // hop) * hop  # the last window ends at the utterance's end
        if last > starts[-1]:
            starts.append(last)
        ends = [s // hop + int(self.frame_lengths(torch.tensor([min(win, n - s)]))[0])
                for s in starts]  # global end frame of each window
        cuts = [0] + [(starts[k + 1] // hop + ends[k]) // 2 for k in range(len(starts) - 1)]
        cuts.append(ends[-1])
        return [(s, cuts[k] - s // hop, cuts[k + 1] - s // hop) for k, s in enumerate(starts)]

    # ------------------------------------------------------------------ save
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the SSL model and its preprocessing config (loadable as model_name_or_path)."""
        self.model.save_pretrained(directory)
        save_preprocessing(directory, self.sample_rate, self.do_normalize, self.model_type)


FRONTENDS: Registry[type[nn.Module]] = Registry("frontend", {"ssl": SSLFrontend})


def get_frontend(name: str, **kwargs: Any) -> nn.Module:
    """Build a frontend by registry name (``ssl``); unknown names and arguments are
    ``ValueError``s that list the valid ones."""
    return FRONTENDS.build(name, **kwargs)
