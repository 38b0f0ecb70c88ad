"""Frozen SSL forward: time and peak memory per dtype, attention path and input shape.

A WavLM Base+-sized model with random weights (12 layers x 768, 12 heads, FFN 3072,
512-channel CNN) runs frozen through ``SSLFrontend`` on random audio. Each row runs
in a fresh subprocess so that its peak RSS belongs to it alone.

    python benchmarks/bench_frontend.py                  # the README table (2 threads)
    python benchmarks/bench_frontend.py --quick          # tiny model, smoke test
    python benchmarks/bench_frontend.py --shapes 8x3 --attentions sdpa,eager,transformers

Rows: ``shape`` is batch x seconds per utterance; attention ``transformers`` is the
plain transformers model (eager attention, padding mask passed, no frontend), and
``transformers-frozen`` the same with its parameters' ``requires_grad`` off;
``windowed`` rows run
``SSLFrontend.forward_windows`` (default 20 s windows, 4 s overlap) instead of one
whole-utterance forward. Columns: wall = best wall-clock seconds of the timed runs;
cpu = process CPU seconds of that run (all threads; steadier than wall on a shared
machine); RTF = wall / seconds of audio; peak RSS = the process's high-water mark;
forward mem = peak RSS minus the RSS after the model was built and warmed up.
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


def _plain_transformers(cfg: dict, dtype, frozen: bool = False):
    """The same model as transformers runs it (eager WavLM attention, no batch-independence
    machinery), with the padding mask passed: the reference the frontend is compared with.
    ``frozen``: parameters set to ``requires_grad=False``, as a frozen frontend has them."""
    import torch
    import transformers

    cfg = dict(cfg)
    del cfg["model_type"]
    model = transformers.WavLMModel(transformers.WavLMConfig(**cfg)).eval()
    model.requires_grad_(not frozen)
    model.to(dtype)

    def forward(wavs, lengths):
        mask = (torch.arange(wavs.shape[1])[None, :] < lengths[:, None]).long()
        with torch.no_grad():
            return model(wavs.to(dtype), attention_mask=mask, output_hidden_states=True)

    return forward


def run_one(args: argparse.Namespace) -> dict:
    """Child process: build the model, time the forward, report one row as JSON."""
    import torch

    from wespeaker_lap.frontend import SSLFrontend
    from wespeaker_lap.frontend.testing import tiny_ssl_config

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = tiny_ssl_config("wavlm") if args.quick else BASE_PLUS
    if args.attention.startswith("transformers"):
        fe = _plain_transformers(cfg, getattr(torch, args.dtype),
                                 frozen=args.attention == "transformers-frozen")
    else:
        fe = SSLFrontend(config=cfg, dtype=args.dtype, attention=args.attention)
    fe(torch.randn(1, 16000) * 0.1, torch.tensor([16000]))  # warm-up on 1 s: kernel choice
    n = int(args.seconds * 16000)
    wavs = torch.randn(args.batch, n) * 0.1
    lengths = torch.full((args.batch,), n)
    rss_model = _rss_mib()

    def forward():
        if args.windowed:
            for _ in fe.forward_windows(wavs, lengths):
                pass
        else:
            fe(wavs, lengths)

    best = (float("inf"), 0.0)
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        forward()
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return {
        "dtype": args.dtype,
        "attention": args.attention + (" windowed" if args.windowed else ""),
        "batch": args.batch,
        "seconds": args.seconds,
        "wall_s": best[0],
        "cpu_s": best[1],
        "rtf": best[0] / (args.batch * args.seconds),
        "peak_rss_mib": _rss_mib(),
        "fwd_mem_mib": _rss_mib() - rss_model,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1, help="timed runs after a 1 s warm-up; best")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--attentions", default="sdpa,eager")
    p.add_argument("--shapes", default="8x3,8x30,1x120", help="batch x seconds per utterance")
    p.add_argument("--windowed", default="1x120",
                   help="shapes also run through forward_windows (sdpa only); '' for none")
    p.add_argument("--quick", action="store_true", help="tiny model, short audio: a smoke test")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--attention", default="sdpa", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=3.0, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--windowed_child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.windowed = args.windowed_child
        print(json.dumps(run_one(args)))
        return

    if args.quick:
        args.shapes, args.windowed = "2x1,1x25", "1x25"
    shapes = [tuple(s.split("x")) for s in args.shapes.split(",")]
    windowed = {tuple(s.split("x")) for s in args.windowed.split(",") if s}
    model = "tiny wavlm (random)" if args.quick else "WavLM Base+-sized (random), 12 x 768"
    print(f"# frozen SSL forward: {model}; {args.threads} threads; "
          f"{platform.processor() or platform.machine()}; best of {args.repeats}")
    print("| dtype | attention | batch x s | wall (s) | cpu (s) | RTF | peak RSS (MiB) "
          "| forward mem (MiB) |")
    print("|" + "---|" * 8)
    rows = [(d, a, s, False) for d in args.dtypes.split(",") for s in shapes
            for a in args.attentions.split(",")]
    rows += [(d, "sdpa", s, True) for d in args.dtypes.split(",") for s in shapes
             if s in windowed]
    for dtype, attention, (batch, seconds), win in rows:
        cmd = [sys.executable, __file__, "--child", "--dtype", dtype, "--attention", attention,
               "--seconds", seconds, "--batch", batch, "--threads", str(args.threads),
               "--repeats", str(args.repeats)]
        cmd += (["--quick"] if args.quick else []) + (["--windowed_child"] if win else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"| {dtype} | {attention} | {batch} x {seconds} | failed: "
                  f"{out.stderr.strip().splitlines()[-1:]} |||||", flush=True)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {r['dtype']} | {r['attention']} | {r['batch']} x {r['seconds']:g} | "
              f"{r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['rtf']:.3f} | "
              f"{r['peak_rss_mib']:.0f} | {r['fwd_mem_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
