"""Recipes run as copies whose commands only log their command lines (stages 1-2 and the
option checks of tools/parse_options.sh in a second, without corpora or a virtualenv)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG"
if [[ "$*" == *wespeaker_lap.bin.probe_precision* ]]; then echo "${FAKE_PRECISION:-bfloat16}"; fi
if [ -n "${FAKE_FAIL:-}" ] && [[ "$*" == *"$FAKE_FAIL"* ]]; then exit 3; fi
"""
FAKE_MAKE_CORPUS = """#!/usr/bin/env bash
mkdir -p "$1/data/train"
echo "make_corpus $*" >> "$FAKE_LOG"
"""


class Recipe:
    """A copy of examples/<rel>/run.sh with fake commands; ``run`` returns (proc, commands)."""

    def __init__(self, tmp: Path, rel: str, *base_opts: str):
        self.dir = tmp / "repo" / "examples" / rel
        self.dir.mkdir(parents=True)
        shutil.copy(ROOT / "examples" / rel / "run.sh", self.dir / "run.sh")
        (self.dir / "path.sh").write_text("export LC_ALL=C\n")  # no virtualenv put first
        (self.dir / "tools").symlink_to(ROOT / "tools")
        (self.dir / "local").mkdir()
        fake = self.dir / "local" / "make_corpus.sh"
        fake.write_text(FAKE_MAKE_CORPUS)
        fake.chmod(0o755)
        self.bin = tmp / "bin"
        self.bin.mkdir()
        (self.bin / "python").write_text(FAKE_PYTHON)
        (self.bin / "python").chmod(0o755)
        self.log = tmp / "commands.log"
        self.base_opts = base_opts

    def run(self, *opts: str, fail: str = "") -> tuple[subprocess.CompletedProcess, list[str]]:
        return self._bash(self.dir / "run.sh", *self.base_opts, *opts, fail=fail)

    def run_tool(self, name: str, *opts: str) -> tuple[subprocess.CompletedProcess, list[str]]:
        """The repository's tools/<name>, with this copy's fake commands."""
        return self._bash(ROOT / "tools" / name, *opts)

    def _bash(self, script: Path, *args: str, fail: str = ""):
        self.log.write_text("")
        env = {**os.environ, "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
               "FAKE_LOG": str(self.log), "FAKE_FAIL": fail}
        proc = subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                              env=env, timeout=60)
        return proc, self.log.read_text().splitlines()
