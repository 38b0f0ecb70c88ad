"""Shared helpers of the training tests: a generated corpus and a tiny config (no tests here)."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml

from wespeaker_lap.frontend.testing import tiny_ssl_config

REPO = Path(__file__).resolve().parents[1]
COMMON_SCRIPT = Path(__file__).resolve()
SR = 16000

# A torchrun test that hangs must fail with the stuck rank named, never wait out CI:
#: how long a rank of the scripts below waits on its peers (joining the process group,
#: every collective) before it fails: a healthy two-rank run takes about 10 s in all;
RANK_TIMEOUT_S = 60
#: after this long a rank of the scripts below prints every thread's stack and exits;
RANK_DEADLINE_S = 120
#: and after this long :func:`run_torchrun` kills torchrun and its ranks.
TORCHRUN_TIMEOUT_S = 180
#: What a rank of the scripts below prints last (``rank R finished``).
FINISHED = "finished"


def make_corpus(root: Path, num_spk: int = 4, num_utt: int = 6, seconds: float = 0.6,
                seed: int = 0, prefix: str = "spk") -> tuple[Path, Path]:
    """Write ``num_spk`` x ``num_utt`` wavs whose speakers differ by pitch and timbre.

    Returns ``(raw.list, utt2spk)``. Each speaker is a harmonic series at its own
    fundamental with its own harmonic weights, plus noise: easy to separate, so a
    tiny model's loss falls within a few steps.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines, utt2spk = [], []
    t = np.arange(int(seconds * SR)) / SR
    for s in range(num_spk):
        f0 = 110.0 * 1.35 ** s
        weights = rng.uniform(0.2, 1.0, size=6)
        spk = f"{prefix}{s:02d}"
        for u in range(num_utt):
            jitter = rng.uniform(0.97, 1.03)
            wav = sum(w * np.sin(2 * np.pi * f0 * jitter * (h + 1) * t + rng.uniform(0, 6.28))
                      for h, w in enumerate(weights))
            wav = 0.1 * wav / np.abs(wav).max() + 0.005 * rng.standard_normal(t.size)
            key = f"{spk}/utt{u:02d}"
            path = root / "wav" / spk / f"utt{u:02d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wav.astype(np.float32), SR)
            lines.append(json.dumps({"key": key, "spk": spk, "wav": str(path)}))
            utt2spk.append(f"{key} {spk}")
    raw = root / "raw.list"
    raw.write_text("\n".join(lines) + "\n")
    label = root / "utt2spk"
    label.write_text("\n".join(sorted(utt2spk)) + "\n")
    return raw, label


def make_valid_dir(root: Path, num_spk: int = 3, num_utt: int = 3, seed: int = 1,
                   prefix: str = "val") -> tuple[Path, Path]:
    """A Kaldi data dir of held-out speakers (``val00``...) and its Kaldi trial list (every
    pair of utterances). Returns ``(data dir, trials)``."""
    raw, label = make_corpus(root, num_spk, num_utt, seed=seed, prefix=prefix)
    entries = [json.loads(line) for line in raw.read_text().splitlines()]
    entries.sort(key=lambda e: e["key"])
    (root / "wav.scp").write_text("".join(f"{e['key']} {e['wav']}\n" for e in entries))
    (root / "utt2spk").write_text(label.read_text())
    lines = [f"{a['key']} {b['key']} {'target' if a['spk'] == b['spk'] else 'nontarget'}"
             for i, a in enumerate(entries) for b in entries[i + 1:]]
    trials = root / "trials.kaldi"
    trials.write_text("\n".join(lines) + "\n")
    return root, trials


def tiny_config(exp_dir: Path, raw: Path, label: Path, **overrides: Any) -> dict[str, Any]:
    """A complete config for a tiny WavLM + tiny LAP_ASTP, seconds per epoch on CPU."""
    cfg: dict[str, Any] = {
        "exp_dir": str(exp_dir),
        "num_epochs": 2,
        "seed": 7,
        "num_avg": 1,
        "save_epoch_interval": 1,
        "log_batch_interval": 1,
        "data_type": "raw",
        "train_data": str(raw),
        "train_label": str(label),
        "dataloader_args": {"batch_size": 4, "num_workers": 0},
        "dataset_args": {"crop_seconds": 0.5, "min_duration": 0.1,
                         "shuffle_args": {"shuffle_size": 8}},
        "frontend": "ssl",
        "frontend_args": {"config": tiny_ssl_config("wavlm"), "frozen": True},
        "model": "LAP_ASTP",
        "model_args": {"feat_dim": -1, "num_layers": -1, "embed_dim": 16, "lap_dim": 32,
                       "heads": 4},
        "projection_args": {"project_type": "arc_margin", "scale": 16.0},
        "margin_scheduler": "MarginScheduler",
        "margin_update": {"initial_margin": 0.0, "final_margin": 0.1,
                          "increase_start_epoch": 0, "fix_start_epoch": 1,
                          "increase_type": "linear"},
        "loss": "CrossEntropyLoss",
        "optimizer": "Adam",
        "optimizer_args": {"weight_decay": 0.0},
        "scheduler": "WarmupCosine",
        "scheduler_args": {"initial_lr": 0.01, "final_lr": 0.002, "warm_up_epoch": 0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return copy.deepcopy(cfg)


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(threads: int = 1) -> dict[str, str]:
    """The environment of a test's child process: one thread, offline, this tree first.

    On Linux gloo talks over the loopback interface (``lo``): every rank of a test is
    on this machine, and the address the host name resolves to may be another
    interface's, one a firewall drops (a connect that waits out the timeout).
    """
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


def run_train(config: Path, *extra: str, timeout: float = 120,
              check: bool = True) -> subprocess.CompletedProcess:
    """``python -m wespeaker_lap.bin.train --config config --device cpu extra...``."""
    cmd = [sys.executable, "-m", "wespeaker_lap.bin.train", "--config", str(config),
           "--device", "cpu", *extra]
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"train failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def torchrun_cmd(nproc: int, *args: str, nnodes: int = 1, endpoint: str | None = None,
                 node_rank: int | None = None, log_dir: Path | None = None) -> list[str]:
    """``torchrun`` on loopback: ``--standalone`` (its rendezvous store on a port the
    kernel picks, no race for it), or the c10d rendezvous at ``endpoint``. The ranks
    reach the store at 127.0.0.1, not at the host name's address. With ``log_dir``,
    each rank's stdout and stderr also go to files there (``--tee 3``)."""
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    cmd = [*torchrun, f"--nnodes={nnodes}", f"--nproc_per_node={nproc}",
           "--local_addr=127.0.0.1"]
    if endpoint is not None:
        cmd += ["--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}", "--rdzv_id=test"]
    else:
        cmd += ["--standalone"]
    if node_rank is not None:
        cmd += [f"--node_rank={node_rank}"]
    if log_dir is not None:
        cmd += [f"--log_dir={log_dir}", "--tee=3"]
    return [*cmd, *args]


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its descendants (torchrun's workers run in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def rank_logs(log_dir: Path, nproc: int) -> dict[int, str]:
    """Each rank's stdout and stderr as torchrun wrote them under ``log_dir``."""
    out = {}
    for rank in range(nproc):
        files = sorted(log_dir.glob(f"*/attempt_*/{rank}/std*.log"))
        out[rank] = "".join(f"--- {f.relative_to(log_dir)}\n"
                            f"{f.read_text(encoding='utf-8', errors='replace')[-4000:]}"
                            for f in files)
    return out


def run_torchrun(nproc: int, args: Sequence[str], log_dir: Path,
                 timeout: float = TORCHRUN_TIMEOUT_S) -> str:
    """``args`` (a script of this file and its arguments) under ``torchrun --standalone`` with
    ``nproc`` CPU ranks; returns torchrun's stdout (each line prefixed with its rank).

    When torchrun fails, or still runs after ``timeout`` s (it and its ranks are then
    killed), an AssertionError names the ranks that did not print ``rank R finished``
    and holds every rank's log and the end of torchrun's own.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(torchrun_cmd(nproc, *args, log_dir=log_dir), env=child_env(),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        what = f"torchrun exited with {proc.returncode}"
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        out, err = proc.communicate(timeout=30)
        what = f"torchrun still ran after {timeout:g} s (killed with its ranks)"
    if proc.returncode == 0:
        return out
    logs = rank_logs(log_dir, nproc)
    stuck = [r for r, text in logs.items() if f"rank {r}: {FINISHED}" not in text]
    report = [f"{what}; rank(s) {stuck} of {nproc} did not finish"]
    report += [f"===== rank {r} =====\n{text or '(no log)'}" for r, text in logs.items()]
    report.append(f"===== torchrun (stderr, end) =====\n{err[-3000:]}")
    raise AssertionError("\n".join(report))


def _join_group(timeout_s: float = RANK_TIMEOUT_S):
    """``init_distributed("cpu")`` for a rank of the scripts below, each wait bounded: the
    process group's timeout is ``timeout_s``, and after :data:`RANK_DEADLINE_S` the rank
    prints every thread's stack to its stderr and exits."""
    import faulthandler

    from wespeaker_lap.utils.distributed import init_distributed

    faulthandler.dump_traceback_later(RANK_DEADLINE_S, exit=True)
    info = init_distributed("cpu", timeout_s=timeout_s)
    print(f"rank {info.rank}: in the process group of {info.world_size}", flush=True)
    return info


def _leave_group(info) -> None:
    """Wait for every rank (as train.py does: no rank leaves while another still works),
    leave the group, say so last, and exit at once (no interpreter teardown)."""
    import faulthandler
    import os
    import sys

    from wespeaker_lap.utils.distributed import barrier, cleanup

    barrier(info)
    cleanup()
    print(f"rank {info.rank}: {FINISHED}", flush=True)
    # the rank's work is done and checked; its interpreter teardown (gloo's threads) once
    # outlived the deadline after 'finished' under a loaded CI (exit code 1 from the
    # watchdog), which is no part of what these scripts test
    faulthandler.cancel_dump_traceback_later()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ------------------------------------------------------- one-step gradient script
def grad_step_main(config: str, out: str, accum: int) -> None:
    """One SGD(lr=1) step on a fixed batch of 4; rank r of W takes rows [r*4/W, (r+1)*4/W).

    Run alone with ``accum=2`` (two micro-batches of 2) or under torchrun with 2
    processes and ``accum=1``: DDP must average the two ranks' gradients exactly
    as accumulation sums the halves. Rank 0 writes the updated weights to ``out``.
    """
    import torch

    from wespeaker_lap.io.checkpoints import trained_state_dict
    from wespeaker_lap.utils.config import load_config
    from wespeaker_lap.utils.distributed import wrap_ddp
    from wespeaker_lap.utils.executor import (
        EpochOptions,
        SpeakerTrainModule,
        make_grad_scaler,
        run_epoch,
    )
    from wespeaker_lap.utils.schedulers import WarmupCosine, param_groups
    from wespeaker_lap.utils.trainer import build_model, seed_everything

    info = _join_group()
    cfg = load_config(config)
    seed_everything(0)
    model = build_model(cfg, num_class=4)
    module = wrap_ddp(SpeakerTrainModule(model, torch.nn.CrossEntropyLoss()), info)
    opt = torch.optim.SGD(param_groups(model), lr=1.0)
    sched = WarmupCosine(opt, num_epochs=1, epoch_iter=1, initial_lr=1.0, final_lr=1.0)
    g = torch.Generator().manual_seed(123)
    wavs = 0.1 * torch.randn(4, 8000, generator=g)
    batch = {"wavs": wavs, "lengths": torch.tensor([8000, 6000, 7000, 8000]),
             "labels": torch.tensor([0, 1, 2, 3])}
    per_rank = 4 // info.world_size
    rows = range(info.rank * per_rank, (info.rank + 1) * per_rank)
    micro = per_rank // accum
    loader = [{k: v[rows.start + i * micro: rows.start + (i + 1) * micro] for k, v in batch.items()}
              for i in range(accum)]
    run_epoch(loader, module, opt, sched, None, make_grad_scaler(info.device, False, "bfloat16"),
              1, EpochOptions(epoch_iter=1, accum_grad=accum, progress=False), info)
    if info.is_main:
        torch.save(trained_state_dict(model), out)
    _leave_group(info)


# ------------------------------------------------------ sharded validation script
def valid_shards_main(config: str, valid_dir: str, trials: str, mode: str) -> None:
    """run_validation under torchrun: ``one_utt`` gives the set a single utterance (the
    other ranks embed none); ``fail`` gives rank 1 an entry that cannot be read. Every
    rank prints what it got; rank 0 prints the EER."""
    import torch

    from wespeaker_lap.scoring.score import Trials
    from wespeaker_lap.utils.config import load_config
    from wespeaker_lap.utils.trainer import build_model, seed_everything
    from wespeaker_lap.utils.validation import ValidOptions, load_valid_set, run_validation

    info = _join_group()
    cfg = load_config(config)
    seed_everything(0)
    model = build_model(cfg, num_class=4).train()
    opts = ValidOptions(batch_size=2)
    vset = load_valid_set(valid_dir, trials, cfg["train_label"], opts)
    if mode == "one_utt":
        vset.entries = vset.entries[:1]
        key = vset.entries[0]["key"]
        vset.trials = Trials([key, key], [key, key], np.array([1, 0]))
    elif mode == "fail" and info.rank == 1:
        vset.entries = [vset.entries[0], {"key": "broken"}]
    before = torch.get_rng_state()
    try:
        result = run_validation(model, vset, opts, info)
        print(f"rank {info.rank} result {None if result is None else result.metrics['eer']}",
              flush=True)
    except RuntimeError as e:
        print(f"rank {info.rank} raised {e}", flush=True)
    assert model.training and torch.equal(before, torch.get_rng_state())
    _leave_group(info)


if __name__ == "__main__":
    if sys.argv[1] == "grad_step":
        grad_step_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1] == "valid_shards":
        valid_shards_main(*sys.argv[2:6])
