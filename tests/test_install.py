"""tools/install.sh against a fake venv Python: which constraints each mode hands to pip.

The fake ``bin/python`` (in a temporary WESPEAKER_LAP_VENV) records every call and, for
``-m pip ... -c FILE``, the file's lines; nothing is installed, nothing downloaded, and the
real ``.venv`` is never touched (``python3`` on PATH is a trap that fails the run).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "tools" / "constraints.txt"

FAKE_PYTHON = r"""#!/usr/bin/env bash
# a venv python that logs its calls: one line per call, then the -c files of pip calls
{ printf 'CALL'; printf ' %s' "$@"; printf '\n'; } >> "$FAKE_LOG"
if [ "${1:-}" = -m ] && [ "${2:-}" = pip ]; then
  prev=
  for a in "$@"; do
    [ "$prev" = -c ] && sed 's/^/  PIN /' "$a" >> "$FAKE_LOG"
    prev=$a
  done
  exit 0
fi
case "$*" in
  *'m.version("torch")'*) [ -n "${FAKE_TORCH:-}" ] && echo "$FAKE_TORCH" && exit 0; exit 1 ;;
esac
exit 0
"""


def _exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _run(tmp_path: Path, *args: str, torch_installed: str = "", torch_version: str = ""):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    _exe(venv / "bin" / "python", FAKE_PYTHON)
    trap = tmp_path / "trap"
    trap.mkdir(exist_ok=True)
    _exe(trap / "python3", "#!/bin/sh\necho 'python3 on PATH was called' >&2\nexit 99\n")
    log = tmp_path / "log"
    log.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_VERSION", "VIRTUAL_ENV")}
    env.update(WESPEAKER_LAP_VENV=str(venv), FAKE_LOG=str(log), FAKE_TORCH=torch_installed,
               PATH=f"{trap}{os.pathsep}/usr/bin{os.pathsep}/bin")
    if torch_version:
        env["TORCH_VERSION"] = torch_version
    proc = subprocess.run(["bash", "tools/install.sh", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    return proc, log.read_text()


def _pip_calls(log: str) -> list[tuple[str, list[str]]]:
    """(call line, pinned lines of its -c file) for each pip install call except pip's own."""
    calls: list[tuple[str, list[str]]] = []
    for line in log.splitlines():
        if line.startswith("CALL"):
            calls.append((line, []))
        elif line.startswith("  PIN "):
            calls[-1][1].append(line[len("  PIN "):])
    return [(c, p) for c, p in calls if " -m pip install" in c and "--upgrade pip" not in c]


def _pinned_torch() -> str:
    return next(ln.split("==")[1] for ln in CONSTRAINTS.read_text().splitlines()
                if ln.startswith("torch=="))


def test_default_install_passes_the_constraints_file_to_every_pip_call(tmp_path):
    proc, log = _run(tmp_path, "--no-apt")
    assert proc.returncode == 0, proc.stderr
    calls = _pip_calls(log)
    # torch first, at the pinned version, then the package with its extras
    assert len(calls) == 2, log
    assert f"torch=={_pinned_torch()}" in calls[0][0].split()
    assert calls[1][0].endswith(f"-e {REPO}[dev,export]")
    for call, pins in calls:
        assert f" -c {CONSTRAINTS} " in call + " ", call
        assert "--upgrade" not in call
        assert pins == [ln for ln in CONSTRAINTS.read_text().splitlines()]


def test_latest_resolves_afresh_holding_only_the_installed_torch(tmp_path):
    for args in (("--latest", "--no-apt"), ("--no-apt", "--latest")):
        proc, log = _run(tmp_path, *args, torch_installed="2.13.0+cpu")
        assert proc.returncode == 0, proc.stderr
        calls = _pip_calls(log)
        assert len(calls) == 1, log  # torch is installed: not installed again
        call, pins = calls[0]
        assert "constraints.txt" in call and str(CONSTRAINTS) not in call
        assert "--upgrade --upgrade-strategy eager" in call
        assert pins == ["torch==2.13.0+cpu"]


def test_latest_in_a_new_venv_installs_torch_version_first(tmp_path):
    proc, log = _run(tmp_path, "--latest", "--no-apt", torch_version="2.9.1")
    assert proc.returncode == 0, proc.stderr
    calls = _pip_calls(log)
    assert "torch==2.9.1" in calls[0][0].split() and calls[0][1] == ["torch==2.9.1"]
    assert all(str(CONSTRAINTS) not in c for c, _ in calls)


def test_an_installed_build_of_the_pinned_torch_keeps_the_whole_file(tmp_path):
    proc, log = _run(tmp_path, "--no-apt", torch_installed=f"{_pinned_torch()}+cu128")
    assert proc.returncode == 0, proc.stderr
    calls = _pip_calls(log)
    assert len(calls) == 1 and f"-c {CONSTRAINTS} " in calls[0][0], log


def test_another_torch_leaves_out_only_the_torch_block(tmp_path):
    proc, log = _run(tmp_path, "--no-apt", torch_version="2.9.1")
    assert proc.returncode == 0, proc.stderr
    assert "is not the tested" in proc.stdout
    calls = _pip_calls(log)
    assert "torch==2.9.1" in calls[0][0].split()
    pins = calls[0][1]
    assert str(CONSTRAINTS) not in calls[0][0]
    assert not any(p.startswith(("torch==", "sympy==")) for p in pins), pins
    assert any(p.startswith("transformers==") for p in pins), pins
    assert any(p.startswith("filelock==") for p in pins), pins  # shared: stays pinned


def test_unknown_option_is_refused_before_any_work(tmp_path):
    proc, log = _run(tmp_path, "--no-apt", "--lastest")
    assert proc.returncode == 2 and "unknown option --lastest" in proc.stderr
    assert log == ""


def test_install_script_passes_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    r = subprocess.run(["shellcheck", "-x", "tools/install.sh", "tools/refresh_pins.sh"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
