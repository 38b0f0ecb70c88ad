"""Self-supervised pre-training of a small wav2vec 2.0 model on unlabeled audio.

The mini recipe has no downloadable SSL checkpoint, so it pre-trains its own:
``transformers.Wav2Vec2ForPreTraining`` (masked contrastive objective over
quantized CNN features plus the codebook diversity loss) on the recipe's
training audio, then saves the encoder with ``save_pretrained`` so that
``SSLFrontend(<out dir>)`` loads it like any hub checkpoint.

    python -m wespeaker_lap.bin.pretrain_ssl --config conf/ssl_wav2vec2_mini.yaml \\
        --wav_scp data/train/wav.scp --out exp/ssl_mini

The YAML holds ``model_args`` (``Wav2Vec2Config`` fields) and ``train_args``
(below). Audio is read into memory (this is for small corpora) and must be at
the model's 16 kHz. Masks and negatives are drawn from a seeded generator, so
a run is reproducible. The output directory is written whole or not at all
(a temporary directory renamed at the end).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from wespeaker_lap.dataset.audio import BadAudio, check_waveform
from wespeaker_lap.frontend.ssl import (
    default_do_normalize,
    normalize_waveforms,
    save_preprocessing,
)
from wespeaker_lap.io.files import read_scp, read_yaml
from wespeaker_lap.utils.logging_utils import setup_logging

logger = logging.getLogger(__name__)

TRAIN_DEFAULTS = {
    "steps": 600,  # optimiser steps (a --max_minutes budget may stop earlier)
    "batch_size": 8,
    "crop_seconds": 2.0,
    "lr": 1e-3,
    "warmup_steps": 60,
    "weight_decay": 0.01,
    "grad_clip": 5.0,
    "mask_time_prob": 0.5,  # fraction of frames that start a masked span, before overlap
    "mask_time_length": 10,  # frames per masked span
    "gumbel_temperature": [2.0, 0.5],  # annealed linearly from first to second over the run
    "min_seconds": 1.0,  # shorter utterances are skipped (counted in the log)
    "log_every": 25,
}


def load_corpus(wav_scps: list[str], sample_rate: int, min_seconds: float) -> list[np.ndarray]:
    """Read every utterance of the wav.scp files into memory as float32 mono."""
    wavs, skipped = [], 0
    for scp in wav_scps:
        for key, path in sorted(read_scp(scp).items()):
            try:
                audio, sr = sf.read(path, dtype="float32", always_2d=True)
            except (RuntimeError, sf.LibsndfileError) as e:
                logger.warning("skipping unreadable %s (%s): %s", key, path, e)
                skipped += 1
                continue
            if sr != sample_rate:
                raise ValueError(
                    f"{scp}: {key} ({path}) is {sr} Hz, the SSL model takes {sample_rate} Hz; "
                    "resample the corpus first"
                )
            audio = audio.mean(axis=1)
            try:  # the training pipeline's notion of bad audio
                check_waveform(audio, sr, min_seconds)
            except BadAudio as e:
                logger.warning("skipping %s (%s): %s", key, path, e)
                skipped += 1
                continue
            wavs.append(audio)
    logger.info("pre-training corpus: %d utterances, %.1f min (%d skipped)",
                len(wavs), sum(len(w) for w in wavs) / sample_rate / 60, skipped)
    if not wavs:
        raise ValueError(f"no usable audio in {wav_scps}")
    return wavs


def sample_crops(wavs, rng: np.random.Generator, batch: int, n: int) -> torch.Tensor:
    """A batch of random crops (repeat-padded when an utterance is shorter). -> (B, n)"""
    out = np.zeros((batch, n), dtype=np.float32)
    for i, j in enumerate(rng.integers(0, len(wavs), size=batch)):
        w = wavs[j]
        if len(w) < n:
            w = np.tile(w, math.ceil(n / len(w)))
        start = rng.integers(0, len(w) - n + 1)
        out[i] = w[start : start + n]
    return torch.from_numpy(out)


def span_mask(rng: np.random.Generator, batch: int, frames: int, prob: float, span: int):
    """Boolean (B, T) mask: spans of ``span`` frames starting at ``prob`` of the frames.

    At least two frames stay unmasked and at least one span is masked per row.
    """
    mask = np.zeros((batch, frames), dtype=bool)
    last_start = max(frames - span, 1)
    n_spans = max(1, int(prob * frames / span + rng.random()))
    for b in range(batch):
        starts = rng.choice(last_start, size=min(n_spans, last_start), replace=False)
        for s in starts:
            mask[b, s : s + span] = True
        if mask[b].sum() > frames - 2:
            mask[b, -2:] = False
    return mask


def sample_negatives(rng: np.random.Generator, mask: np.ndarray, num_negatives: int):
    """Negative indices (B, T, K) into the flattened (B*T) features, as transformers expects.

    For each frame, negatives are other *masked* frames of the same utterance.
    """
    batch, frames = mask.shape
    neg = np.zeros((batch, frames, num_negatives), dtype=np.int64)
    for b in range(batch):
        idx = np.flatnonzero(mask[b])
        if len(idx) < 2:
            continue
        # draw from the other masked frames: shift draws past the frame itself
        pos = np.arange(len(idx))[:, None]
        draw = rng.integers(0, len(idx) - 1, size=(len(idx), num_negatives))
        draw = draw + (draw >= pos)
        neg[b, idx] = idx[draw] + b * frames
    return neg


def pretrain(cfg: dict, wav_scps: list[str], out_dir: str, seed: int, max_minutes: float | None):
    import transformers

    train = {**TRAIN_DEFAULTS, **cfg.get("train_args", {})}
    unknown = sorted(set(cfg.get("train_args", {})) - set(TRAIN_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown train_args {unknown}; valid: {sorted(TRAIN_DEFAULTS)}")
    unknown = sorted(set(cfg) - {"model_args", "train_args"})
    if unknown:
        raise ValueError(f"unknown top-level key(s) {unknown}; valid: ['model_args', 'train_args']")
    model_args = dict(cfg.get("model_args", {}))
    known = set(transformers.Wav2Vec2Config().to_dict())
    unknown = sorted(set(model_args) - known)
    if unknown:
        raise ValueError(f"unknown Wav2Vec2Config field(s) {unknown} in model_args")

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = transformers.Wav2Vec2Config(**model_args)
    model = transformers.Wav2Vec2ForPreTraining(config)
    model.train()
    n_params = sum(p.numel() for p in model.wav2vec2.parameters())
    logger.info("wav2vec2 encoder: %d layers x %d, %.2fM parameters",
                config.num_hidden_layers, config.hidden_size, n_params / 1e6)

    sr = 16000
    wavs = load_corpus(wav_scps, sr, train["min_seconds"])
    n = int(train["crop_seconds"] * sr)
    frames = int(model._get_feat_extract_output_lengths(torch.tensor(n)))
    opt = torch.optim.AdamW(model.parameters(), lr=train["lr"],
                            weight_decay=train["weight_decay"], betas=(0.9, 0.98))
    steps, warm = int(train["steps"]), int(train["warmup_steps"])

    def lr_at(step: int) -> float:
        if step < warm:
            return train["lr"] * (step + 1) / warm
        progress = (step - warm) / max(1, steps - warm)
        return train["lr"] * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    t_start = time.time()
    tau0, tau1 = train["gumbel_temperature"]
    history = []
    for step in range(steps):
        if max_minutes is not None and time.time() - t_start > 60 * max_minutes:
            logger.info("time budget of %.1f min reached at step %d", max_minutes, step)
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        model.set_gumbel_temperature(tau0 + (tau1 - tau0) * step / max(1, steps - 1))
        x = sample_crops(wavs, rng, train["batch_size"], n)
        if default_do_normalize(config):
            x = normalize_waveforms(x, torch.full((x.shape[0],), n))
        mask = span_mask(rng, x.shape[0], frames, train["mask_time_prob"],
                         train["mask_time_length"])
        neg = sample_negatives(rng, mask, config.num_negatives)
        out = model(x, mask_time_indices=torch.from_numpy(mask),
                    sampled_negative_indices=torch.from_numpy(neg))
        n_masked = int(mask.sum())
        loss = out.loss / n_masked
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train["grad_clip"])
        opt.step()
        history.append(float(out.contrastive_loss.detach()) / n_masked)
        if step % train["log_every"] == 0 or step == steps - 1:
            logger.info(
                "step %d/%d loss %.3f contrastive %.3f diversity %.3f perplexity %.1f lr %.2e",
                step, steps, float(loss.detach()), history[-1],
                float(out.diversity_loss.detach()) / n_masked,
                float(out.codevector_perplexity.detach()), lr_at(step),
            )
    if history:
        logger.info("pre-training done: %d steps in %.1f s; contrastive loss %.3f -> %.3f "
                    "(chance: %.3f)", len(history), time.time() - t_start,
                    np.mean(history[:10]), np.mean(history[-10:]),
                    math.log(config.num_negatives + 1))
    else:
        logger.info("no pre-training steps: saving the random initialisation (seed %d)", seed)
    save_encoder(model.wav2vec2, out_dir)
    return history


def save_encoder(encoder, out_dir: str) -> None:
    """save_pretrained into a temporary sibling directory, then rename it into place."""

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        encoder.save_pretrained(tmp)
        save_preprocessing(tmp, 16000, default_do_normalize(encoder.config))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("saved SSL encoder to %s", out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", required=True, help="YAML with model_args and train_args")
    p.add_argument("--wav_scp", required=True, nargs="+", help="Kaldi wav.scp file(s)")
    p.add_argument("--out", required=True, help="output directory (save_pretrained layout)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--steps", type=int, default=None,
                   help="override train_args.steps (0: save the seeded random initialisation)")
    p.add_argument("--max_minutes", type=float, default=None, help="stop after this wall time")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = p.parse_args(argv)
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = read_yaml(args.config)
    if args.steps is not None:
        cfg.setdefault("train_args", {})["steps"] = args.steps
    pretrain(cfg, args.wav_scp, args.out, args.seed, args.max_minutes)


if __name__ == "__main__":
    sys.exit(main())
