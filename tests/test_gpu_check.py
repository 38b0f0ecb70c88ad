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


FAKE_PYTHON = """#!/usr/bin/env bash
# a python that logs its calls; 'import torch' works, the sections print nothing (FAIL)
echo "$0 $*" >> "$FAKE_LOG"
exit 0
"""


def _bare_env(tmp_path: Path) -> dict[str, str]:
    """No PYTHON, no venv of ours, and a ``python`` on PATH without torch (as on a bare box)."""
    trap = tmp_path / "trap"
    trap.mkdir()
    (trap / "python").write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named "
                                 "'torch'\" >&2\nexit 1\n")
    (trap / "python").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV")}
    env.update(PATH=f"{trap}{os.pathsep}/usr/bin{os.pathsep}/bin",
               WESPEAKER_LAP_VENV=str(tmp_path / "no-venv"), FAKE_LOG=str(tmp_path / "log"))
    return env


def test_without_a_python_that_has_torch_it_says_how_to_point_at_one(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--device", "cpu", "--out",
                           str(out)], cwd=REPO, env=_bare_env(tmp_path), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "'python' cannot import torch" in proc.stderr
    assert "tools/install.sh" in proc.stderr and "--python" in proc.stderr
    assert not out.exists()  # refused before any work


def test_it_finds_the_venv_beside_the_script_by_itself(tmp_path):
    # a copy of the script in a repository layout whose .venv holds a fake python
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    shutil.copy(REPO / "benchmarks" / "gpu_check.sh", repo / "benchmarks")
    for py in (repo / ".venv" / "bin" / "python", tmp_path / "other" / "python"):
        py.parent.mkdir(parents=True)
        py.write_text(FAKE_PYTHON)
        py.chmod(0o755)
    env = _bare_env(tmp_path)
    del env["WESPEAKER_LAP_VENV"]
    log = tmp_path / "log"
    args = ["bash", str(repo / "benchmarks" / "gpu_check.sh"), "--device", "cpu",
            "--sections", "extract_equal", "--out", str(tmp_path / "out")]
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    # the fake section prints no '"ok": true': one failed section, run by the .venv's python
    assert proc.returncode == 1, proc.stdout + proc.stderr
    calls = log.read_text().splitlines()
    assert calls and all(c.startswith(f"{repo}/.venv/bin/python ") for c in calls), calls
    assert any("benchmarks/gpu_check.py --device cpu extract_equal" in c for c in calls)
    assert "| extract_equal | FAIL |" in (tmp_path / "out" / "summary.md").read_text()
    # --python wins over the venv
    log.unlink()
    proc = subprocess.run([*args, "--python", str(tmp_path / "other" / "python")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    calls = log.read_text().splitlines()
    assert calls and all(c.startswith(f"{tmp_path}/other/python ") for c in calls), calls
