"""Validation during training: a held-out speaker set embedded and scored every N epochs.

``bin/train --valid_data DIR --valid_trials FILE`` (a Kaldi data dir of speakers
disjoint from the training speakers, and its trial list) and the config's
``valid_args`` section (:data:`VALID_ARGS_KEYS`):

* :func:`load_valid_set`, before training starts and before ``exp_dir`` is
  written, reads and checks the set: every trial names an utterance of the data
  dir (else an error naming file and line), no validation speaker is a training
  speaker (else an error naming them), the set is not empty, and it has target
  and non-target trials. ``max_utts`` keeps the first utterances the trial list
  names, in trial order, and the trials whose two sides are both kept.
* :func:`run_validation` embeds the set with the current model in eval mode
  without gradients, each rank a shard of the utterances (``entries[rank::world]``;
  a rank may get none), and rank 0 gathers the embeddings and scores the trials
  by cosine similarity after subtracting the mean of the validation embeddings
  (the same rule as the recipes' scoring with ``mean_vec.npy``, with the
  validation set as its own cohort). Every rank reaches the one gather, also when
  its embedding failed (the error is raised on every rank after it), so a failure
  cannot leave the others waiting. The training RNG state is saved before and
  restored after (the data loader draws a seed from torch's generator), so an
  exactly resumed run stays exact. The model's train/eval mode is restored.
  Rank 0 also gets the backend's layer use on the set: the mean layer score per
  head and layer (LAP's attention; SUPERB's and MHFA's layer weights).
* :func:`valid_digest` fingerprints the set (sha256 of ``wav.scp``, ``utt2spk``,
  the trial list, and ``max_utts``); the trainer keeps it in the resume state
  and warns, naming what changed, when a resumed run validates on another set.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wespeaker_lap.checks import ConfigError, check_int, check_number
from wespeaker_lap.dataset.datadir import read_data_dir
from wespeaker_lap.dataset.dataset import build_eval_loader
from wespeaker_lap.dataset.lists import raw_entries_from_data_dir
from wespeaker_lap.io.files import read_scp
from wespeaker_lap.models.inference import LayerScoreSum, embed_batches
from wespeaker_lap.scoring.metrics import compute_metrics
from wespeaker_lap.scoring.score import Trials, cosine_score, read_trials
from wespeaker_lap.utils.distributed import DistInfo, all_gather_object
from wespeaker_lap.utils.training_state import get_rng_state, set_rng_state

logger = logging.getLogger(__name__)

#: The keys of the config's ``valid_args`` section and their defaults.
VALID_ARGS_DEFAULTS: dict[str, Any] = {
    "every_n_epochs": 1,  # validate after every this many epochs (and after the last)
    "batch_size": 16,  # utterances per eval batch
    "max_batch_seconds": 240.0,  # padded audio per eval batch (null: no limit)
    "max_utts": None,  # embed at most this many utterances (null: all the trials name)
}
VALID_ARGS_KEYS = tuple(VALID_ARGS_DEFAULTS)

#: The minDCF operating points reported.
P_TARGETS = (0.01, 0.05)


@dataclass(frozen=True)
class ValidOptions:
    """The checked ``valid_args``."""

    every_n_epochs: int = 1
    batch_size: int = 16
    max_batch_seconds: float | None = 240.0
    max_utts: int | None = None

    def due(self, epoch: int, num_epochs: int) -> bool:
        """Validate after ``epoch``: every ``every_n_epochs`` and after the last epoch."""
        return epoch % self.every_n_epochs == 0 or epoch == num_epochs


def parse_valid_args(args: Mapping[str, Any] | None) -> ValidOptions:
    """Check ``valid_args`` (unknown keys are the config schema's job).

    >>> parse_valid_args({"every_n_epochs": 2}).every_n_epochs
    2
    """
    a = {**VALID_ARGS_DEFAULTS, **(args or {})}
    every = a["every_n_epochs"]
    if every == 0 and not isinstance(every, bool):
        raise ConfigError("valid_args.every_n_epochs: 0 would never validate; give a "
                          "positive number of epochs, or leave out --valid_data to train "
                          "without validation")
    check_int("valid_args.every_n_epochs", every, lo=1)
    check_int("valid_args.batch_size", a["batch_size"], lo=1)
    if a["max_batch_seconds"] is not None:
        check_number("valid_args.max_batch_seconds", a["max_batch_seconds"], lo=0, lo_open=True)
    if a["max_utts"] is not None:
        check_int("valid_args.max_utts", a["max_utts"], lo=2)
    return ValidOptions(int(every), int(a["batch_size"]),
                        None if a["max_batch_seconds"] is None else float(a["max_batch_seconds"]),
                        None if a["max_utts"] is None else int(a["max_utts"]))


@dataclass
class ValidSet:
    """A checked validation set: the utterances to embed and the trials to score."""

    data_dir: Path
    trials_path: Path
    entries: list[dict]  # eval-loader entries (key, spk, wav[, dur]) of the utterances used
    trials: Trials
    digest: dict[str, str]

    @property
    def num_utts(self) -> int:
        return len(self.entries)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def valid_digest(data_dir: str | Path, trials: str | Path, max_utts: int | None
                 ) -> dict[str, str]:
    """What identifies a validation set: sha256 of its files, and ``max_utts``."""
    data_dir = Path(data_dir)
    return {"wav.scp": _sha256(data_dir / "wav.scp"), "utt2spk": _sha256(data_dir / "utt2spk"),
            "trials": _sha256(Path(trials)), "max_utts": str(max_utts)}


def compare_digests(recorded: Mapping[str, str] | None, current: Mapping[str, str]
                    ) -> list[str]:
    """The names of the parts that differ (``[]``: the same set; ``["validation set"]`` when
    the earlier run had none)."""
    if not recorded:
        return ["validation set (the resumed run had none)"]
    return [k for k in current if recorded.get(k) != current[k]]


def _trial_line(path: Path, index: int) -> int:
    """The 1-based line number of the ``index``-th non-blank line of ``path``."""
    seen = -1
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                seen += 1
                if seen == index:
                    return lineno
    return 0  # pragma: no cover - index beyond the file


def _cap(trials: Trials, max_utts: int | None) -> tuple[Trials, list[str]]:
    """The utterances to embed (first seen in trial order, at most ``max_utts``) and the
    trials whose two sides are among them."""
    order: dict[str, None] = {}
    for e, t in zip(trials.enroll, trials.test, strict=True):
        for k in (e, t):
            if k not in order:
                if max_utts is not None and len(order) >= max_utts:
                    continue
                order[k] = None
    if max_utts is None:
        return trials, list(order)
    keep = np.array([e in order and t in order
                     for e, t in zip(trials.enroll, trials.test, strict=True)], dtype=bool)
    return trials.subset(keep), list(order)


def load_valid_set(valid_data: str | Path, valid_trials: str | Path,
                   train_label: str | Path, opts: ValidOptions) -> ValidSet:
    """Read and check a validation set (see the module docstring); raises before training.

    Raises:
        FileNotFoundError / NotADirectoryError: a path that is not there.
        ValueError: a trial naming an utterance the data dir lacks (file and line),
            an empty set, trials without labels or without targets or non-targets.
        ConfigError: validation speakers that are training speakers (named).
    """
    data_dir, trials_path = Path(valid_data), Path(valid_trials)
    if not trials_path.is_file():
        raise FileNotFoundError(f"valid_trials: no such file: {trials_path}")
    data = read_data_dir(data_dir)
    if not data.wav:
        raise ValueError(f"valid_data {data_dir}: the validation set is empty (no utterance "
                         f"in {data_dir / 'wav.scp'})")
    train_spk = set(read_scp(train_label).values())
    overlap = sorted(train_spk & set(data.utt2spk.values()))
    if overlap:
        raise ConfigError(
            f"valid_data {data_dir}: {len(overlap)} validation speaker(s) are also training "
            f"speakers (in {train_label}): {', '.join(overlap[:20])}"
            f"{' ...' if len(overlap) > 20 else ''}; validation needs speakers held out of "
            "training"
        )
    trials = read_trials(trials_path)
    if trials.labels is None:
        raise ValueError(f"valid_trials {trials_path}: trials need target/nontarget labels "
                         "to give an EER")
    for i, (e, t) in enumerate(zip(trials.enroll, trials.test, strict=True)):
        for k in (e, t):
            if k not in data.wav:
                raise ValueError(
                    f"{trials_path}:{_trial_line(trials_path, i)}: utterance {k!r} is not in "
                    f"{data_dir / 'wav.scp'}"
                )
    trials, used = _cap(trials, opts.max_utts)
    n_tar = int(trials.labels.sum()) if len(trials) else 0
    if n_tar == 0 or n_tar == len(trials):
        among = (f" among the first {opts.max_utts} utterances (valid_args.max_utts)"
                 if opts.max_utts else "")
        raise ValueError(f"valid_trials {trials_path}: {len(trials)} trial(s){among} with "
                         f"{n_tar} target(s): an EER needs target and non-target trials")
    by_key = {e["key"]: e for e in raw_entries_from_data_dir(data)}
    entries = [by_key[k] for k in sorted(used)]
    return ValidSet(data_dir, trials_path, entries, trials,
                    valid_digest(data_dir, trials_path, opts.max_utts))


@dataclass
class ValidResult:
    """Rank 0's result of one validation: metrics, layer use, seconds."""

    metrics: dict[str, float]  # eer (%), min_dcf_0.01, min_dcf_0.05, n_target, n_nontarget
    layer_use: np.ndarray | None  # (heads, L) mean layer score on the set, or None
    seconds: float  # wall clock, rank 0
    num_utts: int
    cpu_seconds: float = 0.0  # rank 0's process CPU time

    def record(self) -> dict[str, Any]:
        """The JSON-ready fields of a log record."""
        out: dict[str, Any] = {k: (int(v) if k.startswith("n_") else float(v))
                               for k, v in self.metrics.items() if not k.endswith("_threshold")}
        out.update(seconds=round(self.seconds, 3), cpu_seconds=round(self.cpu_seconds, 3),
                   num_utts=self.num_utts)
        return out


def run_validation(extractor: torch.nn.Module, vset: ValidSet, opts: ValidOptions,
                   info: DistInfo) -> ValidResult | None:
    """Embed and score ``vset`` with ``extractor`` (all ranks call it); rank 0 gets the result.

    ``extractor``: the :class:`~wespeaker_lap.models.extractor.SpeakerEmbeddingExtractor`
    being trained (unwrapped from DDP).
    """
    t0, c0 = time.perf_counter(), time.process_time()
    was_training = extractor.training
    rng = get_rng_state()
    mine: dict[str, np.ndarray] = {}
    scores = LayerScoreSum()
    error = None
    shard = vset.entries[info.rank::info.world_size]
    try:
        extractor.eval()
        if shard:
            rate = extractor.frontend.sample_rate
            loader = build_eval_loader(
                shard, "raw", sample_rate=rate,
                min_duration=extractor.frontend.min_samples / rate,
                batch_size=opts.batch_size, max_batch_seconds=opts.max_batch_seconds,
                rank=0, world_size=1)
            for keys, emb in embed_batches(extractor, loader, info.device, scores):
                mine.update(zip(keys, emb, strict=True))
    except Exception as e:  # raised on every rank after the gather below, never alone
        logger.exception("validation failed on rank %d", info.rank)
        error = f"rank {info.rank}: {type(e).__name__}: {e}"
    finally:
        extractor.train(was_training)
        set_rng_state(rng)
    parts = all_gather_object((mine, scores, error), info)
    errors = [p[2] for p in parts if p[2] is not None]
    if errors:
        raise RuntimeError(f"validation on {vset.data_dir} failed: " + "; ".join(errors))
    result, failure = None, None
    if info.is_main:
        try:
            result = _score(parts, vset, t0, c0)
        except (ValueError, RuntimeError) as e:  # told to every rank, which all raise
            failure = f"{type(e).__name__}: {e}"
    failure = all_gather_object(failure, info)[0]
    if failure is not None:
        raise RuntimeError(f"validation on {vset.data_dir} failed: {failure}")
    return result


def _score(parts: list, vset: ValidSet, t0: float, c0: float) -> ValidResult:
    """Rank 0: the ranks' embeddings merged, mean-subtracted cosine scores, metrics."""
    merged: dict[str, np.ndarray] = {}
    total = LayerScoreSum()
    for part, part_scores, _ in parts:
        merged.update(part)
        total.merge(part_scores)
    if not merged:
        raise RuntimeError("no utterance could be embedded (all skipped as bad audio; see the "
                           "warnings above)")
    mean = np.mean(np.stack(list(merged.values())), axis=0)
    trials, s = cosine_score(merged, vset.trials, mean_vec=mean, allow_missing=True)
    metrics = compute_metrics(s, trials.labels, P_TARGETS)
    layer_use = total.mean() if total.total is not None else None
    return ValidResult(metrics, layer_use, time.perf_counter() - t0, len(merged),
                       time.process_time() - c0)
