"""Step time of the mini recipe's two training loops in float32 and in bfloat16.

Times, on the mini recipe's sizes and random weights (the time of a step does not
depend on what the weights have learned):

* pre-training (``bin/pretrain_ssl``): one optimiser step of HuBERT masked unit
  prediction, ``conf/ssl_hubert_mini.yaml`` (batch 8 x 2 s), with
  ``train_args.dtype`` float32 and bfloat16 (CPU autocast of the forward), each with
  ``train_args.attention`` sdpa and eager (on 2 s crops, 99 frames, the SDPA kernel's
  backward costs more than eager's plain matrix products);
* backend training (``bin/train``): one optimiser step of LAP_ASTP on the frozen
  mini HuBERT, ``examples/mini/conf/lap_astp.yaml`` (batch 32 x 2 s, AAM head of
  300 classes), with the frozen forward (``frontend_args.dtype``) in float32 or
  bfloat16, and the backend and head under bfloat16 autocast (``enable_amp``) or not;
  and the bf16 step on a batch of cached hidden states (``feature_cache_epochs``: the
  later epochs' step, without the frozen forward).

The variants alternate within each repeat, so that load from other processes hits
them alike; the table gives the best and the median step and the ratio of the
medians to float32. Also printed: the start-up probe's figures (``dtype: auto``)
and the CPU flags.

    python benchmarks/bench_precision.py              # 2 threads, 6 repeats
    python benchmarks/bench_precision.py --quick      # 2 repeats, batch 4: smoke test
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from wespeaker_lap.frontend.precision import auto_dtype, cpu_has_bf16_kernels
from wespeaker_lap.models import build_extractor, build_projection
from wespeaker_lap.pretrain import hubert
from wespeaker_lap.pretrain.schema import parse_train_args
from wespeaker_lap.utils.distributed import DistInfo
from wespeaker_lap.utils.executor import (
    EpochOptions,
    SpeakerTrainModule,
    make_grad_scaler,
    run_epoch,
)
from wespeaker_lap.utils.schedulers import WarmupCosine, param_groups

ROOT = Path(__file__).resolve().parent.parent
SSL_YAML = ROOT / "conf" / "ssl_hubert_mini.yaml"
BACKEND_YAML = ROOT / "examples" / "mini" / "conf" / "lap_astp.yaml"


def cpu_flags() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines()
                  if ln.startswith("Flags:")), [])
    keep = sorted({f for f in flags if f.startswith(("avx512", "amx")) or f == "avx2"})
    name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                 if ln.startswith("Model name:")), "?")
    return f"{name}; {' '.join(keep) or 'no AVX2/AVX-512'}"


def pretrain_steps(batch: int) -> dict[str, callable]:
    """One HuBERT pre-training step per dtype and attention (each its own model and
    optimiser)."""
    cfg = yaml.safe_load(SSL_YAML.read_text())
    args = parse_train_args({**cfg["train_args"], "batch_size": batch})
    n = int(args.crop_seconds * 16000)
    steps = {}
    for name, dtype, attention in (("float32", torch.float32, "sdpa"),
                                   ("float32", torch.float32, "eager"),
                                   ("bfloat16", torch.bfloat16, "sdpa"),
                                   ("bfloat16", torch.bfloat16, "eager")):
        torch.manual_seed(0)
        config = hubert.build_config(cfg["model_args"], attention)
        model = hubert.HubertPretrainModel(config, args.num_units, args.proj_dim,
                                           args.temperature)
        opt = hubert.build_optimizer(model, args)
        rng = np.random.default_rng(0)
        wavs = torch.from_numpy(0.1 * rng.standard_normal((batch, n)).astype(np.float32))
        frames = int(model.hubert._get_feat_extract_output_lengths(torch.tensor(n)))
        labels = torch.from_numpy(rng.integers(0, args.num_units, (batch, frames)))
        mask = torch.from_numpy(hubert.span_mask(rng, batch, frames, args.mask_prob,
                                                 args.mask_length))

        def step(model=model, opt=opt, wavs=wavs, labels=labels, mask=mask, dtype=dtype):
            hubert.optimizer_step(model, opt, wavs, labels, mask, args, dtype)

        steps[f"pre-training, forward {name}, {attention} attention"] = step
    return steps


def backend_steps(batch: int, num_class: int) -> dict[str, callable]:
    """One LAP_ASTP phase-1 step per (frozen forward dtype, backend autocast)."""
    ssl = yaml.safe_load(SSL_YAML.read_text())["model_args"]
    base = yaml.safe_load(BACKEND_YAML.read_text())
    info = DistInfo(device=torch.device("cpu"))
    rng = np.random.default_rng(1)
    n = int(base["dataset_args"]["crop_seconds"] * 16000)
    data = {"wavs": torch.from_numpy(0.1 * rng.standard_normal((batch, n)).astype(np.float32)),
            "lengths": torch.full((batch,), n),
            "labels": torch.from_numpy(rng.integers(0, num_class, batch))}
    steps = {}
    for fe_dtype, amp in (("float32", False), ("bfloat16", False), ("bfloat16", True)):
        torch.manual_seed(0)
        cfg = {"frontend": "ssl",
               "frontend_args": {"config": {"model_type": "hubert", **ssl}, "frozen": True,
                                 "dtype": fe_dtype},
               "model": base["model"], "model_args": dict(base["model_args"]),
               "projection_args": dict(base["projection_args"]),
               "margin_update": dict(base["margin_update"])}
        model = build_extractor(cfg)
        model.add_module("projection", build_projection(cfg, model.embed_dim, num_class))
        module = SpeakerTrainModule(model, torch.nn.CrossEntropyLoss())
        opt = torch.optim.Adam(param_groups(model), lr=1e-3)
        sched = WarmupCosine(opt, num_epochs=10**6, epoch_iter=1, initial_lr=1e-3,
                             final_lr=1e-5)
        scaler = make_grad_scaler(info.device, amp, "bfloat16")
        opts = EpochOptions(epoch_iter=1, enable_amp=amp, amp_dtype="bfloat16",
                            log_batch_interval=10**9, progress=False)
        epoch = [0]

        def step(module=module, opt=opt, sched=sched, scaler=scaler, opts=opts, epoch=epoch):
            epoch[0] += 1
            run_epoch([data], module, opt, sched, None, scaler, epoch[0], opts, info)

        steps[f"backend LAP_ASTP, frozen forward {fe_dtype}, autocast "
              f"{'bf16' if amp else 'off'}"] = step
        if fe_dtype == "bfloat16" and amp:  # the same step on the feature cache's batch
            with torch.no_grad():
                hidden, frames = model.frontend(data["wavs"], data["lengths"])
            cached = {"hidden": hidden, "frame_lengths": frames, "labels": data["labels"]}

            def cached_step(module=module, opt=opt, sched=sched, scaler=scaler, opts=opts,
                            epoch=epoch, cached=cached):
                epoch[0] += 1
                run_epoch([cached], module, opt, sched, None, scaler, epoch[0], opts, info)

            steps["backend LAP_ASTP on cached bf16 hidden states (feature_cache_epochs), "
                  "autocast bf16"] = cached_step
    return steps


def time_alternating(steps: dict[str, callable], repeats: int) -> dict[str, list[float]]:
    for step in steps.values():
        step()  # warm-up: kernel selection, allocator
    times = {k: [] for k in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--pretrain_batch", type=int, default=8)
    p.add_argument("--backend_batch", type=int, default=32)
    p.add_argument("--num_class", type=int, default=300, help="training speakers of the mini")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.repeats, args.pretrain_batch, args.backend_batch = 2, 4, 4
    torch.set_num_threads(args.threads)
    dtype, why = auto_dtype("cpu")
    print(f"# mini-recipe step times, {args.threads} threads, {args.repeats} alternated "
          f"repeats after a warm-up; torch {torch.__version__}")
    print(f"# CPU: {cpu_flags()}; oneDNN bf16 kernels: {cpu_has_bf16_kernels()}")
    print(f"# dtype auto on this CPU: {str(dtype).removeprefix('torch.')} ({why})")
    print("| loop | step best (s) | step median (s) | x float32 (median) |")
    print("|---|---:|---:|---:|")
    for group in (pretrain_steps(args.pretrain_batch),
                  backend_steps(args.backend_batch, args.num_class)):
        times = time_alternating(group, args.repeats)
        ref = None
        for name, ts in times.items():
            med = statistics.median(ts)
            ref = med if ref is None else ref
            print(f"| {name} | {min(ts):.3f} | {med:.3f} | {ref / med:.2f} |", flush=True)


if __name__ == "__main__":
    main()
