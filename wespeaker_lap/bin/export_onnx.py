"""Export a trained model directory's extractor to ONNX (waveform + lengths -> embeddings).

    python -m wespeaker_lap.bin.export_onnx --model_dir exp/x --out exp/x/extractor.onnx

Inputs ``wavs`` (batch, samples) float32 at the model's sample rate and
``lengths`` (batch,) int64; output ``embeddings`` (batch, embed_dim). Batch and
samples are dynamic. The file's metadata records the model's identity (see
:mod:`wespeaker_lap.export.identity`); run it with
``wespeaker-lap embed --onnx exp/x/extractor.onnx ...`` (no torch needed).
The pooling graph for long audio is written beside it (``extractor.pool.onnx``).

Reduced precision: ``--quantize int8`` adds ``extractor.int8.onnx`` (dynamic
int8 quantization of the weight matrix products, for CPUs), ``--fp16`` adds
``extractor.fp16.onnx`` (for GPUs). With ``--eer_trials LIST --eer_wav_scp
WAV_SCP`` the EER of the float32 file and of each variant on that list (cosine
scores) is measured and written into each file's metadata (``eer``,
``eer_fp32``, ``eer_change``, in points, ``eer_trials`` and ``eer_batch_size``:
an int8 embedding moves a little with its batch), so a user sees
what the speed costs. ``--quantize`` may be given twice (``int8`` and
``int8_static``), and ``--eer_trials`` / ``--eer_wav_scp`` may name several lists
(in pairs): each metadata value is then comma-separated, one per list, in the
order of ``eer_trials`` (``eer_trials=test,test_unseen``,
``eer_change=+0.0100,-0.0200``):

    python -m wespeaker_lap.bin.export_onnx --model_dir exp/x --quantize int8 \
        --eer_trials data/test/trials.kaldi data/test_unseen/trials.kaldi \
        --eer_wav_scp data/test/wav.scp data/test_unseen/wav.scp
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from wespeaker_lap.export.exporter import OPSET, export_model_dir
from wespeaker_lap.export.runtime import OnnxEmbedder, read_audio
from wespeaker_lap.export.variants import set_metadata, write_variant
from wespeaker_lap.io.files import read_scp
from wespeaker_lap.scoring.metrics import compute_eer
from wespeaker_lap.scoring.score import read_trials
from wespeaker_lap.utils.logging_utils import setup_logging

logger = logging.getLogger(__name__)


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True,
                   help="trained exp_dir (config.yaml + avg_model.pt or models/)")
    p.add_argument("--out", help="output .onnx file (default: MODEL_DIR/extractor.onnx)")
    p.add_argument("--opset", type=int, default=OPSET, help="ONNX opset (>= 17)")
    p.add_argument("--no_verify", action="store_true",
                   help="skip the onnxruntime-vs-PyTorch check on untraced lengths")
    p.add_argument("--quantize", choices=["int8", "int8_static"], action="append",
                   default=[],
                   help="also write OUT.int8.onnx: dynamic int8 quantization (CPU), or "
                        "OUT.int8_static.onnx: static, calibrated on --calib_wav_scp "
                        "(repeatable: --quantize int8 --quantize int8_static)")
    p.add_argument("--calib_wav_scp", help="int8_static: wav.scp to draw calibration audio "
                   "from (e.g. data/train/wav.scp)")
    p.add_argument("--calib_utts", type=int, default=32,
                   help="int8_static: utterances drawn (seed 0)")
    p.add_argument("--calib_seconds", type=float, default=6.0,
                   help="int8_static: seconds kept of each (its start)")
    p.add_argument("--fp16", action="store_true", help="also write OUT.fp16.onnx (GPU)")
    p.add_argument("--eer_trials", nargs="+", default=[],
                   help="trial list(s) (Kaldi or WeSpeaker format, labelled) to measure each "
                   "variant's EER on")
    p.add_argument("--eer_wav_scp", nargs="+", default=[],
                   help="wav.scp of each trial list's utterances (one per list, same order)")
    p.add_argument("--eer_name", nargs="+", default=[],
                   help="name recorded for each trial list (default: its directory's name)")
    p.add_argument("--batch_size", type=int, default=8, help="utterances per run (EER)")
    return p.parse_args(argv)


def measure_eer(onnx_path: Path, trials_path: str, wav_scp: str, batch_size: int) -> float:
    """EER (%) of cosine scores of ``onnx_path``'s embeddings on a labelled trial list."""
    trials = read_trials(trials_path)
    if trials.labels is None:
        raise ValueError(f"{trials_path}: measuring an EER needs a labelled trial list")
    table = read_scp(wav_scp)
    keys = sorted(set(trials.enroll) | set(trials.test))
    missing = [k for k in keys if k not in table]
    if missing:
        raise ValueError(f"{wav_scp} lacks {len(missing)} utterance(s) of {trials_path}: "
                         f"{missing[:3]}")
    emb = OnnxEmbedder(onnx_path, batch_size=batch_size)([table[k] for k in keys])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    row = {k: i for i, k in enumerate(keys)}
    e = emb[[row[k] for k in trials.enroll]]
    t = emb[[row[k] for k in trials.test]]
    return 100.0 * compute_eer((e * t).sum(1), trials.labels)[0]


def check_args(args: argparse.Namespace) -> str | None:
    """The first bad option as a message, or None."""
    if args.opset < 17:
        return f"--opset must be >= 17 (LayerNormalization), got {args.opset}"
    if len(args.eer_trials) != len(args.eer_wav_scp):
        return ("--eer_trials and --eer_wav_scp go together, one wav.scp per trial list: got "
                f"{len(args.eer_trials)} list(s) and {len(args.eer_wav_scp)} wav.scp")
    if args.eer_name and len(args.eer_name) != len(args.eer_trials):
        return (f"--eer_name: {len(args.eer_name)} name(s) for {len(args.eer_trials)} trial "
                "list(s)")
    for opt in ("eer_trials", "eer_wav_scp"):
        for path in getattr(args, opt):
            if not Path(path).is_file():
                return f"--{opt}: no such file {path}"
    names = eer_names(args)
    bad = [n for n in names if not n or "," in n]
    if bad or len(set(names)) != len(names):
        return (f"trial list names {names} must be distinct, non-empty and without commas "
                "(they are joined with commas in the metadata); give --eer_name")
    if len(set(args.quantize)) != len(args.quantize):
        return f"--quantize given twice with the same value: {args.quantize}"
    if args.batch_size < 1:
        return f"--batch_size must be >= 1, got {args.batch_size}"
    if ("int8_static" in args.quantize) != bool(args.calib_wav_scp):
        return "--quantize int8_static and --calib_wav_scp go together"
    if args.calib_wav_scp and not Path(args.calib_wav_scp).is_file():
        return f"--calib_wav_scp: no such file {args.calib_wav_scp}"
    if args.calib_utts < 1 or not args.calib_seconds > 0:
        return "--calib_utts must be >= 1 and --calib_seconds > 0"
    return None


def eer_names(args: argparse.Namespace) -> list[str]:
    """The name recorded for each ``--eer_trials`` list: ``--eer_name`` or its directory's."""
    return list(args.eer_name) or [Path(t).resolve().parent.name for t in args.eer_trials]


def calibration_audio(onnx_path: Path, wav_scp: str, utts: int, seconds: float):
    """Up to ``utts`` utterances of ``wav_scp`` drawn with seed 0, their first ``seconds``."""
    run = OnnxEmbedder(onnx_path)
    table = read_scp(wav_scp)
    keys = sorted(table)
    pick = np.random.default_rng(0).permutation(len(keys))[:utts]
    n = int(seconds * run.sample_rate)
    out = [read_audio(table[keys[i]], run.sample_rate, run.min_samples)[:n] for i in pick]
    logger.info("calibration: %d utterances of %s, up to %g s each", len(out), wav_scp, seconds)
    return out


def _joined(values: list[float], fmt: str = ".4f") -> str:
    """Metadata value of one figure per trial list: ``"8.8800,13.7800"``."""
    return ",".join(format(v, fmt) for v in values)


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    setup_logging()
    bad = check_args(args)
    if bad:
        print(f"export_onnx: error: {bad}", file=sys.stderr)
        return 2
    precisions = list(args.quantize) + (["fp16"] if args.fp16 else [])
    try:
        out = export_model_dir(args.model_dir, args.out, opset=args.opset,
                               verify=not args.no_verify)
        print(f"wrote {out}")
        calib = (calibration_audio(out, args.calib_wav_scp, args.calib_utts, args.calib_seconds)
                 if args.calib_wav_scp else None)
        variants = {p: write_variant(out, p, calibration=calib) for p in precisions}
        for path in variants.values():
            print(f"wrote {path}")
        if args.eer_trials:
            names = eer_names(args)
            lists = list(zip(names, args.eer_trials, args.eer_wav_scp, strict=True))
            base = [measure_eer(out, t, w, args.batch_size) for _, t, w in lists]
            # the int8 variants' embeddings move a little with their batch (export/runtime.py)
            measured = {"eer_trials": ",".join(names), "eer_batch_size": str(args.batch_size)}
            set_metadata(out, {"eer": _joined(base), **measured})
            for name, b in zip(names, base, strict=True):
                print(f"fp32: EER {b:.3f} % on {name}")
            for p, path in variants.items():
                eer = [measure_eer(path, t, w, args.batch_size) for _, t, w in lists]
                # rounded first: a change of -1e-12 (same EER, other scores) reads +0.0000
                change = [round(e - b, 4) + 0.0 for e, b in zip(eer, base, strict=True)]
                set_metadata(path, {"eer": _joined(eer), "eer_fp32": _joined(base),
                                    "eer_change": _joined(change, "+.4f"), **measured})
                for name, e, c in zip(names, eer, change, strict=True):
                    print(f"{p}: EER {e:.3f} % on {name} ({c:+.3f} points)")
    except (OSError, ValueError) as e:
        print(f"export_onnx: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
