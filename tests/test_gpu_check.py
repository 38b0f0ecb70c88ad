"""benchmarks/gpu_check.sh in its CPU mode (tiny models): every section runs and passes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("nccl", "resume", "extract_equal", "steps", "loader")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHON=sys.executable,
               PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


@pytest.mark.slow
def test_cpu_quick_mode_runs_every_section_and_writes_the_summary(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--device", "cpu", "--quick",
                           "--out", str(out)], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    for section in SECTIONS:
        assert f"| {section} | PASS |" in summary, summary
        assert (out / f"{section}.log").is_file()
    assert "- commit: " in summary and "- cpu: " in summary
    # the resume section really killed a run and resumed it with tools/train.sh
    resume = (out / "resume.log").read_text()
    assert "killed (" in resume and "resumed after epoch 1 by tools/train.sh: True" in resume
    # the table: both layouts x three backends, bf16 autocast on CPU
    rows = json.loads((out / "steps.json").read_text())["rows"]
    assert {(r["size"], r["backend"]) for r in rows} == {
        (s, b) for s in ("base_plus", "large")
        for b in ("LAP_ASTP", "SSL_ECAPA_TDNN_c512", "MHFA")}
    assert all(r["amp"] == "bfloat16" and r["loss_finite"] and r["rtf_fp32"] > 0 for r in rows)
    assert "crops/s" in (out / "loader.log").read_text()


def test_bad_options_are_refused_before_any_work(tmp_path):
    for args, msg in ((["--device", "tpu"], "--device cuda or cpu"),
                      (["--frobnicate"], "unknown option --frobnicate"),
                      (["--sections", "nope", "--out", str(tmp_path / "o")],
                       "unknown section nope")):
        proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", *args], cwd=REPO, env=_env(),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and msg in proc.stderr, (args, proc.stderr)


def test_cuda_mode_without_a_gpu_fails_with_a_clear_message(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "extract_equal",
                           "--device", "cuda"], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "CUDA is not available here" in proc.stderr


def test_gpu_check_passes_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    r = subprocess.run(["shellcheck", "-x", "benchmarks/gpu_check.sh"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
