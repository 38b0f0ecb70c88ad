"""Embeddings from an exported ONNX extractor with onnxruntime: numpy only, no torch.

    emb = OnnxEmbedder("exp/x/extractor.onnx")(["a.wav", "b.flac"])   # (2, E) float32

Audio is read with soundfile (channel 0), resampled with soxr to the model's
rate, checked (not empty, finite, not silent, at least the model's shortest
input), and run in length-sorted batches padded with zeros; the exported graph
is batch-independent, so an utterance's embedding does not depend on its batch.
That holds for the float32 file only: in the int8 variants an embedding moves a
little with the batch it runs in (dynamic int8 computes its activation scales over
the whole padded batch; on 16 mini test utterances, batches of 8 and 16 against one
at a time: cosine >= 0.9997 for int8, >= 0.9990 for int8_static, against 1 - 1e-7
for float32). A variant's EER is therefore measured at a stated batch size.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wespeaker_lap.export.identity import (
    INPUT_LENGTHS,
    INPUT_WAVS,
    OUTPUT_EMBEDDINGS,
    OUTPUT_FRAME_LENGTHS,
    OUTPUT_FRAMES,
    check_matches_model_dir,
    parse_metadata,
    sha256_of,
)
from wespeaker_lap.io.audio import SILENCE_PEAK, read_channels, resample

logger = logging.getLogger(__name__)


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
    data, file_rate = read_channels(path)
    wav = np.ascontiguousarray(data[:, 0])
    if wav.size == 0:
        raise ValueError(f"audio file {path} is empty")
    if not np.all(np.isfinite(wav)):
        raise ValueError(f"audio file {path} holds NaN or inf samples")
    wav = resample(wav, file_rate, rate)
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


#: Provider short names for ``providers=`` (``--providers cuda,cpu``).
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}


def resolve_providers(providers: str | Sequence[str] | None) -> list[str]:
    """onnxruntime provider names from short names (``"cuda,cpu"``) or full ones.

    ``None``: the CPU. A provider this onnxruntime lacks is a ``ValueError`` that
    lists the ones it has (``onnxruntime-gpu`` brings CUDA and TensorRT).
    """
    ort = _onnxruntime()
    if providers is None:
        return ["CPUExecutionProvider"]
    names = providers.split(",") if isinstance(providers, str) else list(providers)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise ValueError("providers is empty; give e.g. 'cpu' or 'cuda,cpu'")
    full = [PROVIDERS.get(n.lower(), n) for n in names]
    have = ort.get_available_providers()
    missing = [n for n in full if n not in have]
    if missing:
        short = {v: k for k, v in PROVIDERS.items()}
        listed = ", ".join(f"{h} ({short[h]})" if h in short else h for h in have)
        raise ValueError(f"onnxruntime {ort.__version__} has no {', '.join(missing)}; "
                         f"available here: {listed} (CUDA and TensorRT need onnxruntime-gpu)")
    return full


def _session(ort, path: Path, opts, providers: list[str]):
    """An InferenceSession; a file onnxruntime cannot load is a ``ValueError`` naming it."""
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types
        text = str(e)
        if any(m in text for m in ("NOT_IMPLEMENTED", "Could not find an implementation",
                                   "is not a registered function/op")):
            raise ValueError(
                f"cannot load ONNX file {path}: this onnxruntime ({ort.__version__}, "
                f"providers {providers}) lacks an operator it uses (a quantized or float16 "
                f"model needs a runtime with those kernels): {text}") from None
        raise ValueError(f"cannot load ONNX file {path}: {text}") from None


class OnnxEmbedder:
    """An exported extractor ready for files: ``OnnxEmbedder(path)(paths) -> (N, E)``.

    Audio longer than the export's window (20 s) runs window by window, exactly as
    ``SpeakerEmbeddingExtractor.embed`` does: the SSL model on overlapping windows
    (batched), each window's per-frame output kept between the cuts
    ``SSLFrontend.forward_windows`` makes, and the pooling graph once over all
    kept frames. Memory holds one batch of windows plus the kept frames (512
    floats a frame for LAP_ASTP: 0.37 GB for an hour), so it grows linearly with
    the length. A file exported before windowing (format 1) embeds long audio in
    one pass, with a warning.

    Args:
        onnx_path: a file written by ``python -m wespeaker_lap.bin.export_onnx``;
            a file without its metadata is an error.
        model_dir: when given, the file must have been exported from what this model
            directory loads now (same ``config.yaml`` and weights file), else an error.
        batch_size: utterances (or windows of one long utterance) per run.
        threads: onnxruntime intra-op threads (``None``: its default).
        providers: ``"cpu"`` (default), ``"cuda,cpu"``, ... (see :func:`resolve_providers`).
        pool_path: the pooling graph, when not beside ``onnx_path`` under its recorded name.
    """

    def __init__(self, onnx_path: str | os.PathLike, model_dir: str | os.PathLike | None = None,
                 batch_size: int = 8, threads: int | None = None,
                 providers: str | Sequence[str] | None = None,
                 pool_path: str | os.PathLike | None = None):
        ort = _onnxruntime()
        path = Path(onnx_path)
        if path.is_dir():
            raise ValueError(f"{path} is a directory; expected an exported .onnx file")
        if not path.is_file():
            raise FileNotFoundError(f"no such ONNX file: {path}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if threads is not None and int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.providers = resolve_providers(providers)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.session = _session(ort, path, opts, self.providers)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.identity = parse_metadata(meta, str(path))
        if self.identity.get("role") == "pool":
            raise ValueError(f"{path} is the pooling graph of an export; load the main file "
                             "beside it")
        if model_dir is not None:
            check_matches_model_dir(self.identity, model_dir, str(path))
        names = ([i.name for i in self.session.get_inputs()],
                 [o.name for o in self.session.get_outputs()])
        if names[0] != [INPUT_WAVS, INPUT_LENGTHS] or names[1][:1] != [OUTPUT_EMBEDDINGS]:
            raise ValueError(f"{path}: graph inputs/outputs {names} are not "
                             f"([{INPUT_WAVS!r}, {INPUT_LENGTHS!r}], [{OUTPUT_EMBEDDINGS!r}, "
                             "...])")
        self.path = path
        self.batch_size = int(batch_size)
        self.sample_rate = int(self.identity["sample_rate"])
        self.embed_dim = int(self.identity["embed_dim"])
        self.min_samples = int(self.identity["min_samples"])
        self.window = float(self.identity.get("long_audio_window") or 0)
        self.overlap = float(self.identity.get("long_audio_overlap") or 0)
        self.pool_session = None
        if self.identity.get("pool_graph"):
            self._load_pool(ort, opts, pool_path)

    def _load_pool(self, ort, opts, pool_path) -> None:
        names_out = [o.name for o in self.session.get_outputs()]
        if names_out[1:] != [OUTPUT_FRAMES, OUTPUT_FRAME_LENGTHS]:
            raise ValueError(f"{self.path}: outputs {names_out} lack the window outputs "
                             f"{[OUTPUT_FRAMES, OUTPUT_FRAME_LENGTHS]}")
        pool = Path(pool_path) if pool_path else self.path.with_name(
            str(self.identity["pool_graph"]))
        if not pool.is_file():
            raise FileNotFoundError(
                f"{self.path} needs its pooling graph {pool} (written beside it by "
                "export_onnx; copy the two files together)")
        if sha256_of(pool) != self.identity.get("pool_sha256"):
            raise ValueError(f"{pool} is not the pooling graph exported with {self.path} "
                             "(its sha256 differs from the one recorded); re-export the model")
        self.pool_session = _session(ort, pool, opts, self.providers)
        self.hop = int(self.identity["hop_samples"])
        self.time_axis = int(self.identity["frames_time_axis"]) - 1  # within one utterance

    @property
    def windowed(self) -> bool:
        """True when long audio runs window by window (a format-2 export)."""
        return self.pool_session is not None and self.window > 0

    def _check(self, wavs: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wavs = np.ascontiguousarray(wavs, dtype=np.float32)
        lengths = np.asarray(lengths, dtype=np.int64)
        if wavs.ndim != 2 or lengths.shape != (wavs.shape[0],):
            raise ValueError(f"wavs must be (B, N) and lengths (B,), got {wavs.shape} and "
                             f"{lengths.shape}")
        if lengths.min() < self.min_samples or lengths.max() > wavs.shape[1]:
            raise ValueError(f"lengths must lie in [{self.min_samples}, {wavs.shape[1]}], "
                             f"got {lengths.tolist()}")
        return wavs, lengths

    def embed_whole(self, wavs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """One run of the whole graph, at any length: wavs (B, N) float32 zero-padded,
        lengths (B,) -> (B, E) float32 (no windowing; see :meth:`embed_waveforms`)."""
        wavs, lengths = self._check(wavs, lengths)
        (emb,) = self.session.run([OUTPUT_EMBEDDINGS], {INPUT_WAVS: wavs,
                                                        INPUT_LENGTHS: lengths})
        return emb.astype(np.float32, copy=False)

    def embed_waveforms(self, wavs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """wavs (B, N) float32 zero-padded, lengths (B,) -> (B, E) float32, as the PyTorch
        extractor's ``embed``: utterances longer than the window run in windows
        (:meth:`embed_long`), the others through the whole graph together."""
        wavs, lengths = self._check(wavs, lengths)
        win = round(self.window * self.sample_rate)
        if not self.windowed or int(lengths.max()) <= win:
            return self.embed_whole(wavs, lengths)
        out = np.zeros((len(lengths), self.embed_dim), dtype=np.float32)
        short = np.flatnonzero(lengths <= win)
        if short.size:
            n = int(lengths[short].max())
            out[short] = self.embed_whole(wavs[short, :n], lengths[short])
        for i in np.flatnonzero(lengths > win):
            out[i] = self.embed_long(wavs[i, : lengths[i]])
        return out

    def embed_long(self, wav: np.ndarray, window: float | None = None,
                   overlap: float | None = None) -> np.ndarray:
        """One utterance (N,) in overlapping windows -> (E,) float32.

        The windows, their cuts and the pooling are those of
        ``SSLFrontend.forward_windows`` + ``SpeakerEmbeddingExtractor.embed``
        (``window``/``overlap`` default to the export's, 20 s / 4 s): windows start
        ``window - overlap`` apart in whole frames, the last ends at the utterance's
        end, and each keeps its frames up to the middle of its overlap with the next.
        """
        if not self.windowed:
            raise ValueError(f"{self.path} has no pooling graph (exported before "
                             "windowing): re-export it")
        window = self.window if window is None else float(window)
        overlap = self.overlap if overlap is None else float(overlap)
        wav = np.ascontiguousarray(wav, dtype=np.float32)
        n, hop = len(wav), self.hop
        win = int(round(window * self.sample_rate))
        step = (int(round((window - overlap) * self.sample_rate)) // hop) * hop
        if win < self.min_samples or step <= 0 or overlap < 0:
            raise ValueError(f"window {window} s / overlap {overlap} s: need a window of at "
                             f"least {self.min_samples} samples and 0 <= overlap < window by "
                             f"at least one {hop}-sample frame")
        if n <= win:
            return self.embed_whole(wav[None], np.array([n]))[0]
        starts = list(range(0, n - win, step))
        last = -(-(n - win) // hop) * hop  # the last window ends at the utterance's end
        if last > starts[-1]:
            starts.append(last)
        kept = None  # (..., frames, ...) of the whole utterance, filled window by window
        pos, prev_end = 0, 0
        for b in range(0, len(starts), self.batch_size):
            group = starts[b : b + self.batch_size]
            seg_len = np.array([min(win, n - s) for s in group], dtype=np.int64)
            segs = np.zeros((len(group), int(seg_len.max())), dtype=np.float32)
            for j, s in enumerate(group):
                segs[j, : seg_len[j]] = wav[s : s + seg_len[j]]
            frames, counts = self.session.run([OUTPUT_FRAMES, OUTPUT_FRAME_LENGTHS],
                                              {INPUT_WAVS: segs, INPUT_LENGTHS: seg_len})
            if kept is None:
                shape = list(frames.shape[1:])
                shape[self.time_axis] = n // hop + 1  # no utterance has more frames
                kept = np.zeros(shape, dtype=np.float32)
            for j, s in enumerate(group):
                k = b + j
                end = s // hop + int(counts[j])  # this window's global end frame
                cut_in = 0 if k == 0 else (s // hop + prev_end) // 2
                cut_out = end if k + 1 == len(starts) else (starts[k + 1] // hop + end) // 2
                a, z = cut_in - s // hop, cut_out - s // hop
                piece = np.take(frames[j], np.arange(a, z), axis=self.time_axis)
                idx = [slice(None)] * kept.ndim
                idx[self.time_axis] = slice(pos, pos + z - a)
                kept[tuple(idx)] = piece
                pos += z - a
                prev_end = end
        idx = [slice(None)] * kept.ndim
        idx[self.time_axis] = slice(0, pos)
        (emb,) = self.pool_session.run([OUTPUT_EMBEDDINGS], {
            OUTPUT_FRAMES: kept[tuple(idx)][None], OUTPUT_FRAME_LENGTHS: np.array([pos])})
        return emb[0].astype(np.float32, copy=False)

    def __call__(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """Embeddings (len(paths), E) float32 of whole audio files, in the order given."""
        for p in paths:
            if not Path(p).is_file():
                raise FileNotFoundError(f"no such audio file: {p}")
        wavs = [read_audio(p, self.sample_rate, self.min_samples) for p in paths]
        win = round(self.window * self.sample_rate) if self.window else 0
        long = [i for i, w in enumerate(wavs) if win and len(w) > win]
        if long and not self.windowed:
            logger.warning(
                "%d file(s) longer than %g s (%s...): this ONNX file (exported before "
                "windowing) embeds them in one pass, where the PyTorch extractor runs the SSL "
                "model in %g s windows; the embeddings differ slightly and memory grows with "
                "the square of the length: re-export it", len(long), self.window,
                paths[long[0]], self.window)
        out = np.zeros((len(wavs), self.embed_dim), dtype=np.float32)
        if self.windowed:
            for i in long:
                out[i] = self.embed_long(wavs[i])
            done = set(long)
            rest = [i for i in range(len(wavs)) if i not in done]
        else:
            rest = list(range(len(wavs)))
        order = sorted(rest, key=lambda i: len(wavs[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch, lengths = pad_batch([wavs[i] for i in rows])
            out[rows] = self.embed_whole(batch, lengths)
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            names = [str(paths[i]) for i in np.flatnonzero(bad)]
            raise FloatingPointError(f"non-finite embeddings for {len(names)} file(s): "
                                     f"{names[:5]}")
        return out
