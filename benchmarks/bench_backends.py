"""Backend cost: forward + backward of every speaker model on frozen SSL hidden states.

One training step's backend work (train mode, gradients for the backend only,
the hidden states need none since the frontend is frozen) on a batch of
32 x 2 s (99 frames at 20 ms) of Base+-sized (13 x 768) and Large-sized
(25 x 1024) hidden states, on CPU.

    python benchmarks/bench_backends.py                    # full table, 2 threads
    python benchmarks/bench_backends.py --repeats 1 --models LAP_ASTP,LAP_ASTP_naive
    python benchmarks/bench_backends.py --quick            # tiny sizes, smoke test

``LAP_ASTP_naive`` is the reference in ``benchmarks/lap_reference.py``, written in
the LAP authors' layout; it computes the same function as ``LAP_ASTP``
(``tests/test_models_lap.py`` loads the same weights into both and compares).

Columns: params = trainable backend parameters; fwd+bwd = best wall seconds of
one forward + backward; x frontend = that time over the frozen frontend forward
of the same batch (from ``benchmarks/bench_frontend.py``; pass its real-time
factor with ``--frontend-rtf``/``--frontend-rtf-large``).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time

import torch
from lap_reference import NaiveLAP_ASTP
from torch import nn

from wespeaker_lap.models import SPEAKER_MODELS, get_speaker_model
from wespeaker_lap.models.common import count_parameters

# WavLM Base+ frozen forward, batch 32 x 2 s, fp32, 2 threads, measured on the project's
# machine: 7.93 s / 64 s.
BASE_PLUS_FRONTEND_RTF = 7.93 / 64.0


def build(name: str, feat_dim: int, num_layers: int) -> nn.Module:
    if name == "LAP_ASTP_naive":
        return NaiveLAP_ASTP(feat_dim, num_layers)
    return get_speaker_model(name, feat_dim=feat_dim, num_layers=num_layers)


def time_step(model: nn.Module, x: torch.Tensor, lengths: torch.Tensor, repeats: int,
              amp: bool) -> float:
    """Best wall seconds of forward + backward (after one warm-up step)."""
    model.train()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    best = float("inf")
    for i in range(repeats + 1):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        with ctx:
            out = model(x, lengths)
        out.float().square().mean().backward()
        if i:
            best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed steps after a warm-up; best kept")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--frames", type=int, default=99, help="frames per utterance (2 s = 99)")
    p.add_argument("--models", default=",".join(["LAP_ASTP_naive", *SPEAKER_MODELS]),
                   help="comma-separated registry names (and LAP_ASTP_naive)")
    p.add_argument("--sizes", default="base,large", help="base (13 x 768), large (25 x 1024)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (the CPU's AMP)")
    p.add_argument("--frontend-rtf", type=float, default=BASE_PLUS_FRONTEND_RTF,
                   help="frozen Base+ frontend real-time factor (bench_frontend.py); "
                        "default: 7.93 s per 32 x 2 s, fp32, measured on the project's machine")
    p.add_argument("--frontend-rtf-large", type=float, default=None,
                   help="the same for a Large frontend (no ratio column when absent)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and one repeat: smoke test")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    sizes = {"base": (13, 768), "large": (25, 1024)}
    if args.quick:
        sizes = {"base": (5, 64), "large": (7, 96)}
        args.batch, args.frames, args.repeats = 4, 20, 1
    wanted = [s for s in args.sizes.split(",") if s]
    for s in wanted:
        if s not in sizes:
            raise SystemExit(f"unknown size {s!r}; valid: {sorted(sizes)}")
    names = [n for n in args.models.split(",") if n]
    rtf = {"base": args.frontend_rtf, "large": args.frontend_rtf_large}
    if args.quick:
        rtf = {"base": None, "large": None}  # tiny sizes: a ratio would mean nothing
    audio_s = args.batch * args.frames * 0.02

    print(f"# backend forward + backward, batch {args.batch} x {args.frames} frames, "
          f"{'bf16 autocast' if args.amp else 'fp32'}, {args.threads} threads, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"best of {args.repeats}")
    head = "| backend |"
    for s in wanted:
        head += f" params {s} | fwd+bwd {s} (s) |" + (" x frontend |" if rtf[s] else "")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name in names:
        row = f"| {name} |"
        for s in wanted:
            num_layers, dim = sizes[s]
            torch.manual_seed(0)
            model = build(name, dim, num_layers)
            x = torch.randn(args.batch, num_layers, args.frames, dim)
            lengths = torch.full((args.batch,), args.frames)
            sec = time_step(model, x, lengths, args.repeats, args.amp)
            row += f" {count_parameters(model) / 1e6:.2f}M | {sec:.3f} |"
            if rtf[s]:
                row += f" {sec / (rtf[s] * audio_s):.2f} |"
            del model, x
        print(row, flush=True)


if __name__ == "__main__":
    main()
