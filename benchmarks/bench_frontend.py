"""Frozen SSL forward: real-time factor and peak memory (the floor every backend is measured on).

A WavLM Base+-sized model with random weights (12 layers x 768, 12 heads, FFN 3072,
512-channel CNN) runs frozen on random audio. Each configuration runs in a fresh
subprocess so that peak RSS belongs to it alone.

    python benchmarks/bench_frontend.py                       # full table (2 threads)
    python benchmarks/bench_frontend.py --quick               # tiny model, smoke test

Columns: rtf = wall seconds / seconds of audio processed (lower is faster);
peak_rss = process high-water mark; fwd_mem = high-water mark minus the RSS after
the model was built (what the forward itself needed).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

BASE_PLUS = {
    "model_type": "wavlm",
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "conv_dim": [512] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "feat_extract_norm": "group",
    "do_stable_layer_norm": False,
}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(args: argparse.Namespace) -> dict:
    """Child process: build the model, time the forward, report one row as JSON."""
    import torch

    from wespeaker_lap.frontend import SSLFrontend, tiny_ssl_config

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = tiny_ssl_config("wavlm") if args.quick else BASE_PLUS
    fe = SSLFrontend(config=cfg, dtype=args.dtype)
    n = int(args.seconds * 16000)
    wavs = torch.randn(args.batch, n) * 0.1
    lengths = torch.full((args.batch,), n)
    rss_model = _rss_mib()
    fe(wavs, lengths)  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fe(wavs, lengths)
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "dtype": args.dtype,
        "batch": args.batch,
        "seconds": args.seconds,
        "wall_s": best,
        "rtf": best / (args.batch * args.seconds),
        "peak_rss_mib": _rss_mib(),
        "fwd_mem_mib": _rss_mib() - rss_model,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="timed runs after one warm-up; best kept")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--durations", default="3,30", help="seconds of audio per utterance")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--quick", action="store_true", help="tiny model, short audio: a smoke test")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=3.0, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_one(args)))
        return

    durations = [1.0] if args.quick else [float(x) for x in args.durations.split(",")]
    batches = [2] if args.quick else [int(x) for x in args.batches.split(",")]
    model = "tiny wavlm (random)" if args.quick else "WavLM Base+-sized (random), 12 x 768"
    print(f"# frozen SSL forward: {model}; {args.threads} threads; "
          f"{platform.processor() or platform.machine()}; best of {args.repeats}")
    print("| dtype | batch | audio/utt (s) | wall (s) | RTF | peak RSS (MiB) "
          "| forward mem (MiB) |")
    print("|" + "---|" * 7)
    for dtype in args.dtypes.split(","):
        for seconds in durations:
            for batch in batches:
                cmd = [sys.executable, __file__, "--child", "--dtype", dtype, "--seconds",
                       str(seconds), "--batch", str(batch), "--threads", str(args.threads),
                       "--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                print(f"| {r['dtype']} | {r['batch']} | {r['seconds']:g} | {r['wall_s']:.2f} | "
                      f"{r['rtf']:.3f} | {r['peak_rss_mib']:.0f} | {r['fwd_mem_mib']:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
