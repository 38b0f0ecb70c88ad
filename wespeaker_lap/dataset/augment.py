"""Reverberation and additive noise / music / babble, Kaldi and WeSpeaker style.

One augmentation per call, its kind drawn from the available sources with the
configured weights: ``reverb`` (a random RIR), ``noise`` (SNR 0-15 dB),
``music`` (5-15 dB) or ``babble`` (3-7 overlapped speakers, 13-20 dB). The SNR
is that of the speech crop over the whole added signal (for babble: the sum of
the speakers, each first brought to the same level).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from wespeaker_lap.dataset.audio import (
    BadAudio,
    power,
    read_audio,
    read_segment,
    reverberate,
    scale_to_snr,
)

logger = logging.getLogger(__name__)

AUG_KINDS = ("reverb", "noise", "music", "babble")
DEFAULT_SNR = {"noise": (0.0, 15.0), "music": (5.0, 15.0), "babble": (13.0, 20.0)}
DEFAULT_BABBLE_SPEAKERS = (3, 7)


@dataclass
class Augmenter:
    """Draws and applies one augmentation.

    ``sources`` maps a kind's source type (``rir``, ``noise``, ``music``,
    ``babble``) to audio paths; kinds without sources are never drawn.
    ``weights`` are relative draw weights per kind (default equal, as WeSpeaker).
    ``on_bad_source`` is called with the exception when a source file fails
    (the crop is then returned clean).
    """

    sources: Mapping[str, Sequence[str]]
    sample_rate: int
    snr: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_SNR))
    weights: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(AUG_KINDS, 1.0))
    babble_speakers: tuple[int, int] = DEFAULT_BABBLE_SPEAKERS
    on_bad_source: Callable[[BadAudio], None] | None = None

    def __post_init__(self):
        kinds, w = [], []
        for kind in AUG_KINDS:
            src = "rir" if kind == "reverb" else kind
            weight = float(self.weights.get(kind, 0.0))
            if weight > 0 and self.sources.get(src):
                kinds.append(kind)
                w.append(weight)
        if not kinds:
            raise ValueError(
                "augmentation needs at least one source with a positive weight; sources: "
                f"{ {k: len(v) for k, v in self.sources.items()} }, weights: {dict(self.weights)}"
            )
        self.kinds = kinds
        self.probs = np.asarray(w) / np.sum(w)
        lo, hi = self.babble_speakers
        if not 1 <= lo <= hi:
            raise ValueError(f"babble_speakers must be [lo, hi] with 1 <= lo <= hi, got {lo, hi}")

    def __call__(self, wav: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        """Augment one crop -> (new crop, info). info: ``aug`` kind (or ``none``), ``snr`` dB."""
        kind = self.kinds[int(rng.choice(len(self.kinds), p=self.probs))]
        try:
            if kind == "reverb":
                rir = read_audio(self._pick(rng, "rir"), self.sample_rate)
                return reverberate(wav, rir), {"aug": "reverb"}
            noise = self._noise(kind, wav.shape[0], rng)
        except BadAudio as e:
            logger.warning("augmentation source skipped: %s", e)
            if self.on_bad_source is not None:
                self.on_bad_source(e)
            return wav, {"aug": "none"}
        lo, hi = self.snr[kind]
        snr = float(rng.uniform(lo, hi))
        scaled = scale_to_snr(wav, noise, snr)
        if scaled is None:  # silent crop or silent noise: nothing sensible to add
            return wav, {"aug": "none"}
        return wav + scaled, {"aug": kind, "snr": snr}

    def _pick(self, rng: np.random.Generator, src: str) -> str:
        paths = self.sources[src]
        return paths[int(rng.integers(len(paths)))]

    def _noise(self, kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
        if kind != "babble":
            return read_segment(self._pick(rng, kind), n, self.sample_rate, rng)
        paths = self.sources["babble"]
        lo, hi = self.babble_speakers
        k = int(rng.integers(lo, hi + 1))
        idx = rng.choice(len(paths), size=k, replace=len(paths) < k)
        mix = np.zeros(n, dtype=np.float32)
        for i in idx:
            seg = read_segment(paths[int(i)], n, self.sample_rate, rng)
            p = power(seg)
            if p > 1e-20:
                mix += seg / np.float32(np.sqrt(p))
        return mix
