"""Waveform helpers used by the pipeline steps: decode, check, resample, speed, crop, mix.

Pure functions on 1-D float32 numpy arrays; randomness comes in as an explicit
``numpy.random.Generator`` so every step is reproducible from its seed.
"""

from __future__ import annotations

import io
import os

import numpy as np
import soundfile as sf
import soxr
from scipy import signal

#: File name extensions the pipeline decodes (soundfile: libsndfile formats).
AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "opus", "sph", "aiff", "aif", "au", "w64", "rf64")

#: A waveform whose absolute peak is below this is "all zero" (below 16-bit resolution).
SILENCE_PEAK = 1e-6


class BadAudio(Exception):
    """An utterance that cannot be used; ``reason`` is one of :data:`BAD_AUDIO_REASONS`."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


#: Why an utterance is skipped (the keys of the pipeline's skip counters).
BAD_AUDIO_REASONS = ("unreadable", "empty", "all_zero", "non_finite", "too_short")


def decode_bytes(data: bytes) -> tuple[np.ndarray, int]:
    """Decode an in-memory audio file (wav, flac, ogg, ...) -> (samples (N,) float32, rate).

    Multi-channel audio keeps channel 0 (Kaldi's habit). Raises :class:`BadAudio`
    ``unreadable`` when libsndfile cannot parse the bytes.
    """
    try:
        wav, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile raises several types (LibsndfileError, RuntimeError, ...)
        raise BadAudio("unreadable", f"{type(e).__name__}: {e}") from None
    return np.ascontiguousarray(wav[:, 0]), int(rate)


def check_waveform(wav: np.ndarray, rate: int, min_duration: float = 0.0) -> None:
    """Raise :class:`BadAudio` if ``wav`` is empty, non-finite, all zero or too short.

    ``min_duration`` is in seconds; 0 disables the length check (empty is always bad).
    """
    if wav.size == 0:
        raise BadAudio("empty", "0 samples")
    if not np.all(np.isfinite(wav)):
        raise BadAudio("non_finite", f"{int(np.sum(~np.isfinite(wav)))} NaN/inf samples")
    peak = float(np.max(np.abs(wav)))
    if peak < SILENCE_PEAK:
        raise BadAudio("all_zero", f"peak {peak:.3g}")
    if wav.size < min_duration * rate:
        raise BadAudio("too_short", f"{wav.size / rate:.3f} s < {min_duration:g} s")


def resample(wav: np.ndarray, rate_in: float, rate_out: float) -> np.ndarray:
    """Resample with soxr (high quality); a no-op when the rates are equal."""
    if rate_in == rate_out:
        return wav
    return soxr.resample(wav, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def change_speed(wav: np.ndarray, factor: float) -> np.ndarray:
    """Play ``wav`` ``factor`` times faster (sox ``speed``): tempo and pitch both change.

    The output has ``round(len(wav) / factor)`` samples (+-1 from the resampler).
    """
    if factor == 1.0:
        return wav
    # Pretend the signal was recorded at rate*factor and resample it back to rate.
    return resample(wav, 16000.0 * factor, 16000.0)


def crop_or_pad(wav: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of exactly ``num_samples``; shorter input is repeated (wrap-padded)."""
    n = wav.shape[0]
    if n >= num_samples:
        start = int(rng.integers(0, n - num_samples + 1))
        return wav[start : start + num_samples]
    return np.pad(wav, (0, num_samples - n), mode="wrap")


def power(x: np.ndarray) -> float:
    """Mean square of ``x`` (float64 accumulation)."""
    return float(np.mean(np.square(x, dtype=np.float64)))


def scale_to_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray | None:
    """Scale ``noise`` so that 10*log10(P(speech) / P(scaled noise)) == ``snr_db``.

    Returns None when either signal is silent (no SNR can be set).
    """
    p_s, p_n = power(speech), power(noise)
    if p_s <= 0.0 or p_n <= 1e-20:
        return None
    gain = np.sqrt(p_s / (p_n * 10.0 ** (snr_db / 10.0)))
    return (noise * gain).astype(np.float32, copy=False)


def reverberate(wav: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with a room impulse response; output aligned on the RIR's direct path.

    The RIR is scaled to unit energy (so the level stays about the same) and the
    output is shifted by the position of its peak, so the speech does not move
    in time; the length is unchanged.
    """
    rir = rir.astype(np.float32, copy=False)
    energy = np.sqrt(power(rir) * rir.size)
    if energy <= 0.0:
        return wav
    rir = rir / energy
    delay = int(np.argmax(np.abs(rir)))
    out = signal.fftconvolve(wav, rir, mode="full")[delay : delay + wav.shape[0]]
    return out.astype(np.float32, copy=False)


def read_segment(
    path: str | os.PathLike, num_samples: int, rate: int, rng: np.random.Generator
) -> np.ndarray:
    """A random segment of ``num_samples`` at ``rate`` from an audio file (noise, music).

    Reads only the frames it needs; a file at another rate is resampled; a file
    shorter than the segment is repeated. Raises :class:`BadAudio` on failure.
    """
    try:
        with sf.SoundFile(str(path)) as f:
            file_rate, frames = f.samplerate, f.frames
            need = int(np.ceil(num_samples * file_rate / rate)) + 1
            if frames > need:
                f.seek(int(rng.integers(0, frames - need + 1)))
                data = f.read(need, dtype="float32", always_2d=True)
            else:
                data = f.read(dtype="float32", always_2d=True)
    except Exception as e:
        raise BadAudio("unreadable", f"{path}: {type(e).__name__}: {e}") from None
    wav = np.ascontiguousarray(data[:, 0])
    if wav.size == 0 or not np.all(np.isfinite(wav)):
        raise BadAudio("empty" if wav.size == 0 else "non_finite", str(path))
    wav = resample(wav, file_rate, rate)
    return crop_or_pad(wav, num_samples, rng)


def read_audio(path: str | os.PathLike, rate: int) -> np.ndarray:
    """Read a whole (short) file such as a RIR, channel 0, resampled to ``rate``."""
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise BadAudio("unreadable", f"{path}: {type(e).__name__}: {e}") from None
    wav = np.ascontiguousarray(data[:, 0])
    if wav.size == 0 or not np.all(np.isfinite(wav)):
        raise BadAudio("empty" if wav.size == 0 else "non_finite", str(path))
    return resample(wav, file_rate, rate)
