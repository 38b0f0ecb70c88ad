"""Training-loader throughput: crops per second with speed perturbation and augmentation.

Generates a VoxCeleb-like corpus (16 kHz wav, 4-12 s, avg ~8 s), MUSAN-like
noise / music / babble files and synthetic RIRs in a temporary folder, then
times the training pipeline (2 s crops, batch 32, speed perturbation,
aug_prob 0.6 by default) with 1 and 2 DataLoader workers, after a warm-up that
fills the shuffle buffers. Prints a table next to what a training step needs.

    python benchmarks/bench_loader.py            # full run (a few minutes)
    python benchmarks/bench_loader.py --short    # smoke test (~30 s)
    python benchmarks/bench_loader.py --data-type shard --workers 1 2 4

"need" is the crops/s a trainer consumes at ``--step-seconds`` per step of
``--batch-size`` crops; the loader should be several times faster.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from wespeaker_lap.dataset.datadir import write_data_dir
from wespeaker_lap.dataset.dataset import build_train_loader
from wespeaker_lap.dataset.lists import (
    make_shard_list,
    make_spk2id,
    raw_entries_from_data_dir,
    write_raw_list,
)

SR = 16000


def _speechlike(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Harmonic bursts with a syllable-rate envelope plus a little noise (not silence)."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = rng.uniform(90, 250)
    x = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3)) / h for h in range(1, 6))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 6) * t)
    return (0.2 * x * env + 0.01 * rng.standard_normal(n)).astype(np.float32)


def make_data(root: Path, num_utts: int, num_spk: int, seed: int = 0) -> dict:
    """Write the corpus, noise and RIR lists under ``root``; returns the paths."""
    rng = np.random.default_rng(seed)
    wav, u2s = {}, {}
    for i in range(num_utts):
        spk = f"id{10000 + i % num_spk}"
        key = f"{spk}/vid{i // num_spk:04d}/00001.wav"
        path = root / "wav" / f"{i:06d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, _speechlike(rng.uniform(4, 12), rng), SR, subtype="PCM_16")
        wav[key], u2s[key] = str(path), spk
    data = write_data_dir(root / "data", wav, u2s)
    entries = raw_entries_from_data_dir(data)
    write_raw_list(root / "raw.list", entries)
    make_shard_list(entries, root / "shards", root / "shard.list", num_utts_per_shard=50)

    noise_entries = []
    for kind, count, seconds in (("noise", 20, 10), ("music", 10, 30), ("babble", 30, 8)):
        for i in range(count):
            path = root / kind / f"{i:03d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "noise":
                x = 0.1 * rng.standard_normal(seconds * SR)
            else:
                x = _speechlike(seconds, rng)
            sf.write(path, x.astype(np.float32), SR, subtype="PCM_16")
            noise_entries.append({"key": f"{kind}/{i}", "wav": str(path), "type": kind})
    write_raw_list(root / "noise.list", noise_entries)

    rir_entries = []
    for i in range(20):
        length = int(rng.uniform(0.3, 1.0) * SR)
        decay = rng.uniform(0.05, 0.3) * SR
        rir = rng.standard_normal(length) * np.exp(-np.arange(length) / decay)
        rir[0] = 1.0
        path = root / "rir" / f"{i:03d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.5 * rir / np.abs(rir).max()).astype(np.float32), SR, subtype="PCM_16")
        rir_entries.append({"key": f"rir/{i}", "wav": str(path), "type": "rir"})
    write_raw_list(root / "rir.list", rir_entries)
    return {"raw": root / "raw.list", "shard": root / "shard.list",
            "noise": root / "noise.list", "rir": root / "rir.list",
            "spk2id": make_spk2id(u2s.values())}


def time_loader(paths: dict, data_type: str, workers: int, args) -> dict:
    """Steady-state crops/s over ``args.batches`` batches.

    The clock starts once every worker has filled its shuffle buffer *and* the
    batches prefetched meanwhile are consumed, so it measures production only.
    """
    prefetch = 2
    # each worker fills its shuffle buffer before its first batch
    warmup = max(2, workers * (args.shuffle_size // args.batch_size + 1)) + prefetch * workers
    total = warmup + args.batches
    dataset_args = {
        "crop_seconds": args.crop_seconds, "speed_perturb": not args.no_speed_perturb,
        "aug_prob": args.aug_prob, "shuffle_args": {"shuffle_size": args.shuffle_size},
    }
    if data_type == "raw":  # one long epoch (per-worker leftovers and buffers included)
        dataset_args["sample_num_per_epoch"] = (
            (total + 2 * max(workers, 1)) * args.batch_size + max(workers, 1) * args.shuffle_size
        )
    loader = build_train_loader(
        paths[data_type], data_type, paths["spk2id"], dataset_args,
        {"batch_size": args.batch_size, "num_workers": workers,
         "prefetch_factor": prefetch if workers else None, "persistent_workers": workers > 0},
        noise_list=paths["noise"], rir_list=paths["rir"], seed=0, rank=0, world_size=1,
        sample_rate=SR)
    n_batches, t0, t_start = 0, time.perf_counter(), None
    for epoch in range(1000):  # shard lists: go round the (short) list again
        loader.set_epoch(epoch)
        for batch in loader:
            assert batch["wavs"].shape == (args.batch_size, round(args.crop_seconds * SR))
            n_batches += 1
            if n_batches == warmup:
                t_start = time.perf_counter()
            if n_batches == total:
                break
        if n_batches >= total:
            break
    if n_batches < total:
        raise RuntimeError(f"the loader stopped after {n_batches} of {total} batches")
    elapsed = time.perf_counter() - t_start
    return {"crops_s": args.batches * args.batch_size / elapsed,
            "ms_batch": 1000 * elapsed / args.batches, "warmup_s": t_start - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--short", action="store_true", help="small corpus and few batches (smoke)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--data-type", choices=["raw", "shard"], default="raw")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--crop-seconds", type=float, default=2.0)
    p.add_argument("--aug-prob", type=float, default=0.6)
    p.add_argument("--no-speed-perturb", action="store_true")
    p.add_argument("--shuffle-size", type=int, default=256)
    p.add_argument("--batches", type=int, default=None, help="timed batches (default 200/10)")
    p.add_argument("--num-utts", type=int, default=None, help="corpus size (default 400/60)")
    p.add_argument("--step-seconds", type=float, default=None,
                   help="training step time to compare with (default: the project's CPU "
                        "figure, WavLM Base+ forward 7.93 s + LAP/ASTP 1.79 s)")
    p.add_argument("--data-dir", help="keep the generated data here (default: a temp dir)")
    args = p.parse_args(argv)
    args.batches = args.batches or (10 if args.short else 200)
    num_utts = args.num_utts or (60 if args.short else 400)
    step = args.step_seconds or 7.93 + 1.79

    root = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="bench_loader."))
    try:
        t = time.perf_counter()
        paths = make_data(root, num_utts, num_spk=max(2, num_utts // 10))
        print(f"data: {num_utts} utterances (4-12 s, 16 kHz) in {root}, "
              f"generated in {time.perf_counter() - t:.1f} s; cpus: {os.cpu_count()}")
        print(f"pipeline: {args.data_type} list, {args.crop_seconds:g} s crops, batch "
              f"{args.batch_size}, speed perturb {not args.no_speed_perturb}, "
              f"aug_prob {args.aug_prob:g}, shuffle buffer {args.shuffle_size}, "
              f"{args.batches} timed batches")
        need = args.batch_size / step
        print(f"\n| workers | crops/s | ms/batch | warm-up s | x need ({need:.1f} crops/s "
              f"at {step:.2f} s/step) |")
        print("|---:|---:|---:|---:|---:|")
        for w in args.workers:
            r = time_loader(paths, args.data_type, w, args)
            print(f"| {w} | {r['crops_s']:.1f} | {r['ms_batch']:.0f} | {r['warmup_s']:.1f} | "
                  f"{r['crops_s'] / need:.1f} |", flush=True)
    finally:
        if not args.data_dir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
