"""HuBERT-style masked prediction of discrete units with a ``transformers.HubertModel``.

Follows Hsu et al., "HuBERT: Self-Supervised Speech Representation Learning by
Masked Prediction of Hidden Units", IEEE/ACM TASLP 2021:

* the CNN features of a crop, after the projection, are replaced by a learned
  mask embedding on spans of ``mask_length`` frames (``mask_prob * T /
  mask_length`` span starts drawn without replacement, as wav2vec 2.0 and
  transformers' ``mask_time_prob`` do: about half the frames for 0.8 and 10);
* the Transformer output ``h`` (B, T, D) is projected to ``proj_dim``; the logit
  of unit ``k`` is ``cos(W h_t, e_k) / temperature`` with a learned embedding
  ``e_k`` per unit;
* the loss is the cross-entropy of the frame's unit over the *masked* frames,
  plus ``unmasked_weight`` times that over the unmasked frames (0: HuBERT's
  alpha = 1 setting; 1: alpha = 0.5, which leaves the chance loss much sooner
  on a CPU budget); no negatives, no codebook, no diversity loss. The logged
  loss and accuracy are the masked frames' alone;
* optionally (``contrast_weight`` > 0) an utterance-level contrastive term, the
  unlabeled speaker objective of Zhang, Zou and Wang, "Contrastive
  Self-Supervised Learning for Text-Independent Speaker Verification", ICASSP
  2021: each batch holds two crops of each of ``batch_size / 2`` utterances,
  each crop with its own gain and white noise; the time-mean of the last hidden
  state, projected and L2-normalised, must pick out its partner crop among the
  batch (NT-Xent at ``contrast_temperature``). Only the utterance identity is
  used, never a speaker label.

Chance levels are logged beside the loss: ``ln K`` and ``1 / K`` for a
uniform guess, and the unigram entropy and majority-unit accuracy of the
corpus' own unit frequencies (the best a model that ignores the audio can do).
The encoder is saved with ``save_pretrained`` (plus ``preprocessor_config.json``)
so that ``SSLFrontend(<dir>)`` loads it like a hub checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from torch import nn

from wespeaker_lap.checks import ConfigError, check_bool, check_int, check_number
from wespeaker_lap.frontend.loading import default_do_normalize, save_preprocessing
from wespeaker_lap.frontend.precision import autocast_dtype, dtype_name
from wespeaker_lap.lr_schedule import warmup_cosine
from wespeaker_lap.pretrain.features import HOP_SAMPLES, SAMPLE_RATE, Corpus, num_frames
from wespeaker_lap.pretrain.kmeans import unit_frequencies
from wespeaker_lap.pretrain.schema import PretrainArgs

logger = logging.getLogger(__name__)

#: HubertConfig sizes that must be >= 1.
_SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
          "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "num_feat_extract_layers")


def build_config(model_args: dict[str, Any], attention: str = "sdpa"
                 ) -> transformers.HubertConfig:
    """A ``HubertConfig`` from ``model_args``; unknown fields are a ConfigError.

    ``attention`` is transformers' ``attn_implementation`` of the model built from it
    (``sdpa`` or ``eager``; it does not change the saved weights or what loads them).
    """
    defaults = transformers.HubertConfig().to_dict()
    unknown = sorted(set(model_args) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown HubertConfig field(s) {unknown} in model_args")
    for key, value in model_args.items():  # the type of HubertConfig's default: "32" is no size
        default = defaults[key]
        if value is None:
            continue
        if isinstance(default, bool):
            check_bool(f"model_args.{key}", value)
        elif isinstance(default, int):
            check_int(f"model_args.{key}", value, lo=1 if key in _SIZES else 0)
        elif isinstance(default, float):
            check_number(f"model_args.{key}", value, lo=0)
    return transformers.HubertConfig(**model_args, attn_implementation=attention)


class HubertPretrainModel(nn.Module):
    """A ``HubertModel`` with HuBERT's unit-prediction head (projection + unit embeddings).

    forward: wavs (B, N) float, mask (B, T) bool -> logits (B, T, K), and with
    ``contrast_dim`` also the (B, contrast_dim) L2-normalised utterance vectors
    (time-mean of the last hidden state, projected). Only :attr:`hubert` is
    saved for the frontend; the heads are dropped.

    >>> cfg = transformers.HubertConfig(hidden_size=32, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=[16] * 7,
    ...     num_conv_pos_embedding_groups=4, num_conv_pos_embeddings=16)
    >>> m = HubertPretrainModel(cfg, num_units=10, proj_dim=8)
    >>> m(torch.randn(2, 8000), torch.zeros(2, 24, dtype=torch.bool)).shape
    torch.Size([2, 24, 10])
    """

    def __init__(self, config: transformers.HubertConfig, num_units: int, proj_dim: int = 64,
                 temperature: float = 0.1, contrast_dim: int = 0):
        super().__init__()
        self.hubert = transformers.HubertModel(config)
        self.proj = nn.Linear(config.hidden_size, proj_dim)
        self.unit_embed = nn.Parameter(torch.randn(num_units, proj_dim) / math.sqrt(proj_dim))
        self.temperature = temperature
        self.utt_proj = nn.Linear(config.hidden_size, contrast_dim) if contrast_dim else None

    def forward(self, wavs: torch.Tensor, mask: torch.Tensor
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h = self.hubert(wavs, mask_time_indices=mask).last_hidden_state  # (B, T, D)
        z = nn.functional.normalize(self.proj(h), dim=-1)
        e = nn.functional.normalize(self.unit_embed, dim=-1)
        logits = z @ e.t() / self.temperature
        if self.utt_proj is None:
            return logits
        return logits, nn.functional.normalize(self.utt_proj(h.mean(dim=1)), dim=-1)


def nt_xent(u: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent of (2M, P) unit vectors whose rows 2i and 2i+1 are two crops of one utterance.

    Each row must pick its partner among the other 2M - 1 rows: returns the mean
    cross-entropy and the partner's top-1 rate (chance ``1 / (2M - 1)``).
    """
    n = u.shape[0]
    sim = (u @ u.t()) / temperature
    sim = sim.masked_fill(torch.eye(n, dtype=torch.bool, device=u.device), float("-inf"))
    partner = torch.arange(n, device=u.device) ^ 1
    loss = nn.functional.cross_entropy(sim, partner)
    acc = (sim.argmax(dim=1) == partner).float().mean()
    return loss, acc


def span_mask(rng: np.random.Generator, batch: int, frames: int, prob: float,
              length: int) -> np.ndarray:
    """Boolean (B, T): ``int(prob * T / length + u)`` spans of ``length`` frames per row.

    Span starts are drawn without replacement (spans may overlap); at least one
    frame per row is masked and at least one is left visible.
    """
    mask = np.zeros((batch, frames), dtype=bool)
    length = min(length, max(1, frames - 1))
    n_starts = frames - length + 1
    for b in range(batch):
        n = int(prob * frames / length + rng.random())
        n = min(max(n, 1), n_starts)
        for s in rng.choice(n_starts, size=n, replace=False):
            mask[b, s : s + length] = True
        if mask[b].all():
            mask[b, int(rng.integers(frames))] = False
    return mask


def sample_batch(corpus: Corpus, units: list[np.ndarray], rng: np.random.Generator,
                 batch: int, crop_samples: int, pairs: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random frame-aligned crops and their units: (B, N) float32, (B, T) int64.

    A crop starts on a multiple of the CNN hop, so frame ``t`` of the crop is
    frame ``start / hop + t`` of the utterance. The crop length is the smaller of
    ``crop_samples`` and the shortest drawn utterance. With ``pairs``, rows 2i and
    2i+1 are two independent crops of the same utterance (``batch`` even).
    """
    if pairs:
        idx = np.repeat(rng.integers(0, len(corpus.wavs), size=batch // 2), 2)
    else:
        idx = rng.integers(0, len(corpus.wavs), size=batch)
    n = min(crop_samples, min(len(corpus.wavs[i]) for i in idx))
    frames = num_frames(n)
    wavs = np.zeros((batch, n), dtype=np.float32)
    labels = np.zeros((batch, frames), dtype=np.int64)
    for b, i in enumerate(idx):
        total = units[i].shape[0]
        max_start = min(total - frames, (len(corpus.wavs[i]) - n) // HOP_SAMPLES)
        j = int(rng.integers(0, max_start + 1))
        wavs[b] = corpus.audio(i)[j * HOP_SAMPLES : j * HOP_SAMPLES + n]
        labels[b] = units[i][j : j + frames]
    return torch.from_numpy(wavs), torch.from_numpy(labels)


def gain_and_noise(wavs: torch.Tensor, rng: np.random.Generator, snr_db: tuple[float, float],
                   gain_db: float = 6.0) -> torch.Tensor:
    """Each row scaled by a gain drawn in +-``gain_db`` and given white noise at an SNR
    drawn in ``snr_db`` (relative to the row's own power): (B, N) -> (B, N)."""
    b, n = wavs.shape
    power = wavs.pow(2).mean(dim=1, keepdim=True).clamp_min(1e-10)
    snr = torch.from_numpy(rng.uniform(snr_db[0], snr_db[1], size=(b, 1))).float()
    noise = torch.from_numpy(rng.standard_normal((b, n)).astype(np.float32))
    noisy = wavs + noise * torch.sqrt(power / 10.0 ** (snr / 10.0))
    gain = torch.from_numpy(rng.uniform(-gain_db, gain_db, size=(b, 1))).float()
    return noisy * 10.0 ** (gain / 20.0)


@torch.no_grad()
def layer_features(model: nn.Module, corpus: Corpus, layer: int,
                   chunk_seconds: float = 20.0) -> list[np.ndarray]:
    """Hidden state ``layer`` of a transformers SSL model for every utterance: (T_i, D) each.

    Used for HuBERT's second iteration (units from an earlier model's layer).
    Utterances are run one at a time (no padding), in eval mode.
    """
    model.eval()
    n_layers = model.config.num_hidden_layers
    if not 0 <= layer <= n_layers:
        raise ValueError(f"units_layer {layer} out of range: the model has hidden states "
                         f"0..{n_layers}")
    out = []
    for i in range(len(corpus.wavs)):
        x = torch.from_numpy(corpus.audio(i))[None]
        hs = model(x, output_hidden_states=True).hidden_states[layer][0]
        out.append(hs.numpy().astype(np.float32))
    return out


@dataclass
class History:
    """Per-step training record plus the chance levels it is judged against."""

    num_units: int
    unigram_entropy: float = float("nan")
    majority_acc: float = float("nan")
    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    contrast_batch: int = 0  # crops per batch of the utterance contrast (0: off)
    contrast_loss: list[float] = field(default_factory=list)
    contrast_acc: list[float] = field(default_factory=list)

    @property
    def chance_loss(self) -> float:
        return math.log(self.num_units)

    @property
    def contrast_chance(self) -> tuple[float, float]:
        """Chance loss ln(B - 1) and partner accuracy 1 / (B - 1) of the contrast term."""
        return math.log(self.contrast_batch - 1), 1.0 / (self.contrast_batch - 1)

    @property
    def chance_acc(self) -> float:
        return 1.0 / self.num_units

    def mean(self, what: str, first: bool, n: int = 20) -> float:
        v = getattr(self, what)
        v = v[:n] if first else v[-n:]
        return float(np.mean(v)) if v else float("nan")

    def to_tsv(self) -> str:
        head = (f"# chance: loss ln K = {self.chance_loss:.4f}, acc 1/K = {self.chance_acc:.4f}; "
                f"unigram entropy {self.unigram_entropy:.4f}, majority acc "
                f"{self.majority_acc:.4f}")
        cols = "step\tloss\tmasked_acc\tlr"
        rows = [f"{s}\t{a:.5f}\t{b:.5f}\t{c:.3e}"
                for s, a, b, c in zip(self.step, self.loss, self.acc, self.lr, strict=True)]
        if self.contrast_loss:
            loss0, acc0 = self.contrast_chance
            head += f"; contrast chance: loss {loss0:.4f}, partner acc {acc0:.4f}"
            cols += "\tcontrast_loss\tpartner_acc"
            rows = [f"{r}\t{a:.5f}\t{b:.5f}" for r, a, b in
                    zip(rows, self.contrast_loss, self.contrast_acc, strict=True)]
        return f"{head}\n{cols}\n" + "".join(r + "\n" for r in rows)


def warmup_length(args: PretrainArgs) -> int:
    """Warm-up steps: ``warmup_steps``, but at most 20 % of a short run (and at least 1)."""
    return min(args.warmup_steps, max(1, args.steps // 5))


def scheduled_lr(step: int, args: PretrainArgs, warmup: int, started: float,
                 max_minutes: float | None) -> float:
    """The learning rate of ``step``: linear warm-up (the first step already at
    ``lr / warmup``), then cosine decay to 0 at ``args.steps``.

    With a time budget the decay follows whichever runs out first, the steps or
    the minutes (so a slow machine still decays the rate before it stops).
    """
    schedule_step = step
    if max_minutes is not None and step >= warmup:
        time_fraction = (time.time() - started) / (60.0 * max_minutes)
        schedule_step = max(step, warmup + int(time_fraction * (args.steps - warmup)))
    return warmup_cosine(schedule_step, args.lr, warmup, args.steps, ramp_offset=1)


def chance_levels(units: list[np.ndarray], num_units: int, contrast_batch: int) -> History:
    """An empty :class:`History` with the corpus' chance levels: the unigram entropy and
    the majority unit's frequency of ``units``."""
    freq = unit_frequencies(units, num_units)
    seen = freq[freq > 0]
    return History(num_units, float(-np.sum(seen * np.log(seen))), float(freq.max()),
                   contrast_batch=contrast_batch)


def build_optimizer(model: nn.Module, args: PretrainArgs) -> torch.optim.AdamW:
    """AdamW (betas 0.9 / 0.98); biases, norms and the unit embeddings get no weight decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name or name == "unit_embed" else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.98), eps=1e-6,
    )


@dataclass
class StepResult:
    """What one optimiser step reports: the masked frames' loss and unit accuracy, the
    fraction of frames masked, and the contrast loss and partner accuracy (None when off)."""

    masked_loss: float
    masked_acc: float
    masked_fraction: float
    contrast_loss: float | None = None
    contrast_acc: float | None = None


def draw_batch(corpus: Corpus, units: list[np.ndarray], rng: np.random.Generator,
               args: PretrainArgs, crop_samples: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crops (B, N), their units (B, T) and the span mask (B, T) bool of one step.

    With the contrast term on, rows come in pairs of crops of one utterance, each
    with its own gain and white noise.
    """
    wavs, labels = sample_batch(corpus, units, rng, args.batch_size, crop_samples,
                                pairs=args.contrast_on)
    if args.contrast_on:
        wavs = gain_and_noise(wavs, rng, args.contrast_snr_db)
    mask = torch.from_numpy(span_mask(rng, labels.shape[0], labels.shape[1], args.mask_prob,
                                      args.mask_length))
    return wavs, labels, mask


def optimizer_step(model: HubertPretrainModel, optimizer: torch.optim.Optimizer,
                   wavs: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                   args: PretrainArgs, dtype: torch.dtype = torch.float32) -> StepResult:
    """One update on a batch: masked (+ weighted unmasked) unit prediction (+ contrast).

    ``dtype`` bfloat16 runs the forward under CPU autocast (matrix products and
    convolutions in bfloat16; the losses, weights and optimiser in float32).
    """
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out = model(wavs, mask)
    logits, utterance_vectors = out if isinstance(out, tuple) else (out, None)
    if logits.shape[1] != labels.shape[1]:
        raise RuntimeError(f"model gives {logits.shape[1]} frames, units {labels.shape[1]}: "
                           "the CNN must have a 25 ms window and a 20 ms hop")
    logits = logits.float()
    if utterance_vectors is not None:
        utterance_vectors = utterance_vectors.float()
    masked_loss = nn.functional.cross_entropy(logits[mask], labels[mask])
    loss = masked_loss
    if args.unmasked_weight > 0:
        loss = loss + args.unmasked_weight * nn.functional.cross_entropy(logits[~mask],
                                                                         labels[~mask])
    result = StepResult(0.0, 0.0, 0.0)
    if args.contrast_on:
        contrast_loss, partner_acc = nt_xent(utterance_vectors, args.contrast_temperature)
        loss = loss + args.contrast_weight * contrast_loss
        result.contrast_loss = float(contrast_loss.detach())
        result.contrast_acc = float(partner_acc)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
    optimizer.step()
    with torch.no_grad():
        result.masked_acc = float((logits[mask].argmax(-1) == labels[mask]).float().mean())
    result.masked_loss = float(masked_loss.detach())
    result.masked_fraction = float(mask.float().mean())
    return result


def record(hist: History, step: int, lr: float, result: StepResult) -> None:
    """Append one step's numbers to ``hist``."""
    hist.step.append(step)
    hist.loss.append(result.masked_loss)
    hist.acc.append(result.masked_acc)
    hist.lr.append(lr)
    if result.contrast_loss is not None:
        hist.contrast_loss.append(result.contrast_loss)
        hist.contrast_acc.append(result.contrast_acc)


def log_start(hist: History, args: PretrainArgs, crop_samples: int) -> None:
    logger.info("masked unit prediction: %d steps, batch %d x %.1f s, K %d; chance: loss "
                "ln K %.3f, acc 1/K %.4f; unigram entropy %.3f, majority acc %.4f",
                args.steps, args.batch_size, crop_samples / SAMPLE_RATE, args.num_units,
                hist.chance_loss, hist.chance_acc, hist.unigram_entropy, hist.majority_acc)
    if args.contrast_on:
        logger.info("utterance contrast: weight %.2f, two crops of %d utterances a batch; "
                    "chance: loss ln(B-1) %.3f, partner acc 1/(B-1) %.4f", args.contrast_weight,
                    args.batch_size // 2, *hist.contrast_chance)


def log_progress(hist: History, step: int, args: PretrainArgs, result: StepResult,
                 lr: float, started: float) -> None:
    """The running means of the last ``log_every`` steps against their chance levels."""
    window = args.log_every
    logger.info("step %d/%d loss %.3f (chance %.3f) masked acc %.4f (chance %.4f) "
                "masked %.0f%% lr %.2e %.1f s", step, args.steps,
                float(np.mean(hist.loss[-window:])), hist.chance_loss,
                float(np.mean(hist.acc[-window:])), hist.chance_acc,
                100.0 * result.masked_fraction, lr, time.time() - started)
    if args.contrast_on:
        chance_loss, chance_acc = hist.contrast_chance
        logger.info("step %d/%d utterance contrast loss %.3f (chance %.3f) partner "
                    "acc %.3f (chance %.3f)", step, args.steps,
                    hist.mean("contrast_loss", False, window), chance_loss,
                    hist.mean("contrast_acc", False, window), chance_acc)


def train(model: HubertPretrainModel, corpus: Corpus, units: list[np.ndarray],
          args: PretrainArgs, seed: int, max_minutes: float | None = None,
          on_log: Callable[[History], None] | None = None) -> History:
    """Masked unit prediction for ``args.steps`` steps (or ``max_minutes``).

    With ``max_minutes`` the cosine decay advances by the larger of the step
    fraction and the elapsed-time fraction, so the rate reaches ~0 by the budget
    whatever the machine's speed (the run is then not bit-reproducible).

    units: per utterance (T_i,) int64, aligned with :func:`features.num_frames`.
    Returns the :class:`History` (loss and masked-unit accuracy per step).
    """
    if len(units) != len(corpus.wavs):
        raise ValueError(f"{len(units)} unit sequences for {len(corpus.wavs)} utterances")
    if args.contrast_on and getattr(model, "utt_proj", None) is None:
        raise ValueError("contrast_weight > 0 needs a model built with contrast_dim > 0")
    hist = chance_levels(units, args.num_units, args.batch_size if args.contrast_on else 0)
    rng = np.random.default_rng([seed, 1])
    warmup = warmup_length(args)
    crop_samples = int(round(args.crop_seconds * SAMPLE_RATE))
    optimizer = build_optimizer(model, args)
    dtype, why = autocast_dtype(args.dtype, "cpu")
    logger.info("pre-training forward in %s (train_args.dtype %s: %s)", dtype_name(dtype),
                args.dtype, why)
    model.train()
    started = time.time()
    log_start(hist, args, crop_samples)
    for step in range(args.steps):
        if max_minutes is not None and time.time() - started > 60.0 * max_minutes:
            logger.info("time budget of %.1f min reached at step %d of %d", max_minutes,
                        step, args.steps)
            break
        lr = scheduled_lr(step, args, warmup, started, max_minutes)
        for group in optimizer.param_groups:
            group["lr"] = lr
        wavs, labels, mask = draw_batch(corpus, units, rng, args, crop_samples)
        result = optimizer_step(model, optimizer, wavs, labels, mask, args, dtype)
        record(hist, step, lr, result)
        if step % args.log_every == 0 or step == args.steps - 1:
            log_progress(hist, step, args, result, lr, started)
            if on_log is not None:
                on_log(hist)
    if hist.step:
        logger.info("pre-training done: %d steps in %.1f s; loss %.3f -> %.3f (chance ln K "
                    "%.3f); masked acc %.4f -> %.4f (chance 1/K %.4f, majority %.4f)",
                    len(hist.step), time.time() - started, hist.mean("loss", True),
                    hist.mean("loss", False), hist.chance_loss, hist.mean("acc", True),
                    hist.mean("acc", False), hist.chance_acc, hist.majority_acc)
    return hist


def clean_stale_tmp(out_dir: str | os.PathLike) -> int:
    """Remove temporary siblings ``.<name>.*`` left by an interrupted :func:`save_atomic`."""
    out = Path(out_dir)
    n = 0
    if out.parent.is_dir():
        for p in out.parent.glob(f".{out.name}.*"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                n += 1
    if n:
        logger.info("removed %d half-written directory(ies) of an interrupted run beside %s",
                    n, out)
    return n


def save_atomic(encoder: transformers.PreTrainedModel, out_dir: str | os.PathLike,
                extra: Callable[[Path], None] | None = None) -> None:
    """``save_pretrained`` + preprocessor file (+ ``extra(tmp_dir)``) into a temporary
    sibling directory, then rename it to ``out_dir`` (replacing an old one)."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        encoder.save_pretrained(tmp)
        save_preprocessing(tmp, SAMPLE_RATE, default_do_normalize(encoder.config))
        if extra is not None:
            extra(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("saved the pre-trained encoder to %s", out)
