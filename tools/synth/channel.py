"""Per-utterance channel variation: telephone band, codecs, reverberation, noise.

:func:`apply_channel` draws at most one *channel* (band-limited telephone line,
lossy codec, ffmpeg GSM round trip) and, independently, reverberation and
additive noise, for one utterance. Channels are drawn per utterance, never per
speaker, so a channel is not a speaker cue.

* ``telephone``: 300-3400 Hz band-pass (4th-order Butterworth), resampled to
  8 kHz and back, 8-bit G.711 mu-law companding;
* ``mp3`` / ``vorbis`` / ``opus``: an in-memory round trip through libsndfile's
  encoders at a low bit rate (``compression_level`` 0.6-0.95);
* ``gsm``: a round trip through ffmpeg's libgsm (8 kHz GSM 06.10), when ffmpeg
  has it (one process per utterance: drawn rarely);
* reverberation: convolution with a synthetic room response of RT60 0.2-0.8 s
  (``noise_rir.synth_rir``);
* noise: white, pink or brown noise at 5-25 dB SNR over the active speech.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import noise_rir
import numpy as np
import soundfile as sf
import soxr
from scipy.signal import butter, fftconvolve, sosfilt

SR = 16000
CHANNELS = ("telephone", "mp3", "vorbis", "opus", "gsm")
_SOS_PHONE = butter(4, [300.0, 3400.0], btype="bandpass", fs=SR, output="sos")
_HAS_GSM: bool | None = None


def _has_gsm() -> bool:
    global _HAS_GSM
    if _HAS_GSM is None:
        ff = shutil.which("ffmpeg")
        _HAS_GSM = bool(ff) and "libgsm" in subprocess.run(
            [ff, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    return _HAS_GSM


def telephone(x: np.ndarray) -> np.ndarray:
    y = sosfilt(_SOS_PHONE, x)
    y = soxr.resample(y.astype(np.float32), SR, 8000)
    mu = 255.0
    c = np.sign(y) * np.log1p(mu * np.minimum(np.abs(y), 1.0)) / np.log1p(mu)
    c = np.round(c * 127.0) / 127.0
    y = np.sign(c) * ((1 + mu) ** np.abs(c) - 1) / mu
    return soxr.resample(y.astype(np.float32), 8000, SR)[: x.size]


def codec(x: np.ndarray, fmt: str, level: float) -> np.ndarray:
    kinds = {"mp3": ("MP3", "MPEG_LAYER_III"), "vorbis": ("OGG", "VORBIS"),
             "opus": ("OGG", "OPUS")}
    f, sub = kinds[fmt]
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1, 1).astype(np.float32), SR, format=f, subtype=sub,
             compression_level=level)
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float32")
    y = y.reshape(-1)
    out = np.zeros(x.size, dtype=np.float32)
    out[: min(x.size, y.size)] = y[: x.size]
    return out


def gsm(x: np.ndarray) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="lap_gsm_") as tmp:
        src, mid, dst = Path(tmp) / "a.wav", Path(tmp) / "b.gsm", Path(tmp) / "c.wav"
        sf.write(str(src), np.clip(x, -1, 1), SR, subtype="PCM_16")
        base = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
        subprocess.run(base + ["-i", str(src), "-ar", "8000", "-ac", "1", "-c:a", "libgsm",
                               "-f", "gsm", str(mid)], check=True, capture_output=True)
        subprocess.run(base + ["-f", "gsm", "-ar", "8000", "-i", str(mid), "-ar", str(SR),
                               str(dst)], check=True, capture_output=True)
        y, _ = sf.read(str(dst), dtype="float32")
    out = np.zeros(x.size, dtype=np.float32)
    out[: min(x.size, y.size)] = y[: x.size]
    return out


def apply_channel(rng: np.random.Generator, x: np.ndarray, speech_rms: float,
                  p_channel: float = 0.3, p_reverb: float = 0.2, p_noise: float = 0.3,
                  p_gsm: float = 0.05) -> tuple[np.ndarray, str]:
    """One utterance through a random channel: x (N,) float64 -> (N,) float64, and a tag
    naming what was applied (``clean`` when nothing)."""
    tags = []
    y = np.asarray(x, dtype=np.float64)
    if rng.random() < p_reverb:
        rir = noise_rir.synth_rir(rng, float(rng.uniform(*noise_rir.RT60_RANGE)))
        k = int(np.argmax(np.abs(rir)))
        y = fftconvolve(y, rir.astype(np.float64))[k : k + y.size]
        y *= np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)) / max(
            float(np.sqrt(np.mean(y**2))), 1e-12)  # same level as before
        tags.append("reverb")
    if rng.random() < p_noise:
        colour = list(noise_rir.NOISE_COLOURS)[int(rng.integers(3))]
        n = noise_rir.coloured_noise(rng, y.size, colour).astype(np.float64)
        snr = float(rng.uniform(5.0, 25.0))
        n *= speech_rms / max(float(np.sqrt(np.mean(n**2))), 1e-12) * 10 ** (-snr / 20.0)
        y = y + n
        tags.append(f"{colour}{snr:.0f}dB")
    if rng.random() < p_channel:
        kind = "gsm" if (rng.random() < p_gsm / max(p_channel, 1e-9) and _has_gsm()) else \
            ("telephone", "mp3", "vorbis", "opus")[int(rng.integers(4))]
        level = float(rng.uniform(0.6, 0.95))
        if kind == "telephone":
            y = telephone(y).astype(np.float64)
        elif kind == "gsm":
            y = gsm(y).astype(np.float64)
        else:
            y = codec(y, kind, level).astype(np.float64)
        tags.append(kind)
    return y, "+".join(tags) or "clean"
