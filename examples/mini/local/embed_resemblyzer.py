"""Embed a data dir with Resemblyzer, the real-speech peer of the backend comparison.

    ../../.venv-resemblyzer/bin/python local/embed_resemblyzer.py \\
        --data corpus/data/test --embed_dir exp/resemblyzer/embeddings/test

Resemblyzer's ``VoiceEncoder`` is a GE2E speaker encoder (Wan, Wang, Papir and
Moreno, "Generalized End-to-End Loss for Speaker Verification", ICASSP 2018): a
3-layer LSTM over 40-band mel frames, trained by its authors on thousands of
real speakers; its weights ship in the ``Resemblyzer`` wheel. Every utterance
of ``wav.scp`` goes through Resemblyzer's own ``preprocess_wav`` (volume
normalisation, WebRTC VAD trimming of long silences) and ``embed_utterance``
(1.6 s partials at 1.3 a second, their mean, L2-normed). An utterance the VAD
trims to nothing is embedded untrimmed instead (logged with its key).

Writes what ``tools/extract_embeddings.sh`` writes, so the project's scoring
reads it unchanged: ``xvector.ark`` + ``xvector.scp`` (Kaldi float vectors via
kaldiio, keys sorted) and ``mean_vec.npy``, each under a temporary name and
renamed. Runs in the venv of ``local/install_resemblyzer.sh`` (resemblyzer,
torch, kaldiio); it imports nothing from wespeaker_lap, whose dependencies that
venv does not have. One torch thread by default, so its speed is a one-core figure.
"""

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import kaldiio
import numpy as np
import soundfile  # librosa's reader, so it is in the venv
import torch
from resemblyzer import VoiceEncoder, preprocess_wav
from resemblyzer.audio import normalize_volume
from resemblyzer.hparams import audio_norm_target_dBFS, sampling_rate

logger = logging.getLogger("embed_resemblyzer")


def read_wav_scp(path: Path) -> dict[str, str]:
    """``key -> wav path`` of a Kaldi wav.scp; a piped entry, a bad line, a duplicate key
    or a missing file exits naming the file and line."""
    table = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise SystemExit(f"{path}:{n}: expected 'key wav_path', got {line!r}")
        key, wav = parts[0], parts[1].strip()
        if wav.endswith("|"):
            raise SystemExit(f"{path}:{n}: piped entry {wav!r}: embed_resemblyzer.py reads "
                             f"audio files only")
        if key in table:
            raise SystemExit(f"{path}:{n}: duplicate key {key!r}")
        if not Path(wav).is_file():
            raise SystemExit(f"{path}:{n}: audio file of {key!r} not found: {wav}")
        table[key] = wav
    if not table:
        raise SystemExit(f"{path}: no utterances")
    return table


def embed(encoder: VoiceEncoder, key: str, wav_path: str) -> tuple[np.ndarray, float, bool]:
    """(256-dim embedding, seconds of audio after preprocessing, whether the VAD kept nothing)."""
    wav = preprocess_wav(wav_path)
    empty = wav.size == 0
    if empty:  # all silence to the VAD: the volume-normalised utterance, untrimmed
        raw, sr = soundfile.read(wav_path, dtype="float32")
        if sr != sampling_rate or raw.ndim != 1:
            raise SystemExit(f"{wav_path} ({key}): expected mono {sampling_rate} Hz audio, "
                             f"got {sr} Hz with shape {raw.shape}")
        wav = normalize_volume(raw, audio_norm_target_dBFS, increase_only=True)
    e = encoder.embed_utterance(wav)
    if not np.all(np.isfinite(e)):
        raise SystemExit(f"{wav_path} ({key}): Resemblyzer gave a non-finite embedding")
    return e.astype(np.float32), wav.size / sampling_rate, empty


def write_embeddings(embed_dir: Path, emb: dict[str, np.ndarray]) -> None:
    """``xvector.ark`` / ``.scp`` (keys sorted) and ``mean_vec.npy``, each renamed into place
    (the ark before the scp that points at it)."""
    embed_dir.mkdir(parents=True, exist_ok=True)
    ark, scp, mean = (embed_dir / n for n in ("xvector.ark", "xvector.scp", "mean_vec.npy"))
    tmp_ark, tmp_scp, tmp_mean = (p.with_name(p.name + f".tmp{os.getpid()}")
                                  for p in (ark, scp, mean))
    keys = sorted(emb)
    kaldiio.save_ark(str(tmp_ark), {k: emb[k] for k in keys}, scp=str(tmp_scp))
    # the scp names the final ark
    lines = [f"{k} {ark}:{loc.rsplit(':', 1)[1]}\n" for k, loc in
             (line.split(" ", 1) for line in tmp_scp.read_text(encoding="utf-8").splitlines())]
    tmp_scp.write_text("".join(lines), encoding="utf-8")
    with open(tmp_mean, "wb") as f:
        np.save(f, np.mean(np.stack([emb[k] for k in keys]), axis=0))
    for tmp, final in ((tmp_ark, ark), (tmp_scp, scp), (tmp_mean, mean)):
        tmp.replace(final)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="Kaldi data dir with wav.scp")
    p.add_argument("--embed_dir", required=True, help="output dir (xvector.scp/.ark, mean_vec.npy)")
    p.add_argument("--num_threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (embed_resemblyzer) %(message)s")
    torch.set_num_threads(args.num_threads)
    wavs = read_wav_scp(Path(args.data) / "wav.scp")
    encoder = VoiceEncoder(device="cpu", verbose=False)
    t0 = time.perf_counter()
    emb, seconds, untrimmed = {}, 0.0, []
    for i, (key, wav_path) in enumerate(wavs.items(), 1):
        emb[key], secs, empty = embed(encoder, key, wav_path)
        seconds += secs
        if empty:
            untrimmed.append(key)
            logger.info("%s: the VAD kept nothing; embedded untrimmed", key)
        if i % 500 == 0:
            logger.info("%d / %d utterances", i, len(wavs))
    wall = time.perf_counter() - t0
    write_embeddings(Path(args.embed_dir), emb)
    logger.info("%s: %d utterances (%d embedded untrimmed), %.0f s of audio after the VAD, "
                "%.1f s wall on %d torch thread(s) (%.0fx real time) -> %s",
                args.data, len(emb), len(untrimmed), seconds, wall, args.num_threads,
                seconds / max(wall, 1e-9), args.embed_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
