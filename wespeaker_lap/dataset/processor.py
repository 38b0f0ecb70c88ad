"""Pipeline steps: each takes an iterable of sample dicts and yields sample dicts.

A sample starts as a list entry (raw: ``{"key", "spk", "wav": path}``; shard:
``{"shard": tar path}``) and ends in a batch. Each docstring names the keys
the step reads and writes. Randomness comes from an explicit
``numpy.random.Generator``; bad utterances are skipped with a warning naming
the file and counted in a :class:`~wespeaker_lap.dataset.stats.PipelineStats`.

Bad-audio warnings name the utterance's key and its file (or command).

Training chain (see :mod:`wespeaker_lap.dataset.dataset`)::

    open_files | open_shards -> decode -> drop_bad_audio -> random_window
    -> shuffle_buffer -> resample -> map_label -> speed_perturb -> crop
    -> augment -> batch_crops

Evaluation chain::

    open_files | open_shards -> decode -> drop_bad_audio -> resample
    -> drop_too_short -> map_label -> sort_by_length -> batch_by_length
"""

from __future__ import annotations

import logging
import os
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from wespeaker_lap.checks import ConfigError
from wespeaker_lap.dataset.audio import (
    AUDIO_EXTENSIONS,
    BadAudio,
    change_speed,
    check_waveform,
    crop_or_pad,
    decode_bytes,
    is_piped,
    load_segment,
    read_bytes,
    truncation,
)
from wespeaker_lap.dataset.audio import resample as resample_wav
from wespeaker_lap.dataset.augment import Augmenter
from wespeaker_lap.dataset.lists import split_member_name
from wespeaker_lap.dataset.stats import PipelineStats

logger = logging.getLogger(__name__)

Samples = Iterable[dict]


def _skip(stats: PipelineStats | None, reason: str, sample: dict | str, detail: str = "") -> None:
    """Log a skipped utterance (its key and file) and count it under ``reason``."""
    if isinstance(sample, dict):
        key, src = sample.get("key"), sample.get("src", "")
        what = f"{key!r} ({src})" if key is not None and src else repr(key) if key else src
    else:
        what = sample
    logger.warning("skipping %s: %s%s", what, reason, f": {detail}" if detail else "")
    if stats is not None:
        stats.add(reason)


def open_files(data: Samples, stats: PipelineStats | None = None,
               allow_pipes: bool = False) -> Iterator[dict]:
    """Read each raw-list entry's audio into memory: a file, or a Kaldi pipe's output.

    Reads ``wav`` (a path, or ``"cmd ... |"``: run with a shell when
    ``allow_pipes``, as Kaldi does). Writes ``src`` (the path or command, for
    messages), ``bytes``, ``ext``, ``piped``; drops ``wav``. An entry with
    ``start`` (and ``end``; seconds, a Kaldi segment) is read by seeking, only
    its samples, and comes out decoded (``wav``, ``sample_rate``). A missing file
    ("no such file: PATH"), an unreadable one or a failed command is skipped
    and counted.
    """
    for sample in data:
        spec = sample.pop("wav")
        sample["src"] = spec
        if "start" in sample:  # a Kaldi segment: only its samples are read (seeking)
            start, end = float(sample.pop("start")), sample.pop("end", None)
            end = None if end is None or float(end) == -1 else float(end)
            try:
                sample["wav"], sample["sample_rate"] = load_segment(spec, start, end,
                                                                    allow_pipes)
            except BadAudio as e:
                _skip(stats, e.reason, sample, e.detail)
                continue
            sample["piped"] = is_piped(spec)
            yield sample
            continue
        try:
            blob = read_bytes(spec, allow_pipes)
        except BadAudio as e:
            _skip(stats, e.reason, sample, e.detail)
            continue
        sample["bytes"] = blob
        sample["piped"] = is_piped(spec)
        sample["ext"] = "wav" if sample["piped"] else os.path.splitext(spec)[1].lstrip(".").lower()
        yield sample


def open_shards(data: Samples, stats: PipelineStats | None = None) -> Iterator[dict]:
    """Stream the utterances of each tar shard, in memory (nothing is extracted to disk).

    Reads ``shard`` (a tar path). Writes ``key`` (decoded member name), ``spk``
    (from ``<key>.spk``; None when absent), ``bytes`` and ``ext`` (from
    ``<key>.<audio ext>``), ``src`` (``tar:member``). A shard that cannot be
    opened or breaks part-way is counted as ``bad_shard``; the utterances read
    before the break are kept.
    """
    for sample in data:
        shard = sample["shard"]
        group: dict | None = None
        unsafe = 0
        try:
            with tarfile.open(shard, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    if _unsafe_member(member.name):  # ../../x or /abs: never a key
                        unsafe += 1
                        continue
                    try:
                        key, ext = split_member_name(member.name)
                    except ValueError:
                        logger.warning("%s: ignoring tar member %r", shard, member.name)
                        continue
                    if group is not None and group["key"] != key:
                        out = _finish_group(group, stats)
                        if out is not None:
                            yield out
                        group = None
                    if group is None:
                        group = {"key": key, "spk": None, "src": f"{shard}:{member.name}"}
                    payload = tar.extractfile(member).read()
                    if ext == "spk":
                        group["spk"] = payload.decode("utf-8").strip()
                    elif ext in AUDIO_EXTENSIONS:
                        group["bytes"], group["ext"] = payload, ext
                        group["src"] = f"{shard}:{member.name}"
        except (OSError, tarfile.TarError, EOFError) as e:
            logger.warning("shard %s failed: %s: %s", shard, type(e).__name__, e)
            if stats is not None:
                stats.add("bad_shard")
            group = None  # the last group may be cut short: drop it
        if unsafe:
            logger.warning("%s: skipped %d tar member(s) with an absolute path or '..' in "
                           "the name", shard, unsafe)
            if stats is not None:
                stats.add("unsafe_member", unsafe)
        if group is not None:
            out = _finish_group(group, stats)
            if out is not None:
                yield out


def _unsafe_member(name: str) -> bool:
    """An absolute member name, or one with a ``..`` component (a path out of the shard)."""
    return name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/")


def _finish_group(group: dict, stats: PipelineStats | None) -> dict | None:
    if "bytes" not in group:
        _skip(stats, "unreadable", group, "no audio member for this key")
        return None
    return group


def decode(data: Samples, stats: PipelineStats | None = None) -> Iterator[dict]:
    """Decode in-memory audio with soundfile (wav, flac, ogg, ...); channels averaged to mono.

    Reads ``bytes``, ``src``, ``piped``. Writes ``wav`` (float32 (N,)),
    ``sample_rate``; drops ``bytes``. A WAVE file whose header claims more
    samples than it holds is used as it is, with a warning naming it and both
    lengths, and counted as ``truncated`` (Kaldi's habit; piped output is not
    checked, as streaming writers cannot fill in the length).
    """
    for sample in data:
        if "bytes" not in sample:  # a segment, decoded by open_files
            yield sample
            continue
        blob = sample.pop("bytes")
        try:
            sample["wav"], sample["sample_rate"] = decode_bytes(blob, sample["src"])
        except BadAudio as e:
            _skip(stats, e.reason, sample, e.detail)
            continue
        if not sample.get("piped"):
            note = truncation(blob, sample["wav"].shape[0])
            if note:
                logger.warning("%r (%s): %s; using the samples there", sample.get("key"),
                               sample["src"], note)
                if stats is not None:
                    stats.add("truncated")
        yield sample


def drop_bad_audio(
    data: Samples,
    stats: PipelineStats | None = None,
    min_duration: float = 0.0,
    max_duration: float | None = None,
) -> Iterator[dict]:
    """Skip empty, all-zero, NaN/inf, too-short (and, if set, too-long) utterances.

    Reads ``wav``, ``sample_rate``, ``src``. Durations in seconds.
    """
    for sample in data:
        wav, rate = sample["wav"], sample["sample_rate"]
        try:
            check_waveform(wav, rate, min_duration)
        except BadAudio as e:
            _skip(stats, e.reason, sample, e.detail)
            continue
        if max_duration is not None and wav.shape[0] > max_duration * rate:
            if stats is not None:
                stats.add("too_long")
            logger.debug("dropping %s: longer than %g s", sample["src"], max_duration)
            continue
        yield sample


def drop_too_short(data: Samples, min_samples: int,
                   stats: PipelineStats | None = None) -> Iterator[dict]:
    """Skip (and count as ``too_short``) utterances of fewer than ``min_samples`` samples.

    Reads ``wav``, ``sample_rate``. Used after resampling, at the model rate, so
    the SSL model's receptive field is checked exactly (resampling may round).
    """
    for sample in data:
        n = sample["wav"].shape[0]
        if n < min_samples:
            _skip(stats, "too_short", sample,
                  f"{n} samples at {sample['sample_rate']} Hz < {min_samples}")
            continue
        yield sample


def random_window(data: Samples, max_seconds: float, rng: np.random.Generator) -> Iterator[dict]:
    """Cut each utterance to a random window of at most ``max_seconds`` (keeps memory small).

    Reads/writes ``wav``; reads ``sample_rate``. Used before the shuffle buffer in
    training, with room for the later speed perturbation and crop.
    """
    for sample in data:
        n = int(np.ceil(max_seconds * sample["sample_rate"]))
        if sample["wav"].shape[0] > n:
            sample["wav"] = crop_or_pad(sample["wav"], n, rng).copy()
        yield sample


def shuffle_buffer(data: Samples, size: int, rng: np.random.Generator) -> Iterator[dict]:
    """Yield samples in random order from a buffer of ``size`` (reads/writes no keys)."""
    buf: list[dict] = []
    for sample in data:
        if len(buf) < size:
            buf.append(sample)
            continue
        i = int(rng.integers(size))
        buf[i], sample = sample, buf[i]
        yield sample
    order = rng.permutation(len(buf))
    for i in order:
        yield buf[int(i)]


def resample(data: Samples, sample_rate: int) -> Iterator[dict]:
    """Resample to the model rate with soxr. Reads/writes ``wav``, ``sample_rate``."""
    for sample in data:
        if sample["sample_rate"] != sample_rate:
            sample["wav"] = resample_wav(sample["wav"], sample["sample_rate"], sample_rate)
            sample["sample_rate"] = sample_rate
        yield sample


def map_label(
    data: Samples,
    spk2id: Mapping[str, int] | None,
    strict: bool = True,
    stats: PipelineStats | None = None,
) -> Iterator[dict]:
    """Speaker name -> class index. Reads ``spk``; writes ``label`` (int).

    ``strict`` (training): an utterance without a speaker (a shard member
    ``<key>.spk`` missing) is skipped and counted as ``unreadable``; a speaker
    missing from ``spk2id`` is a configuration error and raises. Otherwise
    (evaluation) both get -1.
    """
    for sample in data:
        spk = sample.get("spk")
        if strict and spk is None:
            _skip(stats, "unreadable", sample, "no speaker label")
            continue
        label = spk2id.get(spk, -1) if spk2id is not None and spk is not None else -1
        if strict and label < 0:  # ConfigError: the entry points report it without a traceback
            raise ConfigError(
                f"{sample.get('src', sample.get('key'))}: speaker {spk!r} is not in the "
                "speaker table (train_label / spk2id); make it from the training data's utt2spk"
            )
        sample["label"] = label
        yield sample


def speed_perturb(
    data: Samples,
    factors: Sequence[float],
    num_speakers: int,
    rng: np.random.Generator,
) -> Iterator[dict]:
    """Speed perturbation as new speakers (WeSpeaker's convention).

    Draws a factor uniformly from ``factors`` (repeat 1.0 to make it likelier:
    ``[1, 1, 1, 0.9, 1.1]``). Factor ``f`` has index ``k`` in
    :func:`speed_classes` (1.0 -> 0, then the others in order of first
    appearance) and the label becomes ``label + k * num_speakers``; the length
    becomes ``len / f``. Reads ``wav``, ``label``; writes ``wav``, ``label``,
    ``speed``.
    """
    classes = speed_classes(factors)
    for sample in data:
        f = float(factors[int(rng.integers(len(factors)))])
        sample["wav"] = change_speed(sample["wav"], f)
        sample["label"] = sample["label"] + classes.index(f) * num_speakers
        sample["speed"] = f
        yield sample


def speed_classes(factors: Sequence[float]) -> list[float]:
    """Distinct speed factors in label-block order: 1.0 first, then by first appearance."""
    out = [1.0]
    for f in factors:
        if float(f) not in out:
            out.append(float(f))
    return out


def crop(data: Samples, num_samples: int, rng: np.random.Generator) -> Iterator[dict]:
    """Random crop to exactly ``num_samples``; shorter utterances are repeated to fill.

    Reads/writes ``wav``.
    """
    for sample in data:
        sample["wav"] = crop_or_pad(sample["wav"], num_samples, rng)
        yield sample


def augment(
    data: Samples,
    augmenter: Augmenter | None,
    prob: float,
    rng: np.random.Generator,
) -> Iterator[dict]:
    """With probability ``prob``: reverberation or noise/music/babble at a random SNR.

    Reads ``wav``. Writes ``wav``, ``aug`` (``reverb``, ``noise``, ``music``,
    ``babble`` or ``none``) and, for additive kinds, ``snr`` (dB).
    """
    for sample in data:
        if augmenter is not None and prob > 0 and rng.random() < prob:
            sample["wav"], info = augmenter(sample["wav"], rng)
            sample.update(info)
        else:
            sample["aug"] = "none"
        yield sample


def batch_crops(
    data: Samples,
    batch_size: int,
    drop_last: bool = True,
    stats: PipelineStats | None = None,
) -> Iterator[dict]:
    """Stack equal-length crops into training batches.

    Reads ``wav``, ``label``, ``key``. Yields ``{"wavs": (B, N) float32,
    "lengths": (B,) int64, "labels": (B,) int64, "keys": list[str]}``.
    """
    buf: list[dict] = []
    for sample in data:
        buf.append(sample)
        if len(buf) == batch_size:
            yield _collate(buf, stats)
            buf = []
    if buf and not drop_last:
        yield _collate(buf, stats)


def sort_by_length(data: Samples, buffer_size: int) -> Iterator[dict]:
    """Sort each run of ``buffer_size`` samples by length (ties: key), shortest first.

    Reads ``wav``, ``key``. Deterministic: same input order, same output order.
    """
    buf: list[dict] = []
    for sample in data:
        buf.append(sample)
        if len(buf) >= buffer_size:
            buf.sort(key=lambda s: (s["wav"].shape[0], s["key"]))
            yield from buf
            buf = []
    buf.sort(key=lambda s: (s["wav"].shape[0], s["key"]))
    yield from buf


def batch_by_length(
    data: Samples,
    batch_size: int,
    max_batch_seconds: float | None = None,
    stats: PipelineStats | None = None,
) -> Iterator[dict]:
    """Batch whole utterances, padding with zeros to the longest in the batch.

    A batch closes at ``batch_size`` utterances or when its padded size
    (utterances x longest) would exceed ``max_batch_seconds``; a single longer
    utterance forms its own batch. Reads ``wav``, ``sample_rate``, ``label``,
    ``key``. Yields the :func:`batch_crops` format; ``lengths`` are the true lengths.
    """
    buf: list[dict] = []
    longest = 0
    for sample in data:
        n = sample["wav"].shape[0]
        if buf:
            new_longest = max(longest, n)
            too_big = (
                max_batch_seconds is not None
                and (len(buf) + 1) * new_longest > max_batch_seconds * sample["sample_rate"]
            )
            if len(buf) >= batch_size or too_big:
                yield _collate(buf, stats)
                buf, longest = [], 0
        buf.append(sample)
        longest = max(longest, n)
    if buf:
        yield _collate(buf, stats)


def _collate(samples: list[dict], stats: PipelineStats | None) -> dict:
    lengths = [s["wav"].shape[0] for s in samples]
    wavs = np.zeros((len(samples), max(lengths)), dtype=np.float32)
    for i, s in enumerate(samples):
        wavs[i, : lengths[i]] = s["wav"]
    if stats is not None:
        stats.add("samples", len(samples))
        stats.add("batches")
    return {
        "wavs": torch.from_numpy(wavs),
        "lengths": torch.tensor(lengths, dtype=torch.int64),
        "labels": torch.tensor([s.get("label", -1) for s in samples], dtype=torch.int64),
        "keys": [s["key"] for s in samples],
    }
