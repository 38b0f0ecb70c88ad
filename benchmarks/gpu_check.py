"""The sections of ``benchmarks/gpu_check.sh`` (run that script; this is its Python half).

Each subcommand is one section, prints its figures and ends with one JSON line
``{"section": ..., "ok": true|false, ...}`` that the shell script collects:

* ``nccl``     (under ``torchrun --nproc_per_node=1``): a process group on the
  device's backend (NCCL on GPU, gloo on CPU) even with one rank; collectives;
  DistributedDataParallel around the real training module; a few AMP steps.
* ``resume``   ``tools/train.sh`` on a generated corpus (one GPU, or one CPU
  process): an uninterrupted run, a run killed (SIGKILL) after epoch 1 and
  resumed by ``tools/train.sh`` itself; final weights compared. On GPU a second
  uninterrupted run gives the run-to-run floor (non-deterministic kernels), and
  training uses fp16 + GradScaler so the scaler's state goes through the resume.
  Then ``bin.extract`` on the device against the CPU, utterance by utterance.
* ``extract_equal``  a Base+-sized random LAP_ASTP extractor: device fp32 and bf16
  (autocast) embeddings against CPU fp32 on a padded batch.
* ``steps``    phase-1 training steps (frozen frontend, AAM sub-center/inter-top-k
  head, Adam) with bf16 autocast and with fp16 + GradScaler, for every size and
  backend: step time, samples/s, peak memory; then extraction RTF (fp32 and bf16
  autocast) on VoxCeleb-like lengths. The batch halves on out-of-memory.
* ``loader``   crops/s that 8 DataLoader workers deliver (the training pipeline with
  speed perturbation and augmentation, ``bench_loader``) against the fastest
  training step's samples/s.

``--quick`` swaps the Base+/Large frontends for tiny random ones of the same
layouts (group-norm / stable layer-norm) and shrinks every size: the CI smoke run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_frontend import BASE_PLUS  # noqa: E402 - sibling scripts, not a package
from bench_train import LARGE  # noqa: E402

from wespeaker_lap.frontend import get_frontend  # noqa: E402
from wespeaker_lap.frontend.testing import tiny_ssl_config  # noqa: E402
from wespeaker_lap.io.checkpoints import checkpoint_path, list_checkpoints, read_weights
from wespeaker_lap.models import (  # noqa: E402
    SpeakerEmbeddingExtractor,
    build_extractor,
    build_projection,
    build_speaker_model,
)
from wespeaker_lap.models.inference import load_trained_extractor, resolve_model_dir  # noqa: E402
from wespeaker_lap.utils.distributed import (  # noqa: E402
    DistInfo,
    all_gather_object,
    any_true,
    barrier,
    init_distributed,
    wrap_ddp,
)
from wespeaker_lap.utils.executor import (  # noqa: E402
    EpochOptions,
    SpeakerTrainModule,
    autocast_context,
    make_grad_scaler,
    run_epoch,
)
from wespeaker_lap.utils.schedulers import WarmupCosine, param_groups  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SR = 16000
BACKENDS = ("LAP_ASTP", "SSL_ECAPA_TDNN_c512", "MHFA")
HEAD = {"projection_args": {"project_type": "arc_margin_intertopk_subcenter", "scale": 32.0},
        "margin_update": {"final_margin": 0.2}}
# Tolerances of the device-vs-CPU embedding checks (cosine similarity, per utterance).
# fp32 on GPU: TF32 convolutions (PyTorch's default for cuDNN) and other kernel orders
# move embeddings by ~1e-4 relative; bf16 keeps 8 bits of mantissa.
# On CPU, batched against alone: the same kernels up to summation order.
COS_FP32, COS_BF16, COS_CPU = 0.9999, 0.99, 0.99999


def result(section: str, ok: bool, **figures) -> None:
    print(json.dumps({"section": section, "ok": bool(ok), **figures}), flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ssl_config(size: str, quick: bool) -> dict:
    if quick:  # same layouts, tiny: Base+ uses group norm, Large stable layer norm
        return tiny_ssl_config("wavlm", stable_layer_norm=size == "large")
    return {"base_plus": BASE_PLUS, "large": LARGE}[size]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


# ------------------------------------------------------------------------------ nccl
def cmd_nccl(args) -> bool:
    import torch.distributed as dist

    info = init_distributed(args.device)  # a world of one: no group yet
    backend = "nccl" if info.device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kw = {"device_id": info.device} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, **kw)
    info = DistInfo(info.rank, info.world_size, info.local_rank, info.device, backend)
    t = torch.arange(4.0, device=info.device)
    dist.all_reduce(t)
    ok = bool(torch.equal(t.cpu(), torch.arange(4.0) * info.world_size))
    ok &= all_gather_object({"rank": info.rank}, info) == [{"rank": 0}]
    ok &= any_true(True, info)
    barrier(info)

    torch.manual_seed(0)
    cfg = {"frontend": "ssl", "frontend_args": {"config": tiny_ssl_config("wavlm"),
                                                "frozen": True},
           "model": "LAP_ASTP", "model_args": {"lap_dim": 32, "heads": 4, "embed_dim": 16},
           **HEAD}
    model = build_extractor(cfg)
    model.add_module("projection", build_projection(cfg, model.embed_dim, 8))
    model.to(info.device)
    module = wrap_ddp(SpeakerTrainModule(model, torch.nn.CrossEntropyLoss()), info)
    ddp = type(module).__name__ == "DistributedDataParallel"
    opt = torch.optim.Adam(param_groups(model), lr=1e-3)
    sched = WarmupCosine(opt, num_epochs=1, epoch_iter=3, initial_lr=1e-3, final_lr=1e-4)
    amp = "float16" if info.device.type == "cuda" else "bfloat16"
    scaler = make_grad_scaler(info.device, True, amp)
    g = torch.Generator().manual_seed(1)
    batches = [{"wavs": 0.1 * torch.randn(4, SR, generator=g), "lengths": torch.full((4,), SR),
                "labels": torch.randint(0, 8, (4,), generator=g)} for _ in range(3)]
    stats = run_epoch(batches, module, opt, sched, None, scaler, 1,
                      EpochOptions(epoch_iter=3, enable_amp=True, amp_dtype=amp,
                                   progress=False, log_batch_interval=10**9), info)
    ok &= ddp and stats["steps"] == 3 and math.isfinite(stats["loss"])
    version = ".".join(map(str, torch.cuda.nccl.version())) if backend == "nccl" else None
    print(f"backend {dist.get_backend()} (NCCL {version}), world {info.world_size}, "
          f"DDP {ddp}, {stats['steps']} steps with {amp} autocast, loss {stats['loss']:.3f}")
    dist.destroy_process_group()
    result("nccl", ok, backend=backend, nccl=version, ddp=ddp, loss=stats["loss"])
    return ok


# ---------------------------------------------------------------------------- resume
def make_corpus(root: Path, num_spk: int, num_utt: int, seconds: float) -> dict[str, Path]:
    """Harmonic "speakers" (own pitch and timbre) + noise: raw.list, utt2spk, a data dir."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    lines, wav_scp, utt2spk = [], [], []
    for s in range(num_spk):
        f0, weights = 100.0 * 1.25 ** s, rng.uniform(0.2, 1.0, size=6)
        for u in range(num_utt):
            key = f"spk{s:02d}-utt{u:02d}"
            wav = sum(w * np.sin(2 * np.pi * f0 * rng.uniform(0.97, 1.03) * (h + 1) * t)
                      for h, w in enumerate(weights))
            wav = 0.1 * wav / np.abs(wav).max() + 0.005 * rng.standard_normal(t.size)
            path = root / "wav" / f"{key}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wav.astype(np.float32), SR)
            lines.append(json.dumps({"key": key, "spk": f"spk{s:02d}", "wav": str(path)}))
            wav_scp.append(f"{key} {path}")
            utt2spk.append(f"{key} spk{s:02d}")
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "wav.scp").write_text("\n".join(sorted(wav_scp)) + "\n")
    (data / "utt2spk").write_text("\n".join(sorted(utt2spk)) + "\n")
    (root / "raw.list").write_text("\n".join(lines) + "\n")
    return {"raw": root / "raw.list", "utt2spk": data / "utt2spk", "data": data}


def train_sh(config: Path, exp: Path, gpus: str, background: bool = False):
    cmd = ["bash", str(REPO / "tools" / "train.sh"), "--config", str(config), "--exp_dir",
           str(exp), "--gpus", gpus]
    log = open(exp.parent / f"{exp.name}.log", "w")  # noqa: SIM115 - closed by the caller
    proc = subprocess.Popen(cmd, env=child_env(), cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    if background:
        return proc, log
    try:
        rc = proc.wait(timeout=600)
    finally:
        log.close()
    if rc != 0:
        tail = (exp.parent / f"{exp.name}.log").read_text()[-3000:]
        raise RuntimeError(f"tools/train.sh for {exp.name} failed ({rc}):\n{tail}")
    return None


def kill_tree(pid: int) -> int:
    """SIGKILL ``pid`` and every descendant (torchrun starts its workers in sessions of
    their own, so killing the launcher's process group would leave them training)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(tree)


def max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())


def cmd_resume(args) -> bool:
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cuda = args.device == "cuda"
    n_spk, n_utt, secs = (4, 6, 0.6) if args.quick else (8, 8, 1.0)
    corpus = make_corpus(work / "corpus", n_spk, n_utt, secs)
    epochs = 2 if args.quick else 3
    cfg = {
        "exp_dir": str(work / "exp"), "num_epochs": epochs, "seed": 7, "num_avg": 1,
        "save_epoch_interval": 1, "log_batch_interval": 1, "keep_last_states": epochs,
        "enable_amp": True, "amp_dtype": "float16" if cuda else "bfloat16",
        "data_type": "raw", "train_data": str(corpus["raw"]), "train_label": str(corpus["utt2spk"]),
        "dataloader_args": {"batch_size": 4, "num_workers": args.num_workers},
        "dataset_args": {"crop_seconds": 0.5, "min_duration": 0.1,
                         "shuffle_args": {"shuffle_size": 8}},
        "frontend": "ssl", "frontend_args": {"config": tiny_ssl_config("wavlm"), "frozen": True},
        "model": "LAP_ASTP",
        "model_args": {"feat_dim": -1, "num_layers": -1, "embed_dim": 16, "lap_dim": 32,
                       "heads": 4},
        "projection_args": {"project_type": "arc_margin", "scale": 16.0},
        "margin_scheduler": "MarginScheduler",
        "margin_update": {"initial_margin": 0.0, "final_margin": 0.1, "increase_start_epoch": 0,
                          "fix_start_epoch": 1, "increase_type": "linear"},
        "loss": "CrossEntropyLoss", "optimizer": "Adam", "optimizer_args": {"weight_decay": 0.0},
        "scheduler": "WarmupCosine",
        "scheduler_args": {"initial_lr": 0.01, "final_lr": 0.002, "warm_up_epoch": 0},
    }
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    gpus = "[0]" if cuda else ""

    t0 = time.perf_counter()
    full = work / "full"
    train_sh(config, full, gpus)
    t_full = time.perf_counter() - t0
    floor = 0.0
    if cuda and not args.quick:  # run-to-run floor of the GPU kernels
        train_sh(config, work / "full2", gpus)
        floor = max_abs_diff(read_weights(checkpoint_path(full / "models", epochs)),
                             read_weights(checkpoint_path(work / "full2" / "models", epochs)))

    cut = work / "cut"
    proc, log = train_sh(config, cut, gpus, background=True)
    models = cut / "models"
    killed = 0
    deadline = time.time() + 600
    try:
        while not checkpoint_path(models, 1, "state").exists() and proc.poll() is None:
            if time.time() > deadline:
                raise RuntimeError("epoch 1 of the cut run never finished")
            time.sleep(0.005)
        killed_running = proc.poll() is None
        if killed_running:  # the whole tree at once, as a node that dies
            killed = kill_tree(proc.pid)
        proc.wait()
        time.sleep(0.5)  # let the kernel finish off the orphaned workers
    finally:
        log.close()
    later = [p for e, p in list_checkpoints(models) + list_checkpoints(models, "state") if e > 1]
    for p in later:  # a late kill: forget what came after epoch 1, as if cut there
        p.unlink()
    for p in [*models.glob("final_model.pt"), *models.glob("*.tmp")]:
        p.unlink()
    train_sh(config, cut, gpus)  # tools/train.sh resumes by itself (--checkpoint latest)
    resumed_log = (work / "cut.log").read_text()
    diff = max_abs_diff(read_weights(checkpoint_path(full / "models", epochs)),
                        read_weights(checkpoint_path(models, epochs)))
    resumed = "resuming after epoch 1" in resumed_log
    # CPU kernels are deterministic: exact. On GPU, non-deterministic kernels (atomics in
    # some backward passes) make two uninterrupted runs differ by `floor`; a resumed run
    # is one more such run, allowed twice that.
    allowed = 2 * floor
    ok_resume = resumed and diff <= allowed
    print(f"uninterrupted run {t_full:.1f} s; cut run "
          f"{f'killed ({killed} processes)' if killed_running else 'ended before the kill'}"
          f" after epoch 1 (files of later epochs removed: {len(later)}); resumed after "
          f"epoch 1 by tools/train.sh: {resumed}")
    print(f"final weights, resumed vs uninterrupted: max |diff| {diff:.3g} (allowed "
          f"{allowed:.3g}: " + (f"2 x the difference between two uninterrupted runs, {floor:.3g})"
                                if cuda and not args.quick else "exact)"))

    # bin.extract on the device against the CPU, one utterance at a time
    emb_dir = work / f"emb_{args.device}"
    cmd = [sys.executable, "-m", "wespeaker_lap.bin.extract", "--model_dir", str(full),
           "--data", str(corpus["data"]), "--embed_dir", str(emb_dir), "--device", args.device,
           "--batch_size", "8", "--num_workers", "0", "--no_progress"]
    subprocess.run(cmd, env=child_env(), cwd=REPO, check=True, capture_output=True, timeout=600)
    import kaldiio

    dev_emb = {k: np.asarray(v) for k, v in kaldiio.load_scp(str(emb_dir / "xvector.scp")).items()}
    config_file, weights = resolve_model_dir(full)
    cpu = load_trained_extractor(config_file, weights, "cpu")
    cos: list[float] = []
    with torch.no_grad():
        for line in (corpus["data"] / "wav.scp").read_text().split("\n"):
            if not line:
                continue
            key, path = line.split(maxsplit=1)
            wav, _ = sf.read(path, dtype="float32")
            ref = cpu(torch.from_numpy(wav)[None])[0].double().numpy()
            e = dev_emb[key].astype(np.float64)
            cos.append(float(ref @ e / (np.linalg.norm(ref) * np.linalg.norm(e))))
    tol = COS_FP32 if cuda else COS_CPU
    ok_extract = len(cos) == len(dev_emb) and min(cos) >= tol
    print(f"bin.extract --device {args.device} (batches of 8) vs CPU alone: {len(cos)} "
          f"utterances, min cosine {min(cos):.7f} (tolerance {tol})")
    result("resume", ok_resume and ok_extract, max_diff=diff, floor=floor,
           killed_running=killed_running, min_cos=min(cos), cos_tol=tol)
    return ok_resume and ok_extract


# -------------------------------------------------------------------- extract_equal
def cmd_extract_equal(args) -> bool:
    torch.manual_seed(0)
    cfg = {"frontend": "ssl",
           "frontend_args": {"config": ssl_config("base_plus", args.quick), "frozen": True},
           "model": "LAP_ASTP", "model_args": {}}
    ext = build_extractor(cfg).eval()
    secs = [1.0, 0.7, 1.3] if args.quick else [3.0, 5.0, 2.0, 8.0]
    n = [int(s * SR) for s in secs]
    g = torch.Generator().manual_seed(3)
    wavs = torch.zeros(len(n), max(n))
    for i, k in enumerate(n):
        wavs[i, :k] = 0.1 * torch.randn(k, generator=g)
    lengths = torch.tensor(n)
    device = torch.device(args.device)
    with torch.no_grad():
        ref = ext(wavs, lengths).double()
        ext.to(device)
        rows = []
        for name, amp, tol in (("fp32", False, COS_FP32), ("bf16 autocast", True, COS_BF16)):
            with autocast_context(device, amp, "bfloat16"):
                out = ext(wavs.to(device), lengths.to(device)).double().cpu()
            cos = torch.nn.functional.cosine_similarity(out, ref, dim=1)
            rel = float((out - ref).abs().max() / ref.abs().max())
            rows.append((name, float(cos.min()), rel, tol))
    ok = all(c >= tol for _, c, _, tol in rows)
    size = "tiny" if args.quick else "Base+-sized"
    print(f"{size} random LAP_ASTP extractor, padded batch of {len(n)} ({secs} s): "
          f"{args.device} vs CPU fp32")
    print("| precision | min cosine | max abs diff / max abs | tolerance (cosine) |")
    print("|---|---:|---:|---:|")
    for name, c, rel, tol in rows:
        print(f"| {name} | {c:.7f} | {rel:.2e} | {tol} |")
    result("extract_equal", ok, rows=[dict(zip(("precision", "min_cos", "rel_diff", "tol"), r,
                                               strict=True)) for r in rows])
    return ok


# ----------------------------------------------------------------------------- steps
def _train_steps(module, ext, batch, device, amp: str, steps: int, warmup: int) -> dict:
    opt = torch.optim.Adam(param_groups(ext), lr=1e-3)
    sched = WarmupCosine(opt, num_epochs=10**6, epoch_iter=1, initial_lr=1e-3, final_lr=1e-5)
    scaler = make_grad_scaler(device, True, amp)
    opts = EpochOptions(epoch_iter=1, enable_amp=True, amp_dtype=amp, progress=False,
                        log_batch_interval=10**9)
    info = DistInfo(device=device)
    losses, times = [], []
    for i in range(steps + warmup):  # warm-up steps: kernel selection, allocator
        sync(device)
        t0 = time.perf_counter()
        st = run_epoch([batch], module, opt, sched, None, scaler, i + 1, opts, info)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        losses.append(st["loss"])
    return {"step_s": float(np.median(times)), "loss_finite": all(map(math.isfinite, losses)),
            "scale": float(scaler.get_scale()) if scaler.is_enabled() else None}


def _rtf(ext, device, lengths_s: list[float], batch: int, amp: bool) -> float:
    g = torch.Generator().manual_seed(5)
    order = sorted(lengths_s)
    batches = []
    for i in range(0, len(order), batch):
        n = [int(s * SR) for s in order[i:i + batch]]
        w = torch.zeros(len(n), max(n))
        for j, k in enumerate(n):
            w[j, :k] = 0.1 * torch.randn(k, generator=g)
        batches.append((w.to(device), torch.tensor(n, device=device)))
    with torch.no_grad(), autocast_context(device, amp, "bfloat16"):
        ext(*batches[-1])  # warm-up on the longest batch
        sync(device)
        t0 = time.perf_counter()
        for w, n in batches:
            ext(w, n)
        sync(device)
    return (time.perf_counter() - t0) / sum(lengths_s)


def cmd_steps(args) -> bool:
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    num_class = 20 if args.quick else 5994 * 3
    rng = np.random.default_rng(0)
    rtf_lengths = list(rng.uniform(4, 12, size=args.rtf_utts).round(2))
    if args.quick:
        rtf_lengths = [round(x / 4, 2) for x in rtf_lengths]
    amps = ["bfloat16", "float16"] if device.type == "cuda" else ["bfloat16"]
    rows, ok = [], True
    for size in args.sizes.split(","):
        torch.manual_seed(0)
        frontend = get_frontend("ssl", config=ssl_config(size, args.quick), frozen=True).to(device)
        for name in args.backends.split(","):
            backend = build_speaker_model(name, {}, frontend.hidden_size, frontend.num_layers)
            ext = SpeakerEmbeddingExtractor(frontend, backend)
            ext.add_module("projection", build_projection(HEAD, ext.embed_dim, num_class))
            ext.to(device)
            module = SpeakerTrainModule(ext, torch.nn.CrossEntropyLoss())
            for amp in amps:
                b = args.batch
                while True:
                    n = int(args.seconds * SR)
                    batch = {"wavs": 0.1 * torch.randn(b, n, device=device),
                             "lengths": torch.full((b,), n, device=device),
                             "labels": torch.randint(0, num_class, (b,), device=device)}
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats(device)
                    try:
                        r = _train_steps(module, ext, batch, device, amp, args.steps,
                                         1 if args.quick else 2)
                        break
                    except FloatingPointError as e:  # a finding to report, not a crash
                        print(f"{size} {name} {amp}: {e}")
                        r = {"step_s": float("nan"), "loss_finite": False, "scale": None}
                        break
                    except torch.cuda.OutOfMemoryError:
                        del batch
                        if b <= 8:
                            raise
                        b //= 2
                        print(f"out of memory: {size} {name} {amp}: batch halved to {b}")
                peak = (torch.cuda.max_memory_allocated(device) / 2**30
                        if device.type == "cuda" else float("nan"))
                row = {"size": size, "backend": name, "amp": amp, "batch": b,
                       "seconds": args.seconds, "peak_gib": peak,
                       "samples_s": b / r["step_s"], **r}
                if amp == amps[0]:
                    ext.eval()
                    row["rtf_fp32"] = _rtf(ext, device, rtf_lengths, args.rtf_batch, False)
                    row["rtf_bf16"] = _rtf(ext, device, rtf_lengths, args.rtf_batch, True)
                ok &= r["loss_finite"]
                rows.append(row)
                print(json.dumps(row), flush=True)
            del module, ext, backend
        del frontend
        if device.type == "cuda":
            torch.cuda.empty_cache()

    label = "tiny (quick)" if args.quick else "random, Base+ / Large sizes"
    print(f"\nphase-1 steps ({label}); batch x {args.seconds:g} s; Adam; AAM sub-center "
          f"inter-top-k head, {num_class} classes; median of {args.steps} steps after "
          f"{1 if args.quick else 2} warm-up; extraction RTF on {len(rtf_lengths)} utterances "
          f"({min(rtf_lengths):g}-{max(rtf_lengths):g} s), batches of {args.rtf_batch}")
    print("| frontend | backend | AMP | batch | step (s) | samples/s | peak GPU mem (GiB) "
          "| extraction RTF fp32 | RTF bf16 | fp16 loss scale |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = [r["size"], r["backend"], r["amp"], str(r["batch"]), f"{r['step_s']:.3f}",
                 f"{r['samples_s']:.0f}",
                 "-" if math.isnan(r["peak_gib"]) else f"{r['peak_gib']:.1f}",
                 f"{r['rtf_fp32']:.4f}" if "rtf_fp32" in r else "",
                 f"{r['rtf_bf16']:.4f}" if "rtf_bf16" in r else "",
                 "-" if r["scale"] is None else f"{r['scale']:g}"]
        print("| " + " | ".join(cells) + " |")
    timed = [r for r in rows if math.isfinite(r["samples_s"])] or rows
    need = max(r["samples_s"] for r in timed)
    fastest = max(timed, key=lambda r: r["samples_s"])
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "need_samples_s": need}))
    result("steps", ok, need_samples_s=need,
           fastest=f"{fastest['size']} {fastest['backend']} {fastest['amp']}")
    return ok


# ---------------------------------------------------------------------------- loader
def cmd_loader(args) -> bool:
    import tempfile

    from bench_loader import make_data, time_loader

    need = json.loads(Path(args.steps_json).read_text())["need_samples_s"]
    root = Path(tempfile.mkdtemp(prefix="gpu_check_loader."))
    try:
        paths = make_data(root, args.num_utts, num_spk=max(2, args.num_utts // 10))
        ns = argparse.Namespace(shuffle_size=args.shuffle_size, batch_size=args.batch,
                                crop_seconds=args.seconds, no_speed_perturb=False, aug_prob=0.6,
                                batches=args.batches)
        r = time_loader(paths, "raw", args.workers, ns)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratio = r["crops_s"] / need
    print(f"loader: {args.workers} workers, raw list, {args.seconds:g} s crops, batch "
          f"{args.batch}, speed perturbation + MUSAN/RIR-like augmentation (p 0.6): "
          f"{r['crops_s']:.0f} crops/s; the fastest training step needs {need:.0f} samples/s: "
          f"{ratio:.2f}x ({'enough' if ratio >= 1 else 'NOT enough: the GPU would wait'}); "
          f"workers needed at this rate: {math.ceil(args.workers / ratio) if ratio else '-'}"
          f" (cpus here: {os.cpu_count()})")
    # a figure, not a pass/fail: too slow a loader is a finding, not a broken check
    result("loader", True, crops_s=r["crops_s"], need_samples_s=need, ratio=ratio,
           workers=args.workers)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("section", choices=["nccl", "resume", "extract_equal", "steps", "loader"])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="tiny models and sizes (CI)")
    p.add_argument("--work", default="exp/gpu_check", help="resume: working directory")
    p.add_argument("--num_workers", type=int, default=0, help="resume: loader workers")
    p.add_argument("--sizes", default="base_plus,large")
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rtf_utts", type=int, default=64)
    p.add_argument("--rtf_batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2, help="CPU threads (CPU mode)")
    p.add_argument("--json", help="steps: write the rows here")
    p.add_argument("--steps_json", help="loader: the steps section's JSON")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--num_utts", type=int, default=200)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--shuffle_size", type=int, default=256)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available here: run with --device cpu", file=sys.stderr)
        result(args.section, False, error="no CUDA")
        return 1
    fn = {"nccl": cmd_nccl, "resume": cmd_resume, "extract_equal": cmd_extract_equal,
          "steps": cmd_steps, "loader": cmd_loader}[args.section]
    return 0 if fn(args) else 1


if __name__ == "__main__":
    sys.exit(main())
