#!/usr/bin/env python3
"""A crude speaker-discriminability check of a synthesized corpus (not a test).

Each utterance becomes the mean and standard deviation of its MFCCs (20
coefficients without c0, over frames within 40 dB of the loudest) and its
log-mel band means; trials are scored by cosine similarity after subtracting
the mean over all scored utterances; the EER is printed. A demo corpus should
give an imperfect figure here (roughly 5-25 %): 0 % means the speakers are
trivially separable, ~50 % that they are indistinguishable.

    python tools/synth/crude_eer.py DIR/data/test [--trials DIR/data/test/trials.kaldi]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.fft import dct
from scipy.signal import stft


def mel_filterbank(num_mel: int, n_fft: int, sr: int, fmin: float = 40.0) -> np.ndarray:
    """Triangular mel filters ``(num_mel, n_fft // 2 + 1)``."""

    def hz2mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel2hz(m):
        return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = mel2hz(np.linspace(hz2mel(fmin), hz2mel(sr / 2), num_mel + 2))
    f = np.linspace(0, sr / 2, n_fft // 2 + 1)
    fb = np.zeros((num_mel, f.size))
    for i in range(num_mel):
        lo, c, hi = edges[i : i + 3]
        fb[i] = np.clip(np.minimum((f - lo) / (c - lo), (hi - f) / (hi - c)), 0, None)
    return fb


def features(path: str, num_mel: int = 40, num_ceps: int = 20) -> dict[str, np.ndarray]:
    """``{"mfcc": mean+std of MFCC 1..num_ceps, "logmel": mean log-mel}`` over active frames."""
    x, sr = sf.read(path, dtype="float64")
    _, _, z = stft(x, fs=sr, nperseg=400, noverlap=240, nfft=512, boundary=None)
    power = np.abs(z) ** 2
    logmel = np.log(mel_filterbank(num_mel, 512, sr) @ power + 1e-10)  # (mel, frames)
    energy = logmel.max(axis=0)
    active = energy >= energy.max() - np.log(1e4)  # within 40 dB of the loudest frame
    lm = logmel[:, active]
    ceps = dct(lm, type=2, axis=0, norm="ortho")[1 : num_ceps + 1]
    return {
        "mfcc": np.concatenate([ceps.mean(axis=1), ceps.std(axis=1)]),
        "logmel": lm.mean(axis=1) - lm.mean(),
    }


def eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """Equal error rate (fraction) by sweeping the threshold over the sorted scores."""
    order = np.argsort(-scores, kind="stable")
    lab = labels[order].astype(bool)
    tp = np.cumsum(lab) / lab.sum()  # accepted targets
    fp = np.cumsum(~lab) / (~lab).sum()  # accepted non-targets
    fnr = 1.0 - tp
    i = int(np.argmin(np.abs(fnr - fp)))
    return float((fnr[i] + fp[i]) / 2.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path, help="a data dir with wav.scp")
    p.add_argument("--trials", type=Path, help="Kaldi trials (default DATA/trials.kaldi)")
    args = p.parse_args()
    wavs = dict(line.split(maxsplit=1) for line in (args.data / "wav.scp").read_text().splitlines())
    trials = [line.split() for line in (args.trials or args.data / "trials.kaldi").read_text()
              .splitlines()]
    feats = {u: features(w.strip()) for u, w in wavs.items()}
    labels = np.array([t[2] == "target" for t in trials])
    for kind in ("mfcc", "logmel"):
        keys = sorted(feats)
        m = np.stack([feats[k][kind] for k in keys])
        m = m - m.mean(axis=0)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        row = {k: i for i, k in enumerate(keys)}
        s = np.array([m[row[e]] @ m[row[t]] for e, t, _ in trials])
        print(f"{kind:7s} cosine EER {100 * eer(s, labels):5.2f} %  ({len(trials)} trials, "
              f"{labels.sum()} target)")


if __name__ == "__main__":
    main()
