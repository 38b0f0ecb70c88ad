"""Embedding extraction over a whole data set, on one process or sharded over ranks.

:func:`extract_embeddings` is what ``python -m wespeaker_lap.bin.extract`` runs:
the eval loader (length-grouped batches, bad audio skipped and counted), the
trained extractor, and, under ``torchrun``, a merge of every rank's share on
rank 0. Outputs in ``embed_dir`` (all written atomically):

* ``xvector.ark`` + ``xvector.scp``, keys sorted
  (:func:`~wespeaker_lap.io.xvectors.write_xvectors`);
* ``mean_vec.npy``: the mean embedding, for mean subtraction in scoring;
* ``utt2spk`` (when the input names speakers: a Kaldi data dir or a raw list): the
  embedded utterances' speakers, so that a cohort embedded from part of a set (or with
  bad audio skipped) comes with its own utt2spk;
* ``layer_scores.npy`` (with ``layer_scores=True``): the backend's layer attention
  averaged over the set, ``(heads, L)`` for LAP, ``(1, L)`` for a weighted sum.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wespeaker_lap.dataset.audio import BAD_AUDIO_REASONS
from wespeaker_lap.dataset.datadir import read_data_dir
from wespeaker_lap.dataset.dataset import build_eval_loader, load_entries
from wespeaker_lap.dataset.lists import check_pipes, raw_entries_from_data_dir
from wespeaker_lap.io.files import write_table
from wespeaker_lap.io.xvectors import save_npy, write_xvectors
from wespeaker_lap.models.inference import LayerScoreSum, embed_batches, load_trained_extractor
from wespeaker_lap.utils.distributed import DistInfo, all_gather_object, barrier
from wespeaker_lap.utils.logging_utils import progress

logger = logging.getLogger(__name__)

#: Without a terminal, extraction logs one progress line every this many utterances.
PROGRESS_EVERY = 1000


def eval_source(data: str | None, data_list: str | None, data_type: str,
                utts_per_spk: int = 0) -> tuple[list[dict] | str, str]:
    """The eval loader's input: entries of a Kaldi data dir (with durations), or a list path.

    ``utts_per_spk`` > 0 keeps the first that many utterances of each speaker of the
    data dir (in its order, as Kaldi's ``subset_data_dir.sh --per-spk``): enough for an
    AS-norm cohort of speaker means and a mean vector at a fraction of the cost.
    """
    if (data is None) == (data_list is None):
        raise ValueError("give exactly one of --data (a Kaldi data dir) or --data_list")
    if data is None:
        if utts_per_spk:
            raise ValueError("--utts_per_spk needs --data (a Kaldi data dir with utt2spk)")
        return data_list, data_type
    entries = raw_entries_from_data_dir(read_data_dir(data))
    if utts_per_spk:
        entries = first_per_speaker(entries, utts_per_spk)
        logger.info("%s: the first %d utterances of each speaker: %d utterances", data,
                    utts_per_spk, len(entries))
    return entries, "raw"


def first_per_speaker(entries: Sequence[dict], n: int) -> list[dict]:
    """The first ``n`` entries of each ``spk``, in the entries' order.

    >>> es = [{"key": k, "spk": k[0]} for k in ("a1", "b1", "a2", "a3", "b2")]
    >>> [e["key"] for e in first_per_speaker(es, 2)]
    ['a1', 'b1', 'a2', 'b2']
    """
    if n < 1:
        raise ValueError(f"utterances per speaker must be >= 1, got {n}")
    seen: dict[str, int] = {}
    out = []
    for e in entries:
        c = seen.get(e["spk"], 0)
        if c < n:
            out.append(e)
            seen[e["spk"]] = c + 1
    return out


@dataclass
class ExtractOptions:
    """How to batch and run the extractor (see ``bin/extract.py --help``)."""

    batch_size: int = 16
    max_batch_seconds: float | None = 240.0
    num_workers: int = 1
    dtype: str = "float32"
    layer_scores: bool = False
    progress: bool = True
    ignore_frontend_mismatch: bool = False
    allow_pipes: bool = False


def extract_embeddings(config: str | os.PathLike, weights: str | os.PathLike | None,
                       source: Sequence[dict] | str | os.PathLike, data_type: str,
                       embed_dir: str | os.PathLike, info: DistInfo,
                       opts: ExtractOptions | None = None) -> int:
    """Embed every utterance of ``source`` into ``embed_dir``; returns the count written.

    Every rank embeds its share; rank 0 merges them (an utterance embedded twice
    is an error), writes the files and returns the total (other ranks return 0).
    Bad audio (missing, unreadable, silent, below 8 kHz, or shorter than the
    SSL model's receptive field, ``frontend.min_samples``) is skipped with a
    warning naming the key and file, and counted by reason in the final log line.
    Piped ``wav.scp`` entries need ``opts.allow_pipes`` (checked before the model
    is loaded).
    """
    opts = opts or ExtractOptions()
    entries = load_entries(source, data_type)
    if data_type == "raw":
        check_pipes(entries, opts.allow_pipes, str(source) if isinstance(source, str | Path)
                    else "data")
    extractor = load_trained_extractor(config, weights, info.device, opts.dtype,
                                       ignore_frontend_mismatch=opts.ignore_frontend_mismatch)
    rate = extractor.frontend.sample_rate
    loader = build_eval_loader(
        entries, data_type, sample_rate=rate, min_duration=extractor.frontend.min_samples / rate,
        batch_size=opts.batch_size, max_batch_seconds=opts.max_batch_seconds,
        num_workers=opts.num_workers, rank=info.rank, world_size=info.world_size,
        allow_pipes=opts.allow_pipes,
    )
    scores = LayerScoreSum() if opts.layer_scores else None
    mine: dict[str, np.ndarray] = {}
    bar = progress(f"extract {Path(embed_dir).name}", unit="utt", every=PROGRESS_EVERY,
                   enabled=info.is_main and opts.progress)
    for keys, emb in embed_batches(extractor, loader, info.device, scores):
        for k, e in zip(keys, emb, strict=True):
            if k in mine:
                raise ValueError(f"utterance {k!r} appears twice in the input")
            mine[k] = e
        if bar is not None:
            bar.update(len(keys))
    if bar is not None:
        bar.close()
    stats = getattr(loader, "last_stats", None) or {}
    skipped = {r: int(stats.get(r, 0)) for r in BAD_AUDIO_REASONS if stats.get(r, 0)}
    parts = all_gather_object((mine, scores, skipped), info)
    written = 0
    if info.is_main:
        speakers = ({e["key"]: e["spk"] for e in entries}
                    if entries and all("key" in e and "spk" in e for e in entries) else None)
        written = _write_merged(parts, Path(embed_dir), opts.layer_scores, speakers)
    barrier(info)
    return written


def _write_merged(parts: list, embed_dir: Path, layer_scores: bool,
                  speakers: dict[str, str] | None = None) -> int:
    merged: dict[str, np.ndarray] = {}
    total = LayerScoreSum()
    skipped: dict[str, int] = {}
    for _, _, part_skipped in parts:
        for reason, n in part_skipped.items():
            skipped[reason] = skipped.get(reason, 0) + n
    for part, part_scores, _ in parts:
        dup = set(part) & set(merged)
        if dup:
            raise ValueError(f"utterances extracted by two ranks: {sorted(dup)[:5]}")
        merged.update(part)
        if part_scores is not None:
            total.merge(part_scores)
    reasons = ", ".join(f"{r} {n}" for r, n in skipped.items())
    if not merged:
        raise ValueError("no embeddings were extracted: every input was skipped"
                         + (f" ({reasons}; see the warnings above)" if skipped else ""))
    _, scp = write_xvectors(embed_dir, merged)
    mean = np.mean(np.stack([merged[k] for k in sorted(merged)]), axis=0)
    save_npy(embed_dir / "mean_vec.npy", mean.astype(np.float32))
    if layer_scores:
        save_npy(embed_dir / "layer_scores.npy", total.mean().astype(np.float32))
    if speakers is not None:
        write_table(embed_dir / "utt2spk", ((k, speakers[k]) for k in sorted(merged)))
    n_skipped = sum(skipped.values())
    logger.log(logging.WARNING if n_skipped else logging.INFO,
               "wrote %d embeddings (dim %d) to %s%s", len(merged), len(mean), scp,
               f"; {n_skipped} input(s) skipped as bad audio ({reasons})" if n_skipped else "")
    return len(merged)


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads`` when given (None keeps torch's default)."""
    if threads:
        torch.set_num_threads(int(threads))
