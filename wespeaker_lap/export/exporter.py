"""Export a trained extractor to ONNX: raw waveform + lengths -> embeddings, dynamic axes.

    python -m wespeaker_lap.bin.export_onnx --model_dir exp/x --out exp/x/extractor.onnx

The graph takes ``wavs`` (batch, samples) float32, zero-padded, at the model's
sample rate, and ``lengths`` (batch,) int64 valid samples; it returns
``embeddings`` (batch, embed_dim) float32. Both the batch and the samples axes
are dynamic. The exported graph is batch-independent like the PyTorch
extractor: every padding mask (input normalisation, the CNN's time GroupNorm,
the Transformer's attention, the backend's pooling) is computed from
``lengths`` inside the graph.

Export uses PyTorch's TorchScript-based ONNX exporter (``torch.onnx.export``
with ``dynamo=False``), opset 17. On torch 2.13 it exports a tiny extractor in
about 5 s, where the ``torch.export``-based exporter (``dynamo=True``) took 45-90 s
for the same tiny WavLM extractor on this project's machine and gave the same
embeddings (to 5e-7). The TorchScript exporter is deprecated upstream; should it
go, ``dynamo=True`` is the way (``models/common.lengths_to_mask`` already skips
its Python-side check under ``torch.export``).

The graph runs the whole utterance in one pass at any length (the PyTorch
extractor's ``embed`` windows audio longer than ``LONG_AUDIO_WINDOW``; the two
agree up to that length). Tracing records one path through the Python code, so
an export is only accepted after onnxruntime reproduced PyTorch on inputs of
other lengths and batch sizes than the traced one (:func:`verify_onnx`).
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wespeaker_lap.export.identity import (
    INPUT_LENGTHS,
    INPUT_WAVS,
    OUTPUT_EMBEDDINGS,
    OUTPUT_FRAME_LENGTHS,
    OUTPUT_FRAMES,
    PREFIX,
    fingerprint,
    model_metadata,
    pool_graph_path,
    sha256_of,
)
from wespeaker_lap.export.runtime import OnnxEmbedder
from wespeaker_lap.frontend.fbank import (
    FFT_LENGTH,
    FRAME_LENGTH,
    FRAME_SHIFT,
    MEL_FLOOR,
    PREEMPHASIS,
    StackedFbank,
)
from wespeaker_lap.frontend.ssl import SSLFrontend
from wespeaker_lap.io.files import atomic_path
from wespeaker_lap.models.extractor import (
    LONG_AUDIO_OVERLAP,
    LONG_AUDIO_WINDOW,
    SpeakerEmbeddingExtractor,
)
from wespeaker_lap.models.inference import load_trained_extractor, resolve_model_dir
from wespeaker_lap.models.interfaces import FramePoolingBackend

logger = logging.getLogger(__name__)

#: ONNX opset of the exported graph.
OPSET = 17


def _onnx():
    try:
        import onnx
    except ImportError as e:
        raise ImportError('ONNX export needs onnx and onnxruntime: pip install '
                          '"wespeaker-lap[export]"') from e
    return onnx


class MaskedGroupNorm(nn.GroupNorm):
    """One-group-per-channel GroupNorm over each utterance's valid frames, without a Python loop.

    The trace-friendly twin of the frontend's ``LengthAwareGroupNorm`` (same
    parameters): statistics from a frame mask built from :attr:`valid_frames`
    (``(B,)``), in float32; padded frames come out as zeros. x: (B, C, T) -> (B, C, T).
    """

    valid_frames: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.valid_frames is None:
            return super().forward(x)
        mask = (torch.arange(x.shape[-1], device=x.device)[None, :]
                < self.valid_frames[:, None]).to(torch.float32)[:, None, :]
        count = mask.sum(-1, keepdim=True).clamp(min=1.0)
        xf = x.float()
        mean = (xf * mask).sum(-1, keepdim=True) / count
        var = (((xf - mean) * mask) ** 2).sum(-1, keepdim=True) / count
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight.float()[None, :, None] + self.bias.float()[None, :, None]
        return (y * mask).to(x.dtype)


def _dft_basis(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and -sin of the real DFT of FRAME_LENGTH samples padded to FFT_LENGTH: (400, 257)."""
    n = np.arange(FRAME_LENGTH)[:, None]
    k = np.arange(FFT_LENGTH // 2 + 1)[None, :]
    angle = 2.0 * np.pi * ((n * k) % FFT_LENGTH) / FFT_LENGTH
    return (torch.from_numpy(np.cos(angle)).float().to(device),
            torch.from_numpy(-np.sin(angle)).float().to(device))


class TraceableFbank(StackedFbank):
    """:class:`StackedFbank` with framing by index (not ``unfold``, which the exporter cannot
    size), the power spectrum as DFT matrix products (the exporter has no ``rfft``) and
    frame stacking sized from shapes (not ``int(frame_lengths.max())``).

    Same buffers and the same function: valid frames equal ``StackedFbank``'s to float
    rounding.
    forward(wavs (B, N), lengths (B,)) -> (B, T, num_mel_bins * stride), (B,)
    """

    def log_mel(self, wavs: torch.Tensor) -> torch.Tensor:
        x = wavs.float() * 32768.0
        starts = torch.arange(0, x.shape[1] - FRAME_LENGTH + 1, FRAME_SHIFT, device=x.device)
        idx = starts[:, None] + torch.arange(FRAME_LENGTH, device=x.device)[None, :]
        frames = x[:, idx]  # (B, F, 400)
        frames = frames - frames.mean(-1, keepdim=True)
        first = frames[..., :1] * (1.0 - PREEMPHASIS)
        emph = torch.cat((first, frames[..., 1:] - PREEMPHASIS * frames[..., :-1]), dim=-1)
        # |rfft|^2 as two matrix products with the DFT basis (the TorchScript exporter has
        # no rfft): zero padding to FFT_LENGTH only adds zero terms
        cos, sin = _dft_basis(x.device)
        w = emph * self.window
        spec = (w @ cos).square() + (w @ sin).square()  # (B, F, FFT_LENGTH // 2 + 1)
        return torch.log(torch.clamp(spec @ self.mel, min=MEL_FLOOR))

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor):
        feats, frame_lengths = self.normalized_log_mel(wavs, lengths)
        # frames k, k + stride, ...: the last phase has the fewest (F // stride) frames
        last = feats[:, self.stride - 1 :: self.stride]
        parts = [feats[:, k :: self.stride][:, : last.shape[1]] for k in range(self.stride)]
        stacked = torch.stack(parts, dim=2).flatten(2)  # (B, T, stride * M)
        keep = (torch.arange(stacked.shape[1], device=feats.device)[None, :]
                < frame_lengths[:, None])
        return stacked * keep[..., None], frame_lengths


def _transformers_base(cls: type, name: str) -> type | None:
    for base in cls.__mro__:
        if base.__name__ == name and base.__module__.startswith("transformers."):
            return base
    return None


def make_traceable(fe: SSLFrontend) -> None:
    """Swap, in place, the frontend modules whose forward a trace would freeze.

    * w2v-BERT's fbank becomes a :class:`TraceableFbank`.
    * The CNN's length-aware GroupNorm becomes a :class:`MaskedGroupNorm` (a loop over
      the utterances of the batch would be unrolled for the traced batch).
    * Re-classed WavLM attention modules (a subclass of transformers'
      ``WavLMAttention``, e.g. one that splits queries into blocks sized from the
      input length) go back to transformers' own class, whose forward has no
      Python-side shape arithmetic. Parameters are untouched.
    """
    fbank = getattr(fe, "fbank", None)
    if isinstance(fbank, StackedFbank):
        fbank.__class__ = TraceableFbank
    gn = getattr(fe, "_groupnorm", None)
    if gn is not None and not isinstance(gn, MaskedGroupNorm):
        new = MaskedGroupNorm(gn.num_groups, gn.num_channels, gn.eps, gn.affine)
        new.load_state_dict(gn.state_dict())
        new.to(device=gn.weight.device, dtype=gn.weight.dtype)
        fe.model.feature_extractor.conv_layers[0].layer_norm = new
        fe._groupnorm = new
    for module in fe.modules():
        base = _transformers_base(type(module), "WavLMAttention")
        if base is not None and type(module) is not base:
            module.__class__ = base


class TraceableExtractor(nn.Module):
    """A copy of the extractor whose forward a trace keeps dynamic in batch and time.

    Besides the embeddings it returns what a window of long audio contributes:
    the backend's per-frame output (``frame_features``, (B, T, C)) for a
    :class:`~wespeaker_lap.models.interfaces.FramePoolingBackend`, else the SSL
    hidden states (B, L, T, D), and the valid frames (B,).

    Same computation as ``SpeakerEmbeddingExtractor.forward`` on a frozen
    :class:`~wespeaker_lap.frontend.SSLFrontend` (checked by :func:`verify_onnx`),
    with what matters only to a trace changed: the frame masks are sized from
    tensor shapes instead of ``int(frame_lengths.max())`` (which a trace would
    freeze to the traced input's length); the modules :func:`make_traceable`
    swaps; and the input checks (Python, so not part of a graph) are left to the
    caller (:class:`~wespeaker_lap.export.runtime.OnnxEmbedder` checks lengths
    before each run). Any other frontend is called as it is.

    forward(wavs (B, N) float32, lengths (B,) int64)
        -> (embeddings (B, embed_dim) float32, frames, frame_lengths (B,) int64)
    """

    def __init__(self, extractor: SpeakerEmbeddingExtractor):
        super().__init__()
        self.extractor = copy.deepcopy(extractor)
        if isinstance(self.extractor.frontend, SSLFrontend):
            make_traceable(self.extractor.frontend)

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor):
        fe = self.extractor.frontend
        if isinstance(fe, SSLFrontend):
            hidden, frame_lengths = self._ssl_hidden(fe, wavs, lengths)
        else:
            hidden, frame_lengths = fe(wavs, lengths)
        backend = self.extractor.backend
        if isinstance(backend, FramePoolingBackend):
            frames, _ = backend.frame_features(hidden, frame_lengths)
            return backend.pool_frames(frames, frame_lengths), frames, frame_lengths
        return backend(hidden, frame_lengths), hidden, frame_lengths

    def _ssl_hidden(self, fe: SSLFrontend, wavs: torch.Tensor, lengths: torch.Tensor):
        """SSLFrontend._forward with shape-sized masks: -> (B, L, T, D), (B,)."""
        x, input_mask, frame_lengths = fe._model_inputs(wavs, lengths)
        # The positional-conv hooks slice this mask to their output length; sized by the
        # input axis, it is longer than any frame axis and needs no frame count.
        fe._frame_mask = (torch.arange(x.shape[1], device=wavs.device)[None, :]
                          < frame_lengths[:, None])
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
                out = fe.model(x.to(fe.dtype), attention_mask=input_mask.long(),
                               output_hidden_states=True)
        finally:
            if fe._groupnorm is not None:
                fe._groupnorm.valid_frames = None
            fe._frame_mask = None
        hidden = torch.stack([out.hidden_states[i] for i in fe.layers], dim=1).float()
        t = hidden.shape[2]
        frame_mask = torch.arange(t, device=wavs.device)[None, :] < frame_lengths[:, None]
        return hidden * frame_mask[:, None, :, None], frame_lengths


class TraceablePooling(nn.Module):
    """The utterance-level part of the backend: what runs once over all windows' frames.

    ``pool_frames`` of a :class:`~wespeaker_lap.models.interfaces.FramePoolingBackend`
    (frames (B, T, C)), else the whole backend on concatenated hidden states
    (B, L, T, D), as ``SpeakerEmbeddingExtractor.embed`` does.
    forward(frames, frame_lengths (B,) int64) -> (B, embed_dim) float32
    """

    def __init__(self, backend: nn.Module):
        super().__init__()
        self.backend = copy.deepcopy(backend)

    def forward(self, frames: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        if isinstance(self.backend, FramePoolingBackend):
            return self.backend.pool_frames(frames, frame_lengths)
        return self.backend(frames, frame_lengths)


def audio_contract(extractor: nn.Module) -> tuple[int, int]:
    """``(sample rate, shortest input in samples)``, as the extractor's frontend reports them."""
    fe = extractor.frontend
    return int(fe.sample_rate), int(fe.min_samples)


def example_input(sample_rate: int, min_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The traced input: two utterances of different lengths (1 s and 0.6 s), zero-padded.

    A padded batch makes the trace take the masked path of every module.
    """
    n = max(sample_rate, 4 * min_samples)
    lengths = torch.tensor([n, max(min_samples, int(0.6 * n))])
    gen = torch.Generator().manual_seed(0)
    wavs = 0.1 * torch.randn(2, n, generator=gen)
    wavs[1, lengths[1]:] = 0.0
    return wavs, lengths


def _export_quietly(module: nn.Module, args: tuple, path: Path, opset: int,
                    input_names: list[str], output_names: list[str],
                    dynamic_axes: dict[str, dict[int, str]]) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        # the trace warns about every Python-side int()/bool() it freezes; those are
        # the input checks and the verification tests other shapes
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        # gathers with negative indices would be wrong; the indices here are frame
        # counts - 1 >= 0 because the runtime rejects inputs shorter than min_samples
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        # strided slices (w2v-BERT's frame stacking) are computed at run time
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset,
                          input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, do_constant_folding=True)


def _write_metadata(path: Path, metadata: dict[str, str]) -> None:
    onnx = _onnx()
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "wespeaker_lap"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def window_metadata(extractor: SpeakerEmbeddingExtractor, window: float = LONG_AUDIO_WINDOW,
                    overlap: float = LONG_AUDIO_OVERLAP) -> dict[str, str]:
    """The metadata the runtime windows long audio by, as ``extractor.embed`` does."""
    time_axis = 1 if isinstance(extractor.backend, FramePoolingBackend) else 2
    return {PREFIX + "long_audio_window": f"{float(window):g}",
            PREFIX + "long_audio_overlap": f"{float(overlap):g}",
            PREFIX + "hop_samples": str(int(extractor.frontend.hop_samples)),
            PREFIX + "frames_time_axis": str(time_axis)}


def export_extractor(extractor: SpeakerEmbeddingExtractor, out: str | os.PathLike,
                     metadata: dict[str, str], opset: int = OPSET,
                     verify: bool = True, atol: float = 1e-4) -> Path:
    """Write ``extractor`` (frozen, float32, CPU) to the ONNX file ``out`` with ``metadata``.

    Two graphs are written: ``out``, the whole extractor (embeddings, and the
    per-frame output a window of long audio contributes), and beside it
    ``x.pool.onnx`` (:func:`~wespeaker_lap.export.identity.pool_graph_path`), the
    utterance-level pooling that runs once over all windows' frames. ``out``'s
    metadata names the pooling graph and its sha256, so a mismatched pair is
    refused. Both are written atomically and, with ``verify``, only after
    :func:`verify_onnx` accepted them. Returns ``out``.
    """
    out = Path(out)
    pool_out = pool_graph_path(out)
    extractor = extractor.to("cpu").eval()
    wrapped = TraceableExtractor(extractor).eval()
    pooling = TraceablePooling(extractor.backend).eval()
    wavs, lengths = example_input(*audio_contract(extractor))
    meta = {**metadata, **window_metadata(extractor)}
    time_axis = int(meta[PREFIX + "frames_time_axis"])
    with atomic_path(pool_out) as pool_tmp, atomic_path(out) as tmp:
        _export_quietly(wrapped, (wavs, lengths), tmp, opset, [INPUT_WAVS, INPUT_LENGTHS],
                        [OUTPUT_EMBEDDINGS, OUTPUT_FRAMES, OUTPUT_FRAME_LENGTHS],
                        {INPUT_WAVS: {0: "batch", 1: "samples"}, INPUT_LENGTHS: {0: "batch"},
                         OUTPUT_EMBEDDINGS: {0: "batch"},
                         OUTPUT_FRAMES: {0: "batch", time_axis: "frames"},
                         OUTPUT_FRAME_LENGTHS: {0: "batch"}})
        with torch.no_grad():
            _, frames, frame_lengths = wrapped(wavs, lengths)
        _export_quietly(pooling, (frames, frame_lengths), pool_tmp, opset,
                        [OUTPUT_FRAMES, OUTPUT_FRAME_LENGTHS], [OUTPUT_EMBEDDINGS],
                        {OUTPUT_FRAMES: {0: "batch", time_axis: "frames"},
                         OUTPUT_FRAME_LENGTHS: {0: "batch"}, OUTPUT_EMBEDDINGS: {0: "batch"}})
        _write_metadata(pool_tmp, {**meta, PREFIX + "role": "pool"})
        meta[PREFIX + "pool_graph"] = pool_out.name
        meta[PREFIX + "pool_sha256"] = sha256_of(pool_tmp)
        _write_metadata(tmp, meta)
        if verify:
            verify_onnx(extractor, tmp, atol=atol, pool_path=pool_tmp)
    logger.info("wrote %s (%.1f MB) and its pooling graph %s", out,
                out.stat().st_size / 2**20, pool_out.name)
    return out


def verify_onnx(extractor: SpeakerEmbeddingExtractor, onnx_path: str | os.PathLike,
                length_sets: Sequence[Sequence[int]] | None = None,
                atol: float = 1e-4, pool_path: str | os.PathLike | None = None) -> float:
    """Check onnxruntime against PyTorch on batches the trace did not see; -> max |diff|.

    ``length_sets``: per batch, the utterance lengths in samples (padded to the
    longest); by default one long utterance alone, and three utterances of
    different lengths padded together. Then the windowed path: an utterance of
    2.7 s in 1 s windows overlapping by 0.3 s, against ``extractor.embed`` with
    the same windows. A difference above ``atol`` is a ``RuntimeError``.
    ``pool_path``: the pooling graph, when not yet under the name the metadata gives.
    """
    rate, shortest = audio_contract(extractor)
    if length_sets is None:
        length_sets = [[int(1.7 * rate)], [int(1.3 * rate), int(0.45 * rate), shortest + 77]]
    session = OnnxEmbedder(onnx_path, pool_path=pool_path)
    rng = np.random.default_rng(0)
    worst = 0.0

    def check(got, ref, what):
        nonlocal worst
        diff = float(np.max(np.abs(got - ref)))
        worst = max(worst, diff)
        if not diff <= atol:
            raise RuntimeError(
                f"the exported graph {onnx_path} differs from PyTorch by {diff:.3g} > {atol:g} "
                f"on {what}: the trace froze a shape or a branch (see TraceableExtractor)")

    for lens in length_sets:
        wavs = np.zeros((len(lens), max(lens)), dtype=np.float32)
        for i, n in enumerate(lens):
            wavs[i, :n] = 0.1 * rng.standard_normal(n)
        lengths = np.asarray(lens, dtype=np.int64)
        with torch.no_grad():
            ref = extractor(torch.from_numpy(wavs), torch.from_numpy(lengths)).float().numpy()
        check(session.embed_waveforms(wavs, lengths), ref, f"a batch of lengths {list(lens)}")
    if session.windowed:
        wav = (0.1 * rng.standard_normal(int(2.7 * rate))).astype(np.float32)
        ref = extractor.embed(torch.from_numpy(wav[None]), window=1.0, overlap=0.3)
        got = session.embed_long(wav, window=1.0, overlap=0.3)
        check(got[None], ref.float().numpy(), "2.7 s in 1 s windows (overlap 0.3 s)")
    logger.info("onnxruntime matches PyTorch within %.2g on %d batches and a windowed utterance",
                worst, len(length_sets))
    return worst


def export_model_dir(model_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                     opset: int = OPSET, verify: bool = True) -> Path:
    """Export the trained model of an experiment directory; -> the ONNX file written.

    The extractor is loaded with :func:`~wespeaker_lap.models.inference.load_trained_extractor`
    (so every check made when loading a trained model applies), frozen, float32.
    ``out`` defaults to ``model_dir/extractor.onnx``. The metadata records the
    embedding size, the sample rate, the shortest input and the fingerprint of
    ``config.yaml`` + the weights file.
    """
    model_dir = Path(model_dir)
    config, weights = resolve_model_dir(model_dir)
    out = Path(out) if out is not None else model_dir / "extractor.onnx"
    extractor = load_trained_extractor(config, weights, "cpu", "float32")
    fe = extractor.frontend
    sample_rate, min_samples = audio_contract(extractor)
    meta = model_metadata(
        embed_dim=extractor.embed_dim, sample_rate=sample_rate, min_samples=min_samples,
        fingerprint=fingerprint(config, weights),
        weights=weights.relative_to(model_dir).as_posix(),
        model=type(extractor.backend).__name__,
        frontend=str(getattr(getattr(getattr(fe, "model", None), "config", None), "model_type",
                             type(fe).__name__)),
        long_audio_window=LONG_AUDIO_WINDOW,
    )
    return export_extractor(extractor, out, meta, opset=opset, verify=verify)
