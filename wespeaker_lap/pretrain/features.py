"""The unlabeled pre-training corpus and the frame features its units come from.

Frames are aligned with the SSL model's CNN output: a 25 ms window every 20 ms
(400 and 320 samples at 16 kHz), counted as the CNN counts them
(``floor((N - 400) / 320) + 1``, Kaldi's ``snip_edges``), so unit ``t`` of an
utterance is the target of the model's frame ``t``.

Iteration 1 of HuBERT clusters 39-d MFCC frames (13 cepstra with their first
and second derivatives), after Hsu et al., "HuBERT: Self-Supervised Speech
Representation Learning by Masked Prediction of Hidden Units", IEEE/ACM TASLP
2021. The cepstra come from kaldi-native-fbank; the deltas are Kaldi's
regression over +-2 frames (``add-deltas``); each utterance is mean and
variance normalised per dimension.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np

from wespeaker_lap.dataset.audio import BadAudio, check_waveform, load_audio, load_segment, resample
from wespeaker_lap.dataset.datadir import read_segments
from wespeaker_lap.io.files import read_scp

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WIN_SAMPLES = 400  # 25 ms: the receptive field of the wav2vec 2.0 / HuBERT CNN
HOP_SAMPLES = 320  # 20 ms: its stride


def num_frames(num_samples: int) -> int:
    """CNN frames of an utterance of ``num_samples`` (0 when shorter than one window)."""
    if num_samples < WIN_SAMPLES:
        return 0
    return (num_samples - WIN_SAMPLES) // HOP_SAMPLES + 1


@dataclass
class Corpus:
    """Unlabeled utterances in memory: keys and 16-bit samples (to halve the memory)."""

    keys: list[str]
    wavs: list[np.ndarray]  # each (N,) int16
    skipped: int = 0

    def audio(self, i: int) -> np.ndarray:
        """Utterance ``i`` as float32 in [-1, 1]: (N,)."""
        return self.wavs[i].astype(np.float32) / 32768.0

    @property
    def seconds(self) -> float:
        return sum(len(w) for w in self.wavs) / SAMPLE_RATE


def load_corpus(wav_scps: Iterable[str], min_seconds: float = 1.0) -> Corpus:
    """Read every utterance of the wav.scp files (16 kHz; stereo is averaged).

    Unreadable, empty, silent, non-finite and shorter-than-``min_seconds`` files
    are skipped and counted (one warning each, one summary line); a file at
    another sample rate is resampled to 16 kHz with soxr (below 8 kHz is an
    error, as in ``embed``), and a corpus with nothing usable is an error. A
    Kaldi ``segments`` file next to a wav.scp is read: each segment is an
    utterance, read by seeking. A wav.scp that does not exist is a
    FileNotFoundError naming it.
    """
    keys, wavs, skipped = [], [], 0
    scps = list(wav_scps)
    min_seconds = max(min_seconds, WIN_SAMPLES / SAMPLE_RATE)
    for scp in scps:
        if not Path(scp).is_file():
            raise FileNotFoundError(f"no such wav.scp: {scp}"
                                    + (" (a directory; give its wav.scp)"
                                       if Path(scp).is_dir() else ""))
        table = read_scp(scp)
        seg_file = Path(scp).parent / "segments"
        if seg_file.is_file():  # Kaldi segments: utterances are cut from the recordings
            segs = read_segments(seg_file, table)
            items = [(k, table[g.recording], g) for k, g in sorted(segs.items())]
            logger.info("%s: reading the %d segments of %s", scp, len(items), seg_file)
        else:
            items = [(k, path, None) for k, path in sorted(table.items())]
        for key, path, seg in items:
            try:
                if seg is None:
                    audio, sr = load_audio(path)
                else:
                    audio, sr = load_segment(path, seg.start, seg.end)
                check_waveform(audio, sr)  # a rate below 8 kHz is refused, as in embed
            except BadAudio as e:
                if e.reason == "low_rate":
                    raise ValueError(f"{scp}: {key} ({path}): {e}") from None
                logger.warning("skipping %s (%s): %s", key, path, e)
                skipped += 1
                continue
            if sr != SAMPLE_RATE:  # soxr, as everywhere else (8 kHz telephone speech, 44.1 kHz)
                audio = resample(audio, sr, SAMPLE_RATE)
                sr = SAMPLE_RATE
            try:
                check_waveform(audio, sr, min_seconds)
            except BadAudio as e:
                logger.warning("skipping %s (%s): %s", key, path, e)
                skipped += 1
                continue
            keys.append(key)
            wavs.append(np.round(np.clip(audio, -1.0, 32767 / 32768) * 32768).astype(np.int16))
    corpus = Corpus(keys, wavs, skipped)
    logger.info("pre-training corpus: %d utterances, %.1f min; %d skipped (unreadable, "
                "silent or shorter than %.2f s)", len(keys), corpus.seconds / 60, skipped,
                min_seconds)
    if not keys:
        raise ValueError(f"no usable audio in {scps} ({skipped} files skipped)")
    return corpus


def add_deltas(x: np.ndarray, order: int = 2, window: int = 2) -> np.ndarray:
    """Kaldi's ``add-deltas``: ``x`` (T, D) -> (T, D * (order + 1)).

    Each delta is ``sum_n n (c[t+n] - c[t-n]) / (2 sum_n n^2)`` over n = 1..window
    of the previous order, with edge frames repeated.
    """
    out = [x]
    cur = x
    norm = 2.0 * sum(n * n for n in range(1, window + 1))
    for _ in range(order):
        pad = np.pad(cur, ((window, window), (0, 0)), mode="edge")
        t = cur.shape[0]
        d = sum(n * (pad[window + n : window + n + t] - pad[window - n : window - n + t])
                for n in range(1, window + 1))
        cur = d / norm
        out.append(cur)
    return np.concatenate(out, axis=1)


def mfcc_deltas(audio: np.ndarray) -> np.ndarray:
    """39-d MFCC + deltas + delta-deltas of a 16 kHz utterance, per-utterance CMVN.

    audio: (N,) float in [-1, 1] -> (num_frames(N), 39) float32. 13 cepstra from
    23 mel bins (Kaldi's defaults, energy as c0), 25 ms windows every 20 ms,
    no dither (the same audio always gives the same frames).
    """
    opts = knf.MfccOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.frame_shift_ms = 1000.0 * HOP_SAMPLES / SAMPLE_RATE
    opts.frame_opts.frame_length_ms = 1000.0 * WIN_SAMPLES / SAMPLE_RATE
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = True
    mfcc = knf.OnlineMfcc(opts)
    mfcc.accept_waveform(SAMPLE_RATE, (audio * 32768.0).astype(np.float32).tolist())
    mfcc.input_finished()
    n = mfcc.num_frames_ready
    expected = num_frames(audio.size)
    if n != expected:
        raise RuntimeError(f"kaldi-native-fbank gave {n} MFCC frames, the CNN gives {expected}")
    feats = np.stack([np.asarray(mfcc.get_frame(i), dtype=np.float32) for i in range(n)])
    feats = add_deltas(feats)
    feats = feats - feats.mean(axis=0, keepdims=True)
    return (feats / (feats.std(axis=0, keepdims=True) + 1e-5)).astype(np.float32)
