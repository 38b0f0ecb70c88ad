"""Print the dtype that ``dtype: auto`` (and ``enable_amp: auto``) resolves to here.

    python -m wespeaker_lap.bin.probe_precision            # bfloat16 or float32 (stdout)
    python -m wespeaker_lap.bin.probe_precision --device cuda

The reason (the CPU probe's GFLOP/s, a CPU without bfloat16 kernels, a probe that
failed) goes to stderr. Recipes call this once, so that every stage of a run uses
the same precision and its sizes can follow it (``examples/mini/run.sh``).
"""

from __future__ import annotations

import argparse
import sys

import torch

from wespeaker_lap.frontend.precision import auto_dtype, dtype_name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("probe_precision: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype, why = auto_dtype(args.device)
    print(dtype_name(dtype))
    print(f"probe_precision: {dtype_name(dtype)} on {args.device} ({why})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
