"""The SSL frontend: 16 kHz waveforms -> all hidden states of a speech SSL encoder.

:class:`SSLFrontend` wraps a transformers WavLM, HuBERT, wav2vec 2.0,
data2vec-audio, UniSpeech-SAT or w2v-BERT 2.0 model and returns the stack of
its hidden states ``(B, L, T, D)`` (``L = num_hidden_layers + 1``, the encoder
input first; 20 ms frames in every family) with each utterance's number of
valid frames. Callers pass raw 16 kHz audio to every family (w2v-BERT's fbank
is computed inside, :mod:`wespeaker_lap.frontend.fbank`). An utterance's
outputs never depend on the rest of its batch, and long audio runs in
overlapping windows (:meth:`SSLFrontend.forward_windows`); how, and how
``dtype: auto`` picks a precision: "The SSL frontend" in ``docs/architecture.md``.

Its parts: :mod:`~wespeaker_lap.frontend.loading` (families, loading,
preprocessing), :mod:`~wespeaker_lap.frontend.precision` (``dtype: auto``),
:mod:`~wespeaker_lap.frontend.groupnorm` (the length-aware GroupNorm),
:mod:`~wespeaker_lap.frontend.attention` (WavLM through SDPA).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from wespeaker_lap.frontend.fbank import StackedFbank
from wespeaker_lap.frontend.groupnorm import LengthAwareGroupNorm
from wespeaker_lap.frontend.loading import FBANK_FAMILIES, load_ssl_model, save_preprocessing
from wespeaker_lap.frontend.precision import DTYPE_CHOICES, DTYPES, auto_dtype, dtype_name
from wespeaker_lap.registry import Registry

logger = logging.getLogger(__name__)


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


class SSLFrontend(nn.Module):
    """All hidden states of a speech SSL encoder, batch-independent and frozen by default.

    Args:
        model_name_or_path: local ``save_pretrained`` directory or hub id.
        config: dict with ``model_type`` + config fields, for a random model
            (see :func:`wespeaker_lap.frontend.testing.tiny_ssl_config`). Exactly one
            of the two.
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

    >>> from wespeaker_lap.frontend.testing import tiny_ssl_config
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
                logger.info("dtype auto on %s: %s (%s)", device.type, dtype_name(want), why)
                self.dtype = want
                self.model.to(want)
            return
        if (self.frozen and self.dtype != torch.float32 and device.type == "cpu"
                and "cpu" not in self._dtype_checked):
            self._dtype_checked.add("cpu")
            want, why = auto_dtype(device)
            if want == torch.float32:
                logger.warning("dtype %s is not clearly faster than float32 on this CPU (%s; "
                               "auto asks for 1.25x, and a loaded machine can blur the "
                               "probe); dtype auto would choose float32", dtype_name(self.dtype),
                               why)

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
