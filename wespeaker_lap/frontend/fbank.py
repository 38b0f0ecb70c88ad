"""w2v-BERT 2.0 input features in torch: stacked Kaldi-style log-mel filterbanks.

w2v-BERT 2.0 (Seamless Communication et al., "Seamless: Multilingual Expressive
and Streaming Speech Translation", arXiv 2312.05187, 2023; the w2v-BERT
objective is Chung et al., "w2v-BERT: Combining Contrastive Learning and Masked
Language Modeling for Self-Supervised Speech Pre-Training", ASRU 2021) takes
80-d log-mel filterbanks every 10 ms, normalised per mel bin over the utterance
and stacked in pairs: 160-d frames every 20 ms. transformers computes them with
``SeamlessM4TFeatureExtractor`` (numpy, one utterance at a time);
:class:`StackedFbank` computes the same features batched in torch, so they run
on the model's device.

The steps, as in Kaldi's ``compute-fbank-feats`` with the extractor's settings:
scale to 16-bit range, 25 ms frames every 10 ms without padding
(``snip_edges``), per-frame DC removal, pre-emphasis 0.97, Povey window, 512-point
FFT, power spectrum, 80 triangular filters on the Kaldi mel scale over
20 Hz - 8 kHz, natural log floored at float32 epsilon; then per mel bin,
zero mean and unit variance over the utterance's frames (unbiased variance,
eps 1e-7), and pairs of frames concatenated. An odd last frame is dropped, as
the extractor's attention mask drops it.

Batch independence: each frame only reads its own utterance's samples, and
the statistics are taken over each utterance's valid frames only, so features
of a padded batch equal those of each utterance alone (exactly, not only to
rounding: nothing is reduced across the padding).

Precision: everything runs in float32. The extractor uses float64 FFTs but
stores the spectrum as complex64, so it carries float32 rounding itself (a
float64 version of this module differs from it as much as this one does).
``tests/test_frontend_w2vbert.py`` checks agreement with
``SeamlessM4TFeatureExtractor`` on the normalised (unit-variance) features:
mean absolute difference below 1e-4, maximum below 1e-2 (reached only on quiet
bins of low variance, where normalisation magnifies rounding).
"""

from __future__ import annotations

import torch
from torch import nn

FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms
FFT_LENGTH = 512
PREEMPHASIS = 0.97
MEL_FLOOR = 1.192092955078125e-07  # float32 epsilon, the extractor's floor
VAR_EPS = 1e-7


class StackedFbank(nn.Module):
    """Waveforms -> per-utterance normalised log-mel frames, stacked ``stride`` at a time.

    Args:
        sample_rate: only 16 kHz has the 25 ms / 10 ms framing above.
        num_mel_bins: mel filters (80 for w2v-BERT 2.0).
        stride: frames stacked into one model frame (2: 20 ms, 160-d).
        normalize: per-mel-bin mean and variance normalisation over the utterance.

    forward(wavs (B, N), lengths (B,)) -> (features (B, T, num_mel_bins * stride)
    float32 with padded frames zeroed, frame_lengths (B,) long)

    >>> fb = StackedFbank()
    >>> x, n = fb(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    >>> tuple(x.shape), n.tolist()
    ((2, 49, 160), [49, 24])
    """

    def __init__(self, sample_rate: int = 16000, num_mel_bins: int = 80, stride: int = 2,
                 normalize: bool = True):
        super().__init__()
        from transformers.audio_utils import mel_filter_bank, window_function

        if sample_rate != 16000:
            raise ValueError(f"the w2v-BERT fbank is defined at 16000 Hz, got {sample_rate} Hz")
        assert num_mel_bins > 0 and stride > 0, (num_mel_bins, stride)
        self.sample_rate = sample_rate
        self.num_mel_bins = num_mel_bins
        self.stride = stride
        self.normalize = bool(normalize)
        mel = mel_filter_bank(
            num_frequency_bins=FFT_LENGTH // 2 + 1, num_mel_filters=num_mel_bins,
            min_frequency=20, max_frequency=sample_rate // 2, sampling_rate=sample_rate,
            norm=None, mel_scale="kaldi", triangularize_in_mel_space=True,
        )
        window = window_function(FRAME_LENGTH, "povey", periodic=False)
        # not persistent: derived from the settings, never part of a checkpoint
        self.register_buffer("mel", torch.from_numpy(mel).float(), persistent=False)  # (257, M)
        self.register_buffer("window", torch.from_numpy(window).float(), persistent=False)

    @property
    def dim(self) -> int:
        """Width of a stacked frame (``num_mel_bins * stride``)."""
        return self.num_mel_bins * self.stride

    @property
    def hop_samples(self) -> int:
        """Samples per stacked frame (320)."""
        return FRAME_SHIFT * self.stride

    @property
    def min_samples(self) -> int:
        """Shortest input giving one stacked frame (``stride`` fbank frames, and at least
        two so that the unbiased variance exists)."""
        return FRAME_LENGTH + FRAME_SHIFT * (max(self.stride, 2) - 1)

    def fbank_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """10 ms frames of ``lengths`` samples (B,): ``(n - 400) // 160 + 1``, 0 below 400."""
        return torch.where(
            lengths >= FRAME_LENGTH,
            torch.div(lengths - FRAME_LENGTH, FRAME_SHIFT, rounding_mode="floor") + 1,
            torch.zeros_like(lengths),
        )

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Stacked frames of ``lengths`` samples (B,)."""
        return torch.div(self.fbank_frames(lengths), self.stride, rounding_mode="floor")

    def log_mel(self, wavs: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (B, F, num_mel_bins) log-mel of every full 25 ms frame, float32."""
        x = wavs.float() * 32768.0  # Kaldi works on 16-bit sample values
        frames = x.unfold(1, FRAME_LENGTH, FRAME_SHIFT)  # (B, F, 400), a view
        frames = frames - frames.mean(-1, keepdim=True)
        first = frames[..., :1] * (1.0 - PREEMPHASIS)
        emph = torch.cat((first, frames[..., 1:] - PREEMPHASIS * frames[..., :-1]), dim=-1)
        spec = torch.fft.rfft(emph * self.window, n=FFT_LENGTH).abs().square()  # (B, F, 257)
        return torch.log(torch.clamp(spec @ self.mel, min=MEL_FLOOR))

    def normalized_log_mel(self, wavs: torch.Tensor, lengths: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel frames of the valid samples, padding zeroed and (with ``normalize``)
        each mel bin normalised over the utterance's frames:
        ``(B, N), (B,) -> (B, F, M), stacked frame counts (B,)``."""
        feats = self.log_mel(wavs)  # (B, F, M)
        n_frames = self.fbank_frames(lengths)
        valid = (torch.arange(feats.shape[1], device=feats.device)[None, :]
                 < n_frames[:, None])[..., None]  # (B, F, 1)
        feats = feats * valid
        if self.normalize:
            cnt = n_frames[:, None, None].to(feats.dtype)
            mean = feats.sum(1, keepdim=True) / cnt
            centered = (feats - mean) * valid
            var = centered.square().sum(1, keepdim=True) / (cnt - 1).clamp(min=1)
            feats = centered * torch.rsqrt(var + VAR_EPS)
        return feats, torch.div(n_frames, self.stride, rounding_mode="floor")

    def forward(
        self, wavs: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if wavs.shape[1] < FRAME_LENGTH:
            raise ValueError(f"waveforms of {wavs.shape[1]} samples are shorter than one "
                             f"{FRAME_LENGTH}-sample fbank frame")
        feats, frame_lengths = self.normalized_log_mel(wavs, lengths)
        t = int(frame_lengths.max())
        b, _, m = feats.shape
        stacked = feats[:, : t * self.stride].reshape(b, t, self.stride * m)
        keep = torch.arange(t, device=feats.device)[None, :] < frame_lengths[:, None]
        return stacked * keep[..., None], frame_lengths
