"""Long audio: time and peak memory of one embedding, from 10 s to an hour.

A WavLM Base+-sized random model (12 x 768, the real model's sizes; no weights
are downloaded) with the LAP_ASTP backend, frozen, fp32, batch 1, through
``SpeakerEmbeddingExtractor.embed``: audio longer than 20 s runs through the SSL
model in 20 s windows overlapping by 4 s, and only LAP's per-frame output is
kept for the pooling. Each length runs in its own child process, so its peak
RSS (``ru_maxrss``) is its own; "s per s" is wall seconds per second of audio
(the real-time factor), which stays flat when the cost grows linearly.

    python benchmarks/bench_long_audio.py                       # 10 s .. 20 min
    python benchmarks/bench_long_audio.py --seconds 10 60 3600  # the hour
    python benchmarks/bench_long_audio.py --quick               # tiny model, seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_frontend import BASE_PLUS  # noqa: E402 - a sibling script

from wespeaker_lap.frontend.testing import tiny_ssl_config  # noqa: E402
from wespeaker_lap.models import build_extractor  # noqa: E402

SR = 16000


def child(seconds: float, quick: bool, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = {"frontend": "ssl",
           "frontend_args": {"config": tiny_ssl_config("wavlm") if quick else BASE_PLUS},
           "model": "LAP_ASTP", "model_args": {"embed_dim": 192}}
    ext = build_extractor(cfg).eval()
    wav = torch.randn(1, int(seconds * SR)) * 0.1
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    c0 = time.process_time()
    emb = ext.embed(wav)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert torch.isfinite(emb).all()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "wall": wall, "cpu": cpu, "peak_mb": peak,
            "added_mb": peak - before}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, nargs="+", default=[10, 30, 60, 120, 600, 1200])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny model (a smoke test)")
    p.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.quick, args.threads)))
        return 0
    print(f"# {cpu_model()}, torch {torch.__version__}, "
          f"{args.threads} threads, {'tiny' if args.quick else 'WavLM Base+-sized'} + LAP_ASTP")
    print("| audio | wall s | CPU s | s per s (wall) | peak RSS MB | added MB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for s in args.seconds:
        cmd = [sys.executable, __file__, "--child", str(s), "--threads", str(args.threads)]
        if args.quick:
            cmd.append("--quick")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        label = f"{s / 60:g} min" if s >= 60 else f"{s:g} s"
        print(f"| {label} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['wall'] / s:.3f} | "
              f"{r['peak_mb']:.0f} | {r['added_mb']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
