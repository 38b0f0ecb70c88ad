"""What :meth:`SpeakerModel.embed` accepts, turned into 1-D float32 waveforms at the model's rate.

numpy, soundfile and soxr only (the ONNX runtime path never imports torch; a
torch tensor is recognised by duck typing and converted with its own methods).

Inputs (``x``), each item of a list counted from 0 in error messages:

* a path (``str`` or ``os.PathLike``), read whole with soundfile at its own rate;
* a 1-D numpy array or tensor of samples at ``sample_rate`` (default: the model's);
* a 2-D ``(N, C)`` array with ``C <= MAX_CHANNELS`` channels and more samples
  than channels (soundfile's layout): one multi-channel recording;
* a 2-D ``(B, N)`` batch with ``lengths`` ``(B,)``: row ``b`` holds
  ``lengths[b]`` samples, the rest is padding and ignored;
* a list (or tuple) of paths, arrays and tensors, of any lengths.

Conversions made, and documented as exact or as what extraction does too:

* ``int16`` -> ``float32`` by ``/ 32768`` (exact; what soundfile gives for a
  16-bit file); ``int32`` by ``/ 2**31``; ``float16`` and ``float64`` ->
  ``float32`` (the precision the model runs in);
* several channels -> their mean (as extraction downmixes a stereo file);
* a rate other than the model's -> resampled with soxr ``HQ``, as extraction does.

Everything else is a ``ValueError`` naming the item: an unsupported dtype, a
3-D array, NaN or inf samples, empty or silent audio, or audio shorter than the
model's receptive field (``min_samples``, after resampling).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wespeaker_lap.io.audio import MIN_SAMPLE_RATE, SILENCE_PEAK, read_channels, resample
from wespeaker_lap.io.files import not_a_file

#: A 2-D array with at most this many columns (and more rows) is one multi-channel recording.
MAX_CHANNELS = 8
_INT_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2.0 ** 31}


@dataclass
class Waveform:
    """One item ready for the model: ``samples`` (N,) float32 at the model's rate."""

    samples: np.ndarray
    source: str  # "item 3" or "item 3 (path/to.wav)", for messages

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[0])


def _is_tensor(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


def _tensor_to_numpy(x) -> np.ndarray:
    t = x.detach().cpu()
    if str(t.dtype) in ("torch.bfloat16",):
        t = t.float()
    return t.numpy()


def _to_float32(a: np.ndarray, where: str) -> np.ndarray:
    if a.dtype in _INT_SCALE:
        return (a.astype(np.float64) / _INT_SCALE[a.dtype]).astype(np.float32)
    if a.dtype in (np.float16, np.float32, np.float64):
        return a.astype(np.float32, copy=False)
    raise ValueError(f"{where}: samples of dtype {a.dtype} are not audio; give float32/64/16, "
                     "int16 or int32")


def _downmix(a: np.ndarray, where: str) -> np.ndarray:
    if a.ndim == 1:
        return a
    if a.ndim == 2 and a.shape[1] <= MAX_CHANNELS and a.shape[0] > a.shape[1]:
        return np.ascontiguousarray(a[:, 0]) if a.shape[1] == 1 else \
            np.ascontiguousarray(a.mean(axis=1, dtype=np.float32))
    raise ValueError(f"{where}: an array of shape {a.shape} is not one recording: give 1-D "
                     f"samples, (samples, channels) with at most {MAX_CHANNELS} channels, or a "
                     "(batch, samples) array together with lengths=")


def _check(wav: np.ndarray, rate: int, where: str) -> None:
    """Empty, non-finite, silent: a ``ValueError`` naming ``where`` (before resampling)."""
    if rate < MIN_SAMPLE_RATE:
        raise ValueError(f"{where}: sample rate {rate} Hz; need at least {MIN_SAMPLE_RATE} Hz")
    if wav.size == 0:
        raise ValueError(f"{where}: empty audio (0 samples)")
    bad = int(np.sum(~np.isfinite(wav)))
    if bad:
        raise ValueError(f"{where}: {bad} NaN or inf samples")
    if float(np.max(np.abs(wav))) < SILENCE_PEAK:
        raise ValueError(f"{where}: silent audio (all samples ~0)")


def read_file(path: str | os.PathLike, where: str) -> tuple[np.ndarray, int]:
    """A whole audio file, channels averaged -> ``(samples (N,) float32, rate)``.

    The same values as extraction's decoder (soundfile float32, channel mean).
    """
    why = not_a_file(path, "audio file")
    if why is not None:
        if why.startswith("no such"):
            raise FileNotFoundError(f"{where}: {why}")
        raise ValueError(f"{where}: {why}")
    data, rate = read_channels(path, where)
    return _downmix(data, where), rate


def _items(x, lengths) -> list[tuple[object, str]]:
    """Split ``x`` into ``(item, name)`` pairs; a batch with lengths becomes its rows."""
    if isinstance(x, str | os.PathLike):
        return [(x, "item 0")]
    if isinstance(x, list | tuple):
        if lengths is not None:
            raise ValueError("lengths= goes with a 2-D (batch, samples) array, not a list")
        if not x:
            raise ValueError("no audio given (an empty list)")
        return [(item, f"item {i}") for i, item in enumerate(x)]
    if _is_tensor(x):
        x = _tensor_to_numpy(x)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"cannot embed a {type(x).__name__}: give a path, an array, a tensor, "
                        "or a list of them")
    if lengths is None:
        return [(x, "item 0")]
    lengths = _tensor_to_numpy(lengths) if _is_tensor(lengths) else np.asarray(lengths)
    if x.ndim != 2 or lengths.ndim != 1 or lengths.shape[0] != x.shape[0]:
        raise ValueError(f"a batch is (batch, samples) with lengths (batch,); got {x.shape} "
                         f"and lengths {lengths.shape}")
    if not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"lengths must be integers, got dtype {lengths.dtype}")
    out = []
    for i, n in enumerate(lengths.tolist()):
        if not 0 <= n <= x.shape[1]:
            raise ValueError(f"item {i}: length {n} outside [0, {x.shape[1]}]")
        out.append((x[i, :n], f"item {i}"))
    return out


def to_waveforms(x, sample_rate: int | None, model_rate: int, min_samples: int,
                 lengths=None) -> list[Waveform]:
    """The waveforms of ``x`` (see the module docstring) at ``model_rate``, each checked.

    ``sample_rate`` is the rate of arrays and tensors (``None``: already
    ``model_rate``); files carry their own rate, so it must not be given with
    paths alone.
    """
    if sample_rate is not None and (isinstance(sample_rate, bool)
                                    or not isinstance(sample_rate, int | np.integer)
                                    or sample_rate <= 0):
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    out = []
    for item, where in _items(x, lengths):
        if isinstance(item, str | os.PathLike):
            where = f"{where} ({os.fspath(item)})"
            wav, rate = read_file(item, where)
        else:
            if _is_tensor(item):
                item = _tensor_to_numpy(item)
            if not isinstance(item, np.ndarray):
                raise TypeError(f"{where}: cannot embed a {type(item).__name__}: give a path, "
                                "an array or a tensor")
            wav = _downmix(_to_float32(item, where), where)
            rate = int(sample_rate) if sample_rate is not None else model_rate
        _check(wav, rate, where)
        wav = resample(wav, rate, model_rate)
        if wav.shape[0] < min_samples:
            raise ValueError(f"{where}: too short: {wav.shape[0]} samples at {model_rate} Hz "
                             f"({wav.shape[0] / model_rate:.3f} s); the model needs at least "
                             f"{min_samples}")
        out.append(Waveform(np.ascontiguousarray(wav, dtype=np.float32), where))
    return out


def length_batches(waves: Sequence[Waveform], batch_size: int, rate: int,
                   max_batch_seconds: float | None = 240.0) -> list[np.ndarray]:
    """Item indices grouped by length (shortest first): at most ``batch_size`` items and,
    if set, ``max_batch_seconds`` of padded audio per batch (a longer item goes alone)."""
    order = np.argsort([w.num_samples for w in waves], kind="stable")
    batches, cur, longest = [], [], 0
    for i in order:
        n = waves[i].num_samples
        if cur:
            too_big = max_batch_seconds is not None and \
                (len(cur) + 1) * max(longest, n) > max_batch_seconds * rate
            if len(cur) >= batch_size or too_big:
                batches.append(np.asarray(cur))
                cur, longest = [], 0
        cur.append(int(i))
        longest = max(longest, n)
    if cur:
        batches.append(np.asarray(cur))
    return batches


def pad(waves: Sequence[Waveform]) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad -> ``(wavs (B, N) float32, lengths (B,) int64)``."""
    lengths = np.array([w.num_samples for w in waves], dtype=np.int64)
    out = np.zeros((len(waves), int(lengths.max())), dtype=np.float32)
    for i, w in enumerate(waves):
        out[i, : w.num_samples] = w.samples
    return out, lengths
