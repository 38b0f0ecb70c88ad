"""Embeddings from an exported ONNX extractor with onnxruntime: numpy only, no torch.

    emb = OnnxEmbedder("exp/x/extractor.onnx")(["a.wav", "b.flac"])   # (2, E) float32

Audio is read with soundfile (channel 0), resampled with soxr to the model's
rate, checked (not empty, finite, not silent, at least the model's shortest
input), and run in length-sorted batches padded with zeros; the exported graph
is batch-independent, so an utterance's embedding does not depend on its batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from wespeaker_lap.export.identity import (
    INPUT_LENGTHS,
    INPUT_WAVS,
    OUTPUT_EMBEDDINGS,
    check_matches_model_dir,
    parse_metadata,
)

logger = logging.getLogger(__name__)

#: A waveform whose absolute peak is below this is silent (below 16-bit resolution).
SILENCE_PEAK = 1e-6


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError("running an ONNX model needs onnxruntime: "
                          'pip install "wespeaker-lap[export]"') from e
    return onnxruntime


def read_audio(path: str | os.PathLike, rate: int, min_samples: int = 1) -> np.ndarray:
    """A whole audio file, channel 0, resampled to ``rate`` with soxr -> (N,) float32.

    A file that cannot be read, is empty, holds NaN/inf, is silent or is shorter
    than ``min_samples`` (after resampling) is a ``ValueError`` naming it.
    """
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile raises several types
        raise ValueError(f"cannot read audio file {path}: {type(e).__name__}: {e}") from None
    wav = np.ascontiguousarray(data[:, 0])
    if wav.size == 0:
        raise ValueError(f"audio file {path} is empty")
    if not np.all(np.isfinite(wav)):
        raise ValueError(f"audio file {path} holds NaN or inf samples")
    if file_rate != rate:
        wav = soxr.resample(wav, file_rate, rate, quality="HQ").astype(np.float32, copy=False)
    if float(np.max(np.abs(wav))) < SILENCE_PEAK:
        raise ValueError(f"audio file {path} is silent (all samples ~0)")
    if wav.size < min_samples:
        raise ValueError(f"audio file {path} is too short: {wav.size} samples at {rate} Hz, "
                         f"the model needs at least {min_samples}")
    return wav


def pad_batch(wavs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad 1-D waveforms -> (wavs (B, N) float32, lengths (B,) int64)."""
    lengths = np.array([len(w) for w in wavs], dtype=np.int64)
    out = np.zeros((len(wavs), int(lengths.max())), dtype=np.float32)
    for i, w in enumerate(wavs):
        out[i, : len(w)] = w
    return out, lengths


class OnnxEmbedder:
    """An exported extractor ready for files: ``OnnxEmbedder(path)(paths) -> (N, E)``.

    Args:
        onnx_path: a file written by ``python -m wespeaker_lap.bin.export_onnx``;
            a file without its metadata is an error.
        model_dir: when given, the file must have been exported from this model
            directory as it is now (same ``config.yaml`` and weights), else an error.
        batch_size: utterances per run.
        threads: onnxruntime intra-op threads (``None``: its default).
    """

    def __init__(self, onnx_path: str | os.PathLike, model_dir: str | os.PathLike | None = None,
                 batch_size: int = 8, threads: int | None = None):
        ort = _onnxruntime()
        path = Path(onnx_path)
        if not path.is_file():
            raise FileNotFoundError(f"no such ONNX file: {path}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ValueError(f"cannot load ONNX file {path}: {e}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.identity = parse_metadata(meta, str(path))
        if model_dir is not None:
            check_matches_model_dir(self.identity, model_dir, str(path))
        names = ([i.name for i in self.session.get_inputs()],
                 [o.name for o in self.session.get_outputs()])
        if names != ([INPUT_WAVS, INPUT_LENGTHS], [OUTPUT_EMBEDDINGS]):
            raise ValueError(f"{path}: graph inputs/outputs {names} are not "
                             f"([{INPUT_WAVS!r}, {INPUT_LENGTHS!r}], [{OUTPUT_EMBEDDINGS!r}])")
        self.path = path
        self.batch_size = int(batch_size)
        self.sample_rate = int(self.identity["sample_rate"])
        self.embed_dim = int(self.identity["embed_dim"])
        self.min_samples = int(self.identity["min_samples"])

    def embed_waveforms(self, wavs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """One run: wavs (B, N) float32 zero-padded, lengths (B,) -> (B, E) float32."""
        wavs = np.ascontiguousarray(wavs, dtype=np.float32)
        lengths = np.asarray(lengths, dtype=np.int64)
        if wavs.ndim != 2 or lengths.shape != (wavs.shape[0],):
            raise ValueError(f"wavs must be (B, N) and lengths (B,), got {wavs.shape} and "
                             f"{lengths.shape}")
        if lengths.min() < self.min_samples or lengths.max() > wavs.shape[1]:
            raise ValueError(f"lengths must lie in [{self.min_samples}, {wavs.shape[1]}], "
                             f"got {lengths.tolist()}")
        (emb,) = self.session.run([OUTPUT_EMBEDDINGS], {INPUT_WAVS: wavs,
                                                        INPUT_LENGTHS: lengths})
        return emb.astype(np.float32, copy=False)

    def __call__(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """Embeddings (len(paths), E) float32 of whole audio files, in the order given."""
        for p in paths:
            if not Path(p).is_file():
                raise FileNotFoundError(f"no such audio file: {p}")
        wavs = [read_audio(p, self.sample_rate, self.min_samples) for p in paths]
        window = float(self.identity.get("long_audio_window") or 0)
        long = [str(p) for p, w in zip(paths, wavs, strict=True)
                if window and len(w) > window * self.sample_rate]
        if long:
            logger.warning(
                "%d file(s) longer than %g s (%s...): the ONNX graph embeds them in one pass, "
                "where the PyTorch extractor runs the SSL model in %g s windows; the "
                "embeddings differ slightly and memory grows with the square of the length",
                len(long), window, long[0], window)
        out = np.zeros((len(wavs), self.embed_dim), dtype=np.float32)
        order = np.argsort([len(w) for w in wavs], kind="stable")
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch, lengths = pad_batch([wavs[i] for i in rows])
            out[rows] = self.embed_waveforms(batch, lengths)
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            names = [str(paths[i]) for i in np.flatnonzero(bad)]
            raise FloatingPointError(f"non-finite embeddings for {len(names)} file(s): "
                                     f"{names[:5]}")
        return out
