"""Synthetic noise sources and room impulse responses for the augmentation path.

Noise kinds (the type names match ``wespeaker_lap.dataset.lists.NOISE_TYPES``):

* ``noise``: coloured Gaussian noise, white (flat), pink (power ~ 1/f) or brown
  (power ~ 1/f^2), shaped in the frequency domain, high-passed at 20 Hz;
* ``babble``: 3-7 speech utterances (from the training set) overlapped, each
  tiled to the clip length from a random start with a random gain;
* ``music``: tonal sounds, the nearest thing to MUSAN's music class: mains hum
  (50/60 Hz and harmonics), a few slowly modulated sine tones, or beeps.

RIRs (:func:`synth_rir`): a direct-path impulse after a 1-4 ms delay, 4-11 early
reflections (2-40 ms after it, random sign, amplitudes on the room's decay
curve), and a late tail of Gaussian noise under an exponential envelope
``exp(-3 ln(10) t / RT60)`` (amplitude; energy falls 60 dB in RT60 seconds),
faded in over 5-20 ms. The direct-to-reverberant energy ratio (reverberant =
reflections + tail) is drawn in [-3, 8] dB; the reflections carry 10-30 % of
the reverberant energy. :func:`estimate_rt60` measures RT60 back from a response with the
Schroeder backward integral (a line fitted to its -5 .. -35 dB part, T30 x 2).

Every generator takes a ``numpy.random.Generator`` and returns float32 audio
``(num_samples,)`` scaled to a fixed RMS (noise) or peak (RIR).
"""

from __future__ import annotations

import numpy as np

NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ 1/f^beta
TONE_KINDS = ("hum", "tones", "beeps")
RT60_RANGE = (0.2, 0.8)
NOISE_RMS = 0.1  # -20 dBFS


def _to_rms(x: np.ndarray, rms: float = NOISE_RMS) -> np.ndarray:
    x = x - x.mean()
    cur = float(np.sqrt(np.mean(x**2)))
    if cur <= 0:
        raise ValueError("cannot scale a silent signal")
    x = x * (rms / cur)
    peak = float(np.abs(x).max())
    if peak > 0.99:  # keep 16-bit wav files unclipped
        x = x * (0.99 / peak)
    return x.astype(np.float32)


def coloured_noise(rng: np.random.Generator, num_samples: int, colour: str, sr: int = 16000):
    """Gaussian noise with power spectrum ~ 1/f^beta (white 0, pink 1, brown 2)."""
    if colour not in NOISE_COLOURS:
        raise ValueError(f"unknown noise colour {colour!r}; valid: {sorted(NOISE_COLOURS)}")
    beta = NOISE_COLOURS[colour]
    spec = np.fft.rfft(rng.standard_normal(num_samples))
    f = np.fft.rfftfreq(num_samples, 1.0 / sr)
    gain = np.zeros_like(f)
    keep = f >= 20.0
    gain[keep] = f[keep] ** (-beta / 2.0)
    return _to_rms(np.fft.irfft(spec * gain, n=num_samples))


def tonal_noise(rng: np.random.Generator, num_samples: int, kind: str, sr: int = 16000):
    """Hum (50/60 Hz + harmonics), 2-4 amplitude-modulated sines, or beeps, over a faint floor."""
    t = np.arange(num_samples) / sr
    if kind == "hum":
        f0 = float(rng.choice([50.0, 60.0])) * rng.uniform(0.995, 1.005)
        x = sum(
            rng.uniform(0.0, 1.0) / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
            for k in range(1, 9)
        )
    elif kind == "tones":
        x = np.zeros(num_samples)
        for _ in range(int(rng.integers(2, 5))):
            f = float(np.exp(rng.uniform(np.log(200.0), np.log(3000.0))))
            am = 1.0 + 0.8 * np.sin(2 * np.pi * rng.uniform(0.1, 2.0) * t + rng.uniform(0, 6.3))
            x += rng.uniform(0.3, 1.0) * am * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3))
    elif kind == "beeps":
        f = rng.uniform(400.0, 2000.0)
        period, duty = rng.uniform(0.3, 1.2), rng.uniform(0.2, 0.6)
        gate = ((t / period) % 1.0) < duty
        x = np.sin(2 * np.pi * f * t) * gate
    else:
        raise ValueError(f"unknown tone kind {kind!r}; valid: {list(TONE_KINDS)}")
    x = x + 0.01 * rng.standard_normal(num_samples)
    return _to_rms(np.asarray(x, dtype=np.float64))


def babble(rng: np.random.Generator, num_samples: int, utterances: list[np.ndarray]):
    """Sum of the given utterances (3-7 of them), each tiled to length from a random start.

    Each utterance is scaled to unit RMS, then by a gain drawn in [-6, 0] dB.
    """
    if not utterances:
        raise ValueError("babble needs at least one utterance")
    x = np.zeros(num_samples)
    for u in utterances:
        u = np.asarray(u, dtype=np.float64)
        u = u / max(float(np.sqrt(np.mean(u**2))), 1e-8)
        reps = int(np.ceil((num_samples + u.size) / u.size)) + 1
        tiled = np.tile(u, reps)
        start = int(rng.integers(0, u.size))
        x += 10 ** (rng.uniform(-6.0, 0.0) / 20.0) * tiled[start : start + num_samples]
    return _to_rms(x)


def synth_rir(
    rng: np.random.Generator, rt60: float, sr: int = 16000, drr_db: float | None = None
) -> np.ndarray:
    """A synthetic room impulse response with reverberation time ``rt60`` seconds.

    Length ``1.1 * rt60 + 50 ms`` (the tail ends ~66 dB down); peak 0.9.
    """
    if not 0.05 <= rt60 <= 3.0:
        raise ValueError(f"rt60 must be in [0.05, 3] s, got {rt60}")
    if drr_db is None:
        drr_db = float(rng.uniform(-3.0, 8.0))
    n = int((1.1 * rt60 + 0.05) * sr)
    decay = 3.0 * np.log(10.0) / rt60  # amplitude decay rate (1/s): 60 dB energy in rt60
    d0 = int(rng.uniform(0.001, 0.004) * sr)
    t = (np.arange(n) - d0) / sr  # time after the direct path
    reverb_energy = 10 ** (-drr_db / 10.0)  # the direct path has energy 1
    early_frac = float(rng.uniform(0.1, 0.3))  # share of the reverberant energy
    # late tail: exponentially decaying noise, faded in after the direct path
    ramp = np.clip(t / rng.uniform(0.005, 0.02), 0.0, 1.0)
    tail = rng.standard_normal(n) * np.exp(-decay * np.maximum(t, 0.0)) * ramp
    rir = tail * np.sqrt((1.0 - early_frac) * reverb_energy / float(np.sum(tail**2)))
    # early reflections, shaped by the same decay curve
    early = np.zeros(n)
    for _ in range(int(rng.integers(4, 12))):
        delay = rng.uniform(0.002, 0.04)
        amp = rng.uniform(0.3, 0.9) * np.exp(-decay * delay)
        early[d0 + int(delay * sr)] += amp if rng.random() < 0.5 else -amp
    rir += early * np.sqrt(early_frac * reverb_energy / max(float(np.sum(early**2)), 1e-12))
    rir[d0] += 1.0
    return (0.9 * rir / np.abs(rir).max()).astype(np.float32)


def schroeder_db(rir: np.ndarray) -> np.ndarray:
    """The energy decay curve in dB (0 at the start): 10 log10 of the backward energy integral."""
    e = np.cumsum(np.asarray(rir, dtype=np.float64)[::-1] ** 2)[::-1]
    return 10.0 * np.log10(np.maximum(e / e[0], 1e-30))


def estimate_rt60(rir: np.ndarray, sr: int = 16000, hi_db: float = -5.0, lo_db: float = -35.0):
    """RT60 in seconds from a line fitted to the Schroeder curve between ``hi_db`` and ``lo_db``."""
    edc = schroeder_db(rir)
    idx = np.flatnonzero((edc <= hi_db) & (edc >= lo_db))
    if idx.size < 2:
        raise ValueError(f"decay curve never spans {hi_db}..{lo_db} dB")
    slope = np.polyfit(idx / sr, edc[idx], 1)[0]  # dB per second
    return float(-60.0 / slope)
