"""Frozen (or trainable) multi-layer front end over a transformers speech SSL encoder.

:class:`SSLFrontend` turns 16 kHz waveforms into the stack of all hidden states
of a pre-trained speech Transformer (WavLM, HuBERT, wav2vec 2.0, data2vec-audio,
UniSpeech-SAT): ``(B, L, T, D)`` with ``L = num_hidden_layers + 1`` (the encoder
input, i.e. the projected CNN features, first; then one entry per Transformer
layer), plus the number of valid frames of each utterance.

Batch independence
------------------
An utterance's hidden states never depend on what else is in the batch. Three
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

Valid frames of a padded batch therefore equal the outputs of the same
utterance run alone, up to float rounding (checked in ``tests/test_frontend.py``
for every family). Padded frames of the output are set to zero.

Note on the last hidden state of "stable layer norm" models (the Large ones):
as in transformers, the stacked entries are the raw outputs of each layer, so
the final encoder LayerNorm is not applied to the last entry.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import torch
from torch import nn

from wespeaker_lap.registry import Registry

logger = logging.getLogger(__name__)

# model_type -> (config class name, model class name) in transformers.
SSL_FAMILIES: dict[str, tuple[str, str]] = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "hubert": ("HubertConfig", "HubertModel"),
    "wavlm": ("WavLMConfig", "WavLMModel"),
    "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel"),
    "unispeech-sat": ("UniSpeechSatConfig", "UniSpeechSatModel"),
}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
    16 kHz), so frame counts match the full-size models.

    >>> cfg = tiny_ssl_config("hubert")
    >>> cfg["model_type"], cfg["num_hidden_layers"]
    ('hubert', 2)
    """
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
    every frame counts, exactly like ``nn.GroupNorm``. Statistics are computed in
    float32 whatever the input dtype.

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
        if self.valid_frames is None:
            return super().forward(x)
        t = x.shape[-1]
        mask = (torch.arange(t, device=x.device)[None, :] < self.valid_frames[:, None]).to(
            torch.float32
        )[:, None, :]
        count = mask.sum(-1, keepdim=True).clamp(min=1.0)
        xf = x.float()
        mean = (xf * mask).sum(-1, keepdim=True) / count
        var = (((xf - mean) * mask) ** 2).sum(-1, keepdim=True) / count
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight.float()[None, :, None] + self.bias.float()[None, :, None]
        return y.to(x.dtype)


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
                       do_normalize: bool) -> None:
    """Write the ``preprocessor_config.json`` that :func:`load_ssl_model` reads back."""
    import transformers

    transformers.Wav2Vec2FeatureExtractor(
        sampling_rate=sampling_rate, do_normalize=do_normalize
    ).save_pretrained(directory)


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

    Returns ``(model, preprocessing)`` where preprocessing has ``do_normalize``
    and ``sampling_rate`` (from ``preprocessor_config.json`` when present,
    otherwise transformers' convention: normalise when the CNN uses LayerNorm).
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
        cfg = cfg_cls(**config)
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
        model = model_cls.from_pretrained(name)
        source = name
        try:
            pre = transformers.Wav2Vec2FeatureExtractor.from_pretrained(name)
        except OSError:
            pre = None
    preprocessing = {
        "do_normalize": bool(pre.do_normalize) if pre is not None
        else default_do_normalize(model.config),
        "sampling_rate": int(pre.sampling_rate) if pre is not None else 16000,
    }
    logger.info(
        "loaded %s (%s, %d layers x %d) preprocessing=%s",
        source,
        model.config.model_type,
        model.config.num_hidden_layers,
        model.config.hidden_size,
        preprocessing,
    )
    return model, preprocessing


class SSLFrontend(nn.Module):
    """All hidden states of a speech SSL encoder, batch-independent and frozen by default.

    Args:
        model_name_or_path: local ``save_pretrained`` directory or hub id.
        config: dict with ``model_type`` + config fields, for a random model
            (see :func:`tiny_ssl_config`). Exactly one of the two.
        frozen: no gradients, eval mode always (no dropout, no layer drop),
            forward under ``torch.no_grad`` so no activations are kept.
        freeze_feature_encoder: in trainable mode, keep the CNN frozen.
        layerdrop: Transformer layer drop probability in trainable mode.
        dtype: ``float32``, ``bfloat16`` or ``float16`` weights for the frozen
            forward (outputs are returned as float32). Trainable mode takes
            ``float32`` only; use autocast in the training loop instead.
        layers: indices of the hidden states to keep (0 = encoder input);
            ``None`` keeps all ``num_hidden_layers + 1``.
        sample_rate: the rate of the audio the caller will pass; must equal
            the model's rate (no silent resampling: resample in the data pipeline).
            ``None`` (default): the model's rate, from its preprocessor config. The
            frontend reports it as ``.sample_rate``: the one source of the rate
            that training data, extraction and the CLI resample to.
        normalize: override the checkpoint's ``do_normalize``.
        init_seed: seed of the random weights when built from ``config``.

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
    ):
        super().__init__()
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if not frozen and dtype != "float32":
            raise ValueError(
                f"dtype={dtype!r} is for the frozen forward only; a trainable frontend keeps "
                "float32 weights (use autocast in training)"
            )
        assert 0.0 <= layerdrop < 1.0, f"layerdrop must be in [0, 1), got {layerdrop}"
        model, pre = load_ssl_model(model_name_or_path, config, init_seed)
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
        self.sample_rate = int(sample_rate)
        self.do_normalize = pre["do_normalize"] if normalize is None else bool(normalize)
        self.frozen = bool(frozen)
        self.dtype = DTYPES[dtype]

        # Layer drop and SpecAugment-style masking only ever act in trainable mode.
        model.config.layerdrop = 0.0 if frozen else float(layerdrop)
        model.config.apply_spec_augment = False
        self.model = model
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
        elif freeze_feature_encoder:
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
        """Samples per output frame (320 for the standard CNN)."""
        hop = 1
        for s in self.model.config.conv_stride:
            hop *= int(s)
        return hop

    @property
    def min_samples(self) -> int:
        """Shortest input that yields one frame (the CNN's receptive field, 400 samples)."""
        n = 1
        for k, s in reversed(list(zip(self.model.config.conv_kernel, self.model.config.conv_stride,
                                      strict=True))):
            n = (n - 1) * int(s) + int(k)
        return n

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames for input sample counts ``lengths`` (B,)."""
        return self.model._get_feat_extract_output_lengths(lengths).to(torch.long)

    # ----------------------------------------------------------------- modes
    def train(self, mode: bool = True) -> SSLFrontend:
        """A frozen frontend stays in eval mode whatever its parent asks."""
        super().train(mode and not self.frozen)
        return self

    def _install_length_aware_groupnorm(self) -> LengthAwareGroupNorm | None:
        first = self.model.feature_extractor.conv_layers[0]
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

    # --------------------------------------------------------------- forward
    def forward(
        self, wavs: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """wavs: (B, N) float waveforms, zero padded; lengths: (B,) valid samples.

        Returns hidden (B, L, T, D) float32 with padded frames zeroed, and
        frame_lengths (B,) long.
        """
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
        with torch.no_grad() if self.frozen else torch.enable_grad():
            return self._forward(wavs, lengths)

    def _forward(self, wavs: torch.Tensor, lengths: torch.Tensor):
        n = wavs.shape[1]
        sample_mask = torch.arange(n, device=wavs.device)[None, :] < lengths[:, None]
        x = wavs.float() * sample_mask
        if self.do_normalize:
            x = normalize_waveforms(x, lengths)
        if self._groupnorm is not None:
            first = self.model.feature_extractor.conv_layers[0].conv
            k, s = first.kernel_size[0], first.stride[0]
            self._groupnorm.valid_frames = torch.div(lengths - k, s, rounding_mode="floor") + 1
        frame_lengths = self.frame_lengths(lengths)
        t_max = int(frame_lengths.max())
        self._frame_mask = torch.arange(t_max, device=wavs.device)[None, :] < frame_lengths[:, None]
        try:
            with warnings.catch_warnings():
                # WavLM's attention in transformers passes a bool padding mask beside a float
                # position bias; torch warns about the mixed types, the result is correct.
                warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
                out = self.model(
                    x.to(self.dtype) if self.frozen else x,
                    attention_mask=sample_mask.long(),
                    output_hidden_states=True,
                )
        finally:
            if self._groupnorm is not None:
                self._groupnorm.valid_frames = None
            frame_mask, self._frame_mask = self._frame_mask, None
        states = out.hidden_states
        hidden = torch.stack([states[i] for i in self.layers], dim=1).float()  # (B, L, T, D)
        assert hidden.shape[2] == t_max, (hidden.shape, t_max)
        hidden = hidden * frame_mask[:, None, :, None]
        return hidden, frame_lengths

    # ------------------------------------------------------------------ save
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the SSL model and its preprocessing config (loadable as model_name_or_path)."""
        self.model.save_pretrained(directory)
        save_preprocessing(directory, self.sample_rate, self.do_normalize)


FRONTENDS: Registry[type[nn.Module]] = Registry("frontend", {"ssl": SSLFrontend})


def get_frontend(name: str, **kwargs: Any) -> nn.Module:
    """Build a frontend by registry name (``ssl``); unknown names list the valid ones."""
    return FRONTENDS.build(name, **kwargs)
