"""LoRA against full fine-tuning of the SSL model: step time, memory, trained size, checkpoint.

One phase-2 training step (LAP_ASTP backend, AAM head with sub-centers and
inter-top-k, Adam, layer-wise lr groups) through the real training loop
(:func:`wespeaker_lap.utils.executor.run_epoch`) on random audio, on a WavLM
Base+-sized random frontend (``bench_frontend.BASE_PLUS``), for:

* ``frozen``: phase 1, the SSL model frozen (forward under no-grad): the floor;
* ``full``: phase 2 as in ``conf/lap_astp_wavlm_base_plus_phase2.yaml``, the
  Transformer trains (the CNN stays frozen);
* ``lora``: phase 2 as in ``conf/lap_astp_wavlm_base_plus_phase2_lora.yaml``: the
  SSL weights frozen, LoRA (rank 16 on q/k/v/out projections by default) trains.

Each case runs in a fresh subprocess so its peak memory is its own.

    python benchmarks/bench_lora.py                   # CPU, batch 4 x 2 s, 2 threads
    python benchmarks/bench_lora.py --quick           # tiny frontend: a smoke test
    python benchmarks/bench_lora.py --device cuda --batch 64 --amp

Columns: trained M = trained parameters (SSL part + backend + head); step =
best wall seconds of one optimiser step (of ``--repeats`` after a warm-up);
peak = process RSS high-water mark (CPU) or peak CUDA memory allocated (GPU);
step mem = peak minus the memory after the model was built; ckpt MiB = size of
the ``model_N.pt`` the run would write.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_frontend import BASE_PLUS  # noqa: E402 - sibling script, not a package
from bench_train import _peak_mib  # noqa: E402

MODES = ("frozen", "full", "lora")


def run_one(args: argparse.Namespace) -> dict:
    """Child process: build, warm up, time; return one row."""
    import torch

    from wespeaker_lap.frontend.testing import tiny_ssl_config
    from wespeaker_lap.io.checkpoints import save_weights
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
    ssl = tiny_ssl_config("wavlm") if args.quick else BASE_PLUS
    cfg = {
        "frontend": "ssl",
        "frontend_args": {"config": ssl, "frozen": args.mode == "frozen",
                          "freeze_feature_encoder": True},
        "model": "LAP_ASTP",
        "model_args": {},
        "projection_args": {"project_type": "arc_margin_intertopk_subcenter", "scale": 32.0},
        "margin_update": {"final_margin": 0.3},
    }
    if args.mode == "lora":
        cfg["lora_args"] = {"rank": args.rank, "alpha": 2.0 * args.rank, "dropout": 0.05,
                            "target_modules": args.targets.split(",")}
    model = build_extractor(cfg)
    model.add_module("projection", build_projection(cfg, model.embed_dim, args.num_class))
    model.to(device)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trained_ssl = sum(p.numel() for p in model.frontend.parameters() if p.requires_grad)
    n = int(args.seconds * 16000)
    wavs = (0.1 * torch.randn(args.batch, n)).to(device)
    lengths = torch.full((args.batch,), n, device=device)
    labels = torch.randint(0, args.num_class, (args.batch,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    base_mem = _peak_mib(device)

    module = SpeakerTrainModule(model, torch.nn.CrossEntropyLoss())
    opt = torch.optim.Adam(param_groups(model, layer_decay=args.layer_decay), lr=1e-4)
    sched = WarmupCosine(opt, num_epochs=1000, epoch_iter=1, initial_lr=1e-4, final_lr=1e-6)
    scaler = make_grad_scaler(device, args.amp, "bfloat16")
    info = DistInfo(device=device)
    opts = EpochOptions(epoch_iter=1, enable_amp=args.amp, amp_dtype="bfloat16",
                        log_batch_interval=10**9, progress=False)
    batch = {"wavs": wavs, "lengths": lengths, "labels": labels}
    epoch = [0]

    def step():
        epoch[0] += 1
        run_epoch([batch], module, opt, sched, None, scaler, epoch[0], opts, info)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = _peak_mib(device)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_weights(model, os.path.join(tmp, "model_1.pt")).stat().st_size
    return {
        "frontend": "tiny" if args.quick else "base_plus", "mode": args.mode,
        "trained_m": trained / 1e6, "trained_ssl_m": trained_ssl / 1e6,
        "wall_s": min(times), "peak_mib": peak, "step_mem_mib": peak - base_mem,
        "ckpt_mib": ckpt / 2**20,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="timed steps after a warm-up; best kept")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seconds", type=float, default=2.0, help="crop length per utterance")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--targets", default="q_proj,k_proj,v_proj,out_proj")
    p.add_argument("--layer-decay", type=float, default=0.9)
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--num-class", type=int, default=5994,
                   help="classes of the head (VoxCeleb2 dev, no speed perturbation in phase 2)")
    p.add_argument("--quick", action="store_true", help="tiny frontend, batch 2 x 1 s: smoke test")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="lora", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.batch, args.seconds, args.repeats, args.num_class, args.rank = 2, 1.0, 1, 20, 4
    if args.child:
        print(json.dumps(run_one(args)))
        return

    mem = "peak CUDA alloc" if args.device == "cuda" else "peak RSS"
    print(f"# phase-2 training step, LAP_ASTP, Adam, AAM sub-center/inter-top-k, "
          f"{args.num_class} classes; batch {args.batch} x {args.seconds:g} s; {args.device}"
          f"{'' if args.device == 'cuda' else f', {args.threads} threads'}"
          f"{', bf16 autocast' if args.amp else ''}; LoRA rank {args.rank} on {args.targets}; "
          f"{platform.processor() or platform.machine()}; best of {args.repeats}"
          f"{'; QUICK (tiny frontend)' if args.quick else ''}")
    print(f"| frontend | SSL model | trained M (SSL part) | step (s) | {mem} (MiB) "
          f"| step mem (MiB) | model_N.pt (MiB) |")
    print("|" + "---|" * 7)
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--child", "--mode", mode, "--threads",
               str(args.threads), "--repeats", str(args.repeats), "--batch", str(args.batch),
               "--seconds", str(args.seconds), "--device", args.device, "--num-class",
               str(args.num_class), "--rank", str(args.rank), "--targets", args.targets,
               "--layer-decay", str(args.layer_decay)]
        cmd += (["--amp"] if args.amp else []) + (["--quick"] if args.quick else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {r['frontend']} | {r['mode']} | {r['trained_m']:.2f} ({r['trained_ssl_m']:.2f}) "
              f"| {r['wall_s']:.3f} | {r['peak_mib']:.0f} | {r['step_mem_mib']:.0f} "
              f"| {r['ckpt_mib']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
