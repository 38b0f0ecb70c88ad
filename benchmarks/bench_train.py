"""Training step time and peak memory per backend, as a ratio to the frozen SSL forward floor.

A phase-1 training step (frozen SSL frontend under no-grad, backend forward and
backward, AAM head with sub-centers and inter-top-k, Adam step) runs through the
real training loop (:func:`wespeaker_lap.utils.executor.run_epoch`) on random
audio, for LAP_ASTP, SSL_ECAPA_TDNN_c512 and MHFA on a WavLM Base+-sized random
frontend (``bench_frontend.BASE_PLUS``). The floor is the frozen frontend's
forward alone on the same batch: no training step can be faster. Each case runs
in a fresh subprocess so its peak memory is its own.

    python benchmarks/bench_train.py                  # CPU, batch 8 x 2 s, 2 threads
    python benchmarks/bench_train.py --quick          # tiny frontend: a smoke test
    python benchmarks/bench_train.py --device cuda --frontends base_plus,large \\
        --batch 64 --amp                              # on a GPU

Columns: backend M / head M = parameters of the backend and of the AAM head
(trained; the frontend is frozen); step = best wall seconds of one optimiser
step (of ``--repeats`` after a warm-up step); x floor = step / frozen forward;
backend = step - floor (what the backend, head and optimiser add); peak =
process RSS high-water mark (CPU) or peak CUDA memory allocated (GPU); step
mem = peak minus the memory after the model was built.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_frontend import BASE_PLUS  # noqa: E402 - sibling script, not a package

LARGE = {
    **BASE_PLUS,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
}

BACKENDS = {
    "LAP_ASTP": {},
    "SSL_ECAPA_TDNN_c512": {},
    "MHFA": {},
}


def _peak_mib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(args: argparse.Namespace) -> dict:
    """Child process: build, warm up, time; return one row."""
    import torch

    from wespeaker_lap.frontend.testing import tiny_ssl_config
    from wespeaker_lap.models import build_extractor, build_projection
    from wespeaker_lap.utils.distributed import DistInfo
    from wespeaker_lap.utils.executor import (
        EpochOptions,
        SpeakerTrainModule,
        make_grad_scaler,
        run_epoch,
    )
    from wespeaker_lap.utils.schedulers import WarmupCosine, param_groups

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    ssl = {"base_plus": BASE_PLUS, "large": LARGE}[args.frontend]
    cfg = {
        "frontend": "ssl",
        "frontend_args": {"config": tiny_ssl_config("wavlm") if args.quick else ssl,
                          "frozen": True, "dtype": args.frontend_dtype},
        "model": args.backend or "LAP_ASTP",
        "model_args": dict(BACKENDS.get(args.backend or "", {})),
        "projection_args": {"project_type": "arc_margin_intertopk_subcenter", "scale": 32.0},
        "margin_update": {"final_margin": 0.2},
    }
    model = build_extractor(cfg)
    model.add_module("projection", build_projection(cfg, model.embed_dim, args.num_class))
    model.to(device)
    n = int(args.seconds * 16000)
    wavs = (0.1 * torch.randn(args.batch, n)).to(device)
    lengths = torch.full((args.batch,), n, device=device)
    labels = torch.randint(0, args.num_class, (args.batch,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    base_mem = _peak_mib(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if args.backend is None:  # the floor: the frozen forward alone
        def step():
            model.frontend(wavs, lengths)
    else:
        module = SpeakerTrainModule(model, torch.nn.CrossEntropyLoss())
        opt = torch.optim.Adam(param_groups(model), lr=1e-3)
        sched = WarmupCosine(opt, num_epochs=1000, epoch_iter=1, initial_lr=1e-3, final_lr=1e-5)
        scaler = make_grad_scaler(device, args.amp, "bfloat16")
        info = DistInfo(device=device)
        opts = EpochOptions(epoch_iter=1, enable_amp=args.amp, amp_dtype="bfloat16",
                            log_batch_interval=10**9, progress=False)
        batch = {"wavs": wavs, "lengths": lengths, "labels": labels}
        epoch = [0]

        def step():
            epoch[0] += 1
            run_epoch([batch], module, opt, sched, None, scaler, epoch[0], opts, info)

    step()  # warm-up
    sync()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    peak = _peak_mib(device)
    return {
        "frontend": "tiny" if args.quick else args.frontend,
        "backend": args.backend or "frozen forward (floor)",
        "wall_s": min(times), "peak_mib": peak, "step_mem_mib": peak - base_mem,
        "backend_m": sum(p.numel() for p in model.backend.parameters()) / 1e6,
        "head_m": sum(p.numel() for p in model.projection.parameters()) / 1e6,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="timed steps after a warm-up; best kept")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=2.0, help="crop length per utterance")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--frontends", default="base_plus", help="base_plus,large")
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--frontend-dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--amp", action="store_true", help="bf16 autocast for backend and head")
    p.add_argument("--num-class", type=int, default=5994 * 3,
                   help="classes of the head (VoxCeleb2 dev x 3 speeds)")
    p.add_argument("--quick", action="store_true", help="tiny frontend, batch 2 x 1 s: smoke test")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--frontend", default="base_plus", help=argparse.SUPPRESS)
    p.add_argument("--backend", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.batch, args.seconds, args.repeats, args.num_class = 2, 1.0, 1, 20
    if args.child:
        print(json.dumps(run_one(args)))
        return

    mem = "peak CUDA alloc" if args.device == "cuda" else "peak RSS"
    print(f"# training step, phase 1 (frozen frontend {args.frontend_dtype}, Adam, AAM "
          f"sub-center/inter-top-k, {args.num_class} classes); batch {args.batch} x "
          f"{args.seconds:g} s; {args.device}"
          f"{'' if args.device == 'cuda' else f', {args.threads} threads'}"
          f"{', bf16 autocast' if args.amp else ''}; "
          f"{platform.processor() or platform.machine()}; best of {args.repeats}"
          f"{'; QUICK (tiny frontend)' if args.quick else ''}")
    print(f"| frontend | backend | backend M | head M | step (s) | x floor | backend (s) "
          f"| {mem} (MiB) | step mem (MiB) |")
    print("|" + "---|" * 9)
    for frontend in args.frontends.split(","):
        floor = None
        for backend in [None, *[b for b in args.backends.split(",") if b]]:
            cmd = [sys.executable, __file__, "--child", "--frontend", frontend, "--threads",
                   str(args.threads), "--repeats", str(args.repeats), "--batch", str(args.batch),
                   "--seconds", str(args.seconds), "--device", args.device, "--frontend-dtype",
                   args.frontend_dtype, "--num-class", str(args.num_class)]
            cmd += (["--backend", backend] if backend else []) + (["--amp"] if args.amp else [])
            cmd += ["--quick"] if args.quick else []
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            if backend is None:
                floor = r["wall_s"]
            ratio = r["wall_s"] / floor
            extra = r["wall_s"] - floor
            params = ("- | -" if backend is None
                      else f"{r['backend_m']:.2f} | {r['head_m']:.2f}")
            print(f"| {r['frontend']} | {r['backend']} | {params} | {r['wall_s']:.3f} | "
                  f"{ratio:.2f} | {extra:.3f} | {r['peak_mib']:.0f} | {r['step_mem_mib']:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
