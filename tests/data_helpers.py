"""Helpers for the data tests: generated audio and tiny data dirs (no tests here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wespeaker_lap.dataset.datadir import write_data_dir

HAVE_ESPEAK = shutil.which("espeak-ng") is not None
needs_espeak = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng not installed")


def tone(seconds: float, sr: int = 16000, freq: float = 220.0, noise: float = 0.05,
         seed: int = 0) -> np.ndarray:
    """A sine plus a little white noise, float32 in [-0.5, 0.5]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    x = 0.4 * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(t.size)
    return x.astype(np.float32)


def write_audio(path: Path, wav: np.ndarray, sr: int = 16000, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = (fmt or path.suffix[1:]).upper()
    subtype = "PCM_16" if kind in ("WAV", "FLAC") else None  # ogg: vorbis
    sf.write(str(path), wav, sr, format=fmt, subtype=subtype)
    return path


def espeak(text: str, path: Path, voice: str = "en") -> Path:
    """Speech from espeak-ng (22.05 kHz wav)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True,
                   capture_output=True, timeout=30)
    return path


def make_corpus(root: Path, num_spk: int = 3, num_utt: int = 4, sr: int = 16000,
                seconds: tuple[float, float] = (0.6, 1.4), voxceleb_keys: bool = True,
                formats: tuple[str, ...] = ("wav",)) -> Path:
    """A data dir of sines (one pitch per speaker) under ``root/data``; returns its path.

    Keys look like VoxCeleb's ``id1000k/vid/0000u.wav`` when ``voxceleb_keys``.
    """
    rng = np.random.default_rng(123)
    wav, u2s = {}, {}
    for s in range(num_spk):
        spk = f"id1000{s}"
        for u in range(num_utt):
            key = f"{spk}/vid{u % 2}/{u:05d}.wav" if voxceleb_keys else f"{spk}-{u:03d}"
            ext = formats[(s * num_utt + u) % len(formats)]
            path = root / "audio" / spk / f"{u:05d}.{ext}"
            dur = float(rng.uniform(*seconds))
            write_audio(path, tone(dur, sr, 150 + 60 * s, seed=s * 100 + u), sr)
            wav[key], u2s[key] = str(path), spk
    write_data_dir(root / "data", wav, u2s)
    return root / "data"


def make_tone_data_dir(d: Path, speakers: int = 3, utts: int = 3, seed: int = 0) -> Path:
    """A Kaldi data dir of tones + noise, 0.5-1.5 s each (wav.scp, utt2spk, utt2dur)."""
    sr = 16000
    rng = np.random.default_rng(seed)
    (d / "wav").mkdir(parents=True)
    wav, u2s, dur = [], [], []
    for s in range(speakers):
        for u in range(utts):
            key = f"spk{s}-utt{u}"
            n = int(sr * rng.uniform(0.5, 1.5))
            t = np.arange(n) / sr
            x = 0.3 * np.sin(2 * np.pi * (120 + 60 * s) * t) + 0.05 * rng.standard_normal(n)
            sf.write(d / "wav" / f"{key}.wav", x.astype(np.float32), sr)
            wav.append(f"{key} {d / 'wav' / key}.wav\n")
            u2s.append(f"{key} spk{s}\n")
            dur.append(f"{key} {n / sr:.3f}\n")
    (d / "wav.scp").write_text("".join(wav))
    (d / "utt2spk").write_text("".join(u2s))
    (d / "utt2dur").write_text("".join(dur))
    return d


def make_segments_dir(root: Path, num_rec: int = 3, seconds: float = 4.0,
                      extra_lines: tuple[str, ...] = ()) -> Path:
    """A Kaldi data dir of long recordings cut by a ``segments`` file, under ``root/seg``.

    Recording ``rec{r}`` (a tone whose pitch is its speaker's) holds two segments,
    ``spk{r}-rec{r}-a`` (0.2-1.7 s) and ``spk{r}-rec{r}-b`` (2.0-3.5 s); ``wav.scp``
    is keyed by recording, the other files by segment. ``extra_lines`` are added
    to ``segments`` (and given a speaker in utt2spk), e.g. overlapping or
    out-of-range ones.
    """
    d = root / "seg"
    d.mkdir(parents=True)
    wav, segs, u2s = [], [], []
    for r in range(num_rec):
        rec = f"rec{r}"
        path = write_audio(root / "long" / f"{rec}.wav",
                           tone(seconds, 16000, 150 + 60 * r, seed=r), 16000)
        wav.append(f"{rec} {path}")
        for tag, (a, b) in (("a", (0.2, 1.7)), ("b", (2.0, 3.5))):
            utt = f"spk{r}-{rec}-{tag}"
            segs.append(f"{utt} {rec} {a:.2f} {b:.2f}")
            u2s.append(f"{utt} spk{r}")
    for line in extra_lines:
        segs.append(line)
        utt = line.split()[0]
        u2s.append(f"{utt} {utt.split('-')[0]}")
    (d / "wav.scp").write_text("".join(f"{x}\n" for x in sorted(wav)))
    (d / "segments").write_text("".join(f"{x}\n" for x in sorted(segs)))
    (d / "utt2spk").write_text("".join(f"{x}\n" for x in sorted(u2s)))
    spk2utt: dict[str, list[str]] = {}
    for line in sorted(u2s):
        utt, spk = line.split()
        spk2utt.setdefault(spk, []).append(utt)
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(u)}\n" for s, u in sorted(spk2utt.items())))
    return d


def make_tiny_model_dir(d: Path) -> Path:
    """A tiny trained-model dir (config.yaml + models/avg_model.pt): random WavLM (receptive
    field 400 samples) and LAP_ASTP, 16-dim embeddings."""
    import yaml

    from wespeaker_lap.frontend.testing import tiny_ssl_config
    from wespeaker_lap.io.checkpoints import save_weights
    from wespeaker_lap.models import build_extractor

    cfg = {"exp_dir": "unused", "dataset_args": {"sample_rate": 16000}, "frontend": "ssl",
           "frontend_args": {"config": tiny_ssl_config("wavlm")}, "model": "LAP_ASTP",
           "model_args": {"embed_dim": 16, "lap_dim": 32, "heads": 4}}
    (d / "models").mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    save_weights(build_extractor(cfg), d / "models" / "avg_model.pt")
    return d
