"""Waveform helpers used by the pipeline steps: decode, check, resample, speed, crop, mix.

Pure functions on 1-D float32 numpy arrays; randomness comes in as an explicit
``numpy.random.Generator`` so every step is reproducible from its seed.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import subprocess

import numpy as np
import soundfile as sf
from scipy import signal

from wespeaker_lap.io.audio import MIN_SAMPLE_RATE, SILENCE_PEAK, resample
from wespeaker_lap.io.files import not_a_file

#: File name extensions the pipeline decodes (soundfile: libsndfile formats).
AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "opus", "sph", "aiff", "aif", "au", "w64", "rf64")

#: What a piped ``wav.scp`` entry meets when pipes were not allowed.
PIPES_NEED_FLAG = "piped wav.scp entries need --allow_pipes (dataset_args.allow_pipes)"

logger = logging.getLogger(__name__)


class BadAudio(Exception):
    """An utterance that cannot be used; ``reason`` is one of :data:`BAD_AUDIO_REASONS`."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


#: Why an utterance is skipped (the keys of the pipeline's skip counters).
BAD_AUDIO_REASONS = ("missing", "unreadable", "low_rate", "empty", "all_zero", "non_finite",
                     "too_short", "out_of_range")


# ------------------------------------------------------------------ reading
def is_piped(spec: str) -> bool:
    """True for a Kaldi piped ``wav.scp`` value (``some command ... |``)."""
    return str(spec).rstrip().endswith("|")


def run_pipe(spec: str, timeout: float | None = None) -> bytes:
    """Run a piped ``wav.scp`` value's command with a shell, as Kaldi does; its stdout bytes.

    ``spec`` is ``"cmd args |"``. A command that fails (non-zero exit) or writes
    nothing raises :class:`BadAudio` ``unreadable`` quoting the command and the
    end of its stderr.
    """
    cmd = str(spec).rstrip()[:-1].strip()
    try:
        # a shell, as Kaldi runs these; only when the user opted in (allow_pipes)
        proc = subprocess.run(cmd, shell=True, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BadAudio("unreadable", f"command timed out after {timeout} s: {cmd!r}") from None
    err = proc.stderr.decode("utf-8", "replace").strip()[-300:]
    err = f": {err}" if err else ""
    if proc.returncode != 0:
        raise BadAudio("unreadable", f"command failed (exit {proc.returncode}): {cmd!r}{err}")
    if not proc.stdout:
        raise BadAudio("unreadable", f"command wrote nothing: {cmd!r}{err}")
    return proc.stdout


def read_bytes(spec: str | os.PathLike, allow_pipes: bool = False) -> bytes:
    """The audio bytes of a ``wav.scp`` value: a file's contents or a piped command's output.

    Raises :class:`BadAudio`: ``missing`` ("no such file: PATH"), ``unreadable``
    (an OS error, a failed command, or a pipe when ``allow_pipes`` is False).
    """
    spec = str(spec)
    if is_piped(spec):
        if not allow_pipes:
            raise BadAudio("unreadable", PIPES_NEED_FLAG)
        return run_pipe(spec)
    why = not_a_file(spec)
    if why is not None:  # a directory, or a FIFO that open() would wait on forever
        raise BadAudio("missing" if why.startswith("no such") else "unreadable", why)
    try:
        with open(spec, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise BadAudio("missing", f"no such file: {spec}") from None
    except OSError as e:
        raise BadAudio("unreadable", f"{spec}: {e.strerror or e}") from None


# ------------------------------------------------------------------ decoding
_said_downmix: set[int] = set()  # channel counts already reported (one log line each)


def to_mono(data: np.ndarray, src: str = "audio") -> np.ndarray:
    """(N, C) float32 -> (N,): the mean of the channels (said once per channel count).

    Averaging, not channel 0: a recording whose first channel is silent (a
    stereo file with one microphone) still gives its speech.
    """
    if data.shape[1] == 1:
        return np.ascontiguousarray(data[:, 0])
    channels = int(data.shape[1])
    if channels not in _said_downmix:
        _said_downmix.add(channels)
        logger.warning("%s has %d channels: averaging them to mono (said once; every "
                       "%d-channel file is downmixed the same way)", src, channels, channels)
    return np.ascontiguousarray(data.mean(axis=1, dtype=np.float32))


def decode_bytes(data: bytes, src: str = "audio") -> tuple[np.ndarray, int]:
    """Decode an in-memory audio file (wav, flac, ogg, ...) -> (samples (N,) float32, rate).

    Several channels are averaged to mono (:func:`to_mono`). Raises
    :class:`BadAudio` ``unreadable`` when libsndfile cannot parse the bytes.
    ``src`` names the file in messages.
    """
    try:
        wav, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile raises several types (LibsndfileError, RuntimeError, ...)
        raise BadAudio("unreadable", f"{type(e).__name__}: {e}") from None
    return to_mono(wav, src), int(rate)


#: RIFF data-chunk sizes that mean "unknown length" (written by tools streaming to a pipe).
_STREAMING_SIZES = (0, 0xFFFFFFFF, 0x7FFFF000, 0x7FFFFFFF)


def declared_frames(data: bytes) -> int | None:
    """Frames a RIFF/WAVE header's ``data`` chunk claims; None when unknown or not a WAVE file.

    Reads the chunk list (``fmt `` for the block size, then ``data``); the
    "unknown length" sizes that streaming writers use give None.
    """
    if len(data) < 12 or data[8:12] != b"WAVE" or data[:4] not in (b"RIFF", b"RIFX"):
        return None
    endian = "<" if data[:4] == b"RIFF" else ">"
    pos, block = 12, None
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        (size,) = struct.unpack(endian + "I", data[pos + 4 : pos + 8])
        if cid == b"fmt " and pos + 22 <= len(data):
            (block,) = struct.unpack(endian + "H", data[pos + 20 : pos + 22])
        elif cid == b"data":
            if size in _STREAMING_SIZES or not block:
                return None
            return size // block
        pos += 8 + size + (size & 1)
    return None


def truncation(data: bytes, frames: int) -> str | None:
    """A message when a WAVE header claims more frames than ``frames`` decoded, else None."""
    claimed = declared_frames(data)
    if claimed is None or claimed <= frames:
        return None
    return (f"truncated: the header says {claimed} samples, the file holds {frames} "
            f"({frames / claimed:.0%})")


def load_audio(spec: str | os.PathLike, allow_pipes: bool = False) -> tuple[np.ndarray, int]:
    """Read and decode one ``wav.scp`` value (file or pipe) -> (samples (N,) float32, rate).

    Mono (channels averaged); a truncated WAVE file is read with a warning naming
    it and both lengths. Raises :class:`BadAudio` (``missing``, ``unreadable``).
    """
    blob = read_bytes(spec, allow_pipes)
    wav, rate = decode_bytes(blob, str(spec))
    if not is_piped(str(spec)):
        note = truncation(blob, wav.shape[0])
        if note:
            logger.warning("%s: %s; using the samples there", spec, note)
    return wav, rate


def load_segment(spec: str | os.PathLike, start: float, end: float | None,
                 allow_pipes: bool = False) -> tuple[np.ndarray, int]:
    """Samples ``start`` to ``end`` seconds (None: to the end) of one ``wav.scp`` value.

    A file is read by seeking (libsndfile): only the segment's frames are read,
    never the whole recording. A piped value's output is decoded whole and cut.
    Channels are averaged. A segment that starts past the end of the recording
    is :class:`BadAudio` ``out_of_range``; one that ends past it keeps the
    samples there. Raises :class:`BadAudio` (``missing``, ``unreadable``) too.
    """
    spec = str(spec)
    where = f"{spec} [{start:g}-{'end' if end is None else f'{end:g}'} s]"
    if is_piped(spec):
        wav, rate = decode_bytes(read_bytes(spec, allow_pipes), spec)
        first = int(round(start * rate))
        last = wav.shape[0] if end is None else min(wav.shape[0], int(round(end * rate)))
        if first >= wav.shape[0]:
            raise BadAudio("out_of_range", f"{where}: the audio lasts {wav.shape[0] / rate:.3f} s")
        return np.ascontiguousarray(wav[first:last]), rate
    why = not_a_file(spec)
    if why is not None:
        raise BadAudio("missing" if why.startswith("no such") else "unreadable", why)
    try:
        with sf.SoundFile(spec) as f:
            rate, frames = f.samplerate, f.frames
            first = int(round(start * rate))
            last = frames if end is None else min(frames, int(round(end * rate)))
            if first >= frames:
                raise BadAudio("out_of_range", f"{where}: the recording lasts "
                               f"{frames / rate:.3f} s")
            f.seek(first)
            data = f.read(last - first, dtype="float32", always_2d=True)
    except BadAudio:
        raise
    except Exception as e:  # libsndfile raises several types
        raise BadAudio("unreadable", f"{spec}: {type(e).__name__}: {e}") from None
    return to_mono(data, spec), int(rate)


def check_waveform(wav: np.ndarray, rate: int, min_duration: float = 0.0) -> None:
    """Raise :class:`BadAudio` if ``wav`` is empty, non-finite, all zero or too short.

    ``min_duration`` is in seconds; 0 disables the length check (empty is always
    bad). A ``rate`` below :data:`MIN_SAMPLE_RATE` is ``low_rate``.
    """
    if rate < MIN_SAMPLE_RATE:
        raise BadAudio("low_rate", f"{rate} Hz; need at least {MIN_SAMPLE_RATE} Hz")
    if wav.size == 0:
        raise BadAudio("empty", "0 samples")
    if not np.all(np.isfinite(wav)):
        raise BadAudio("non_finite", f"{int(np.sum(~np.isfinite(wav)))} NaN/inf samples")
    peak = float(np.max(np.abs(wav)))
    if peak < SILENCE_PEAK:
        raise BadAudio("all_zero", f"peak {peak:.3g}")
    if wav.size < min_duration * rate:
        raise BadAudio("too_short", f"{wav.size / rate:.3f} s < {min_duration:g} s")


def change_speed(wav: np.ndarray, factor: float) -> np.ndarray:
    """Play ``wav`` ``factor`` times faster (sox ``speed``): tempo and pitch both change.

    The output has ``round(len(wav) / factor)`` samples (+-1 from the resampler).
    """
    if factor == 1.0:
        return wav
    # Pretend the signal was recorded at rate*factor and resample it back to rate.
    return resample(wav, 16000.0 * factor, 16000.0)


def crop_or_pad(wav: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of exactly ``num_samples``; shorter input is repeated (wrap-padded)."""
    n = wav.shape[0]
    if n >= num_samples:
        start = int(rng.integers(0, n - num_samples + 1))
        return wav[start : start + num_samples]
    return np.pad(wav, (0, num_samples - n), mode="wrap")


def power(x: np.ndarray) -> float:
    """Mean square of ``x`` (float64 accumulation)."""
    return float(np.mean(np.square(x, dtype=np.float64)))


def scale_to_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray | None:
    """Scale ``noise`` so that 10*log10(P(speech) / P(scaled noise)) == ``snr_db``.

    Returns None when either signal is silent (no SNR can be set).
    """
    p_s, p_n = power(speech), power(noise)
    if p_s <= 0.0 or p_n <= 1e-20:
        return None
    gain = np.sqrt(p_s / (p_n * 10.0 ** (snr_db / 10.0)))
    return (noise * gain).astype(np.float32, copy=False)


def reverberate(wav: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with a room impulse response; output aligned on the RIR's direct path.

    The RIR is scaled to unit energy (so the level stays about the same) and the
    output is shifted by the position of its peak, so the speech does not move
    in time; the length is unchanged.
    """
    rir = rir.astype(np.float32, copy=False)
    energy = np.sqrt(power(rir) * rir.size)
    if energy <= 0.0:
        return wav
    rir = rir / energy
    delay = int(np.argmax(np.abs(rir)))
    out = signal.fftconvolve(wav, rir, mode="full")[delay : delay + wav.shape[0]]
    return out.astype(np.float32, copy=False)


def read_segment(
    path: str | os.PathLike, num_samples: int, rate: int, rng: np.random.Generator
) -> np.ndarray:
    """A random segment of ``num_samples`` at ``rate`` from an audio file (noise, music).

    Reads only the frames it needs; a file at another rate is resampled; a file
    shorter than the segment is repeated. Raises :class:`BadAudio` on failure.
    """
    if not os.path.isfile(path):
        raise BadAudio("missing", f"no such file: {path}")
    try:
        with sf.SoundFile(str(path)) as f:
            file_rate, frames = f.samplerate, f.frames
            need = int(np.ceil(num_samples * file_rate / rate)) + 1
            if frames > need:
                f.seek(int(rng.integers(0, frames - need + 1)))
                data = f.read(need, dtype="float32", always_2d=True)
            else:
                data = f.read(dtype="float32", always_2d=True)
    except Exception as e:
        raise BadAudio("unreadable", f"{path}: {type(e).__name__}: {e}") from None
    wav = _source_checked(to_mono(data, str(path)), file_rate, path)
    wav = resample(wav, file_rate, rate)
    return crop_or_pad(wav, num_samples, rng)


def _source_checked(wav: np.ndarray, rate: int, path) -> np.ndarray:
    if rate < MIN_SAMPLE_RATE:
        raise BadAudio("low_rate", f"{path}: {rate} Hz; need at least {MIN_SAMPLE_RATE} Hz")
    if wav.size == 0 or not np.all(np.isfinite(wav)):
        raise BadAudio("empty" if wav.size == 0 else "non_finite", str(path))
    return wav


def read_audio(path: str | os.PathLike, rate: int) -> np.ndarray:
    """Read a whole (short) file such as a RIR, channels averaged, resampled to ``rate``."""
    try:
        wav, file_rate = load_audio(path)
    except BadAudio as e:
        if str(path) in e.detail:
            raise
        raise BadAudio(e.reason, f"{path}: {e.detail}") from None
    return resample(_source_checked(wav, file_rate, path), file_rate, rate)
