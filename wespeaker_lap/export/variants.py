"""Reduced-precision variants of an exported extractor: int8 (CPU) and float16 (GPU).

    int8_path = write_variant("exp/x/extractor.onnx", "int8")    # exp/x/extractor.int8.onnx

* ``int8``: onnxruntime's dynamic quantization (``quantize_dynamic``) of the
  matrix products whose second operand is a weight (``MatMul`` / ``Gemm``: the
  Transformer's projections and feed-forward layers, the backend's linear
  layers), int8 weights with per-tensor scales, activations quantized at run
  time. Attention's activation-by-activation products and the CNN stay float32.
* ``int8_static``: static quantization (``quantize_static``, QDQ format) of the
  same matrix products, activations' ranges calibrated (min/max) on audio given
  as waveforms, e.g. crops of utterances drawn from the training list
  (``bin/export_onnx --quantize int8_static --calib_wav_scp data/train/wav.scp``).
* ``fp16``: every float tensor and operator in float16 (onnxruntime's
  ``convert_float_to_float16``), inputs and outputs kept float32. For GPUs:
  onnxruntime's CPU provider lacks float16 kernels for several operators, so
  loading it on the CPU is a clear error.

A variant carries the original's metadata plus ``precision`` and shares its
pooling graph (float32, small), so it windows long audio the same way. Its
EER change on a named trial list, when measured (``bin/export_onnx --eer_trials``),
is written into the metadata too (:func:`set_metadata`).

numpy, onnx and onnxruntime only: no torch.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from wespeaker_lap.export.identity import PREFIX

#: Precisions a variant can have, besides the exported float32.
PRECISIONS = ("int8", "int8_static", "fp16")


def variant_path(onnx_path: str | os.PathLike, precision: str) -> Path:
    """``x.onnx`` -> ``x.int8.onnx`` (or ``x.fp16.onnx``) beside it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    p = Path(onnx_path)
    stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.name
    return p.with_name(f"{stem}.{precision}.onnx")


def _onnx():
    try:
        import onnx
    except ImportError as e:
        raise ImportError('reduced-precision variants need onnx and onnxruntime: pip install '
                          '"wespeaker-lap[export]"') from e
    return onnx


def set_metadata(path: str | os.PathLike, values: Mapping[str, str]) -> None:
    """Set (or replace) prefixed ``metadata_props`` of the ONNX file ``path``, in place
    (written to a temporary file and renamed)."""
    onnx = _onnx()
    path = Path(path)
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update({PREFIX + k: str(v) for k, v in values.items()})
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over waveforms, one per run."""

    def __init__(self, wavs: Iterable[np.ndarray]):
        self._it = iter(list(wavs))

    def get_next(self):
        wav = next(self._it, None)
        if wav is None:
            return None
        wav = np.ascontiguousarray(wav, dtype=np.float32)
        return {"wavs": wav[None], "lengths": np.array([len(wav)], dtype=np.int64)}


def write_variant(onnx_path: str | os.PathLike, precision: str,
                  out: str | os.PathLike | None = None,
                  calibration: Iterable[np.ndarray] | None = None) -> Path:
    """Write the ``precision`` variant of the exported file ``onnx_path``; -> its path.

    ``out`` defaults to :func:`variant_path`; it must lie beside ``onnx_path``
    (it names the same pooling graph). ``calibration``: waveforms (N,) float32 at
    the model's rate, for ``int8_static`` (required there).
    """
    onnx = _onnx()
    src = Path(onnx_path)
    out = Path(out) if out is not None else variant_path(src, precision)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if out.resolve().parent != src.resolve().parent:
        raise ValueError(f"{out}: a variant is written beside {src} (it shares its pooling "
                         "graph)")
    model = onnx.load(str(src))
    meta = {p.key: p.value for p in model.metadata_props}
    if PREFIX + "fingerprint" not in meta:
        raise ValueError(f"{src} was not exported by wespeaker_lap.bin.export_onnx (no "
                         "metadata); export the model first")
    if precision == "int8_static" and calibration is None:
        raise ValueError("int8_static quantization needs calibration audio "
                         "(--calib_wav_scp)")
    if meta.get(PREFIX + "precision", "fp32") != "fp32":
        raise ValueError(f"{src} is already a {meta[PREFIX + 'precision']} variant; start "
                         "from the float32 export")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp.onnx", dir=out.parent)
    os.close(fd)
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        if precision == "int8":
            quantize_dynamic(str(src), tmp, op_types_to_quantize=["MatMul", "Gemm"],
                             weight_type=QuantType.QInt8)
        elif precision == "int8_static":
            from onnxruntime.quantization import QuantFormat, quantize_static

            quantize_static(str(src), tmp, _Calibration(calibration),
                            quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=["MatMul", "Gemm"],
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        else:
            from onnxruntime.transformers.float16 import convert_float_to_float16

            onnx.save(convert_float_to_float16(model, keep_io_types=True), tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # quantize_dynamic keeps metadata_props in some versions and not in others: set them all
    set_metadata(out, {**{k[len(PREFIX):]: v for k, v in meta.items() if k.startswith(PREFIX)},
                       "precision": precision})
    return out
