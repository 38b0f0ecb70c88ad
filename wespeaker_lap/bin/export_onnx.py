"""Export a trained model directory's extractor to ONNX (waveform + lengths -> embeddings).

    python -m wespeaker_lap.bin.export_onnx --model_dir exp/x --out exp/x/extractor.onnx

Inputs ``wavs`` (batch, samples) float32 at the model's sample rate and
``lengths`` (batch,) int64; output ``embeddings`` (batch, embed_dim). Batch and
samples are dynamic. The file's metadata records the model's identity (see
:mod:`wespeaker_lap.export.identity`); run it with
``wespeaker-lap embed --onnx exp/x/extractor.onnx ...`` (no torch needed).
"""

from __future__ import annotations

import argparse
import sys

from wespeaker_lap.export.exporter import OPSET, export_model_dir
from wespeaker_lap.utils.logging_utils import setup_logging


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True,
                   help="trained exp_dir (config.yaml + avg_model.pt or models/)")
    p.add_argument("--out", help="output .onnx file (default: MODEL_DIR/extractor.onnx)")
    p.add_argument("--opset", type=int, default=OPSET, help="ONNX opset (>= 17)")
    p.add_argument("--no_verify", action="store_true",
                   help="skip the onnxruntime-vs-PyTorch check on untraced lengths")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    setup_logging()
    if args.opset < 17:
        print(f"export_onnx: error: --opset must be >= 17 (LayerNormalization), got {args.opset}",
              file=sys.stderr)
        return 2
    try:
        out = export_model_dir(args.model_dir, args.out, opset=args.opset,
                               verify=not args.no_verify)
    except (OSError, ValueError) as e:
        print(f"export_onnx: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
