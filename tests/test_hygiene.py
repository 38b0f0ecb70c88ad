"""Repository hygiene: no references to files outside the repository, a license that matches."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]

#: What no tracked file may contain: notes that are not part of the project, and
#: absolute paths of a build machine.
FORBIDDEN = {
    # a capitalised Markdown file the repository does not hold (checked below against
    # the tracked files): notes from outside the project
    "a reference to an external notes file": re.compile(r"\b[A-Z][A-Z_]+\.md\b"),
    "a reference to a numbered source paper": re.compile(r"\bseeds?[ _/]?0\d\d\b"),
    "an absolute path of a build machine": re.compile(r"(?<![\w.])/(?:work|root|home)/\w"),
}


def tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    paths = [REPO / p for p in out.stdout.decode().split("\0") if p]
    return [p for p in paths if p.is_file() and p.suffix not in {".png", ".wav", ".npy", ".pt"}]


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="not a git checkout")
def test_no_external_references_or_machine_paths():
    bad = []
    files = tracked_text_files()
    tracked = {p.name for p in files}  # README.md and the like are the project's own
    for path in files:
        if path == Path(__file__).resolve():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for what, pattern in FORBIDDEN.items():
            for m in pattern.finditer(text):
                if what == "a reference to an external notes file" and m.group(0) in tracked:
                    continue
                line = text.count("\n", 0, m.start()) + 1
                bad.append(f"{path.relative_to(REPO)}:{line}: {what}: {m.group(0)!r}")
    assert bad == []


def test_hygiene_patterns_catch_what_they_should():
    assert FORBIDDEN["a reference to an external notes file"].search("see NOTES.md")
    assert not FORBIDDEN["a reference to an external notes file"].search("see notes.md")
    assert FORBIDDEN["a reference to a numbered source paper"].search("UniPool (seed 042)")
    assert FORBIDDEN["an absolute path of a build machine"].search("``/home/user/x``")
    assert not FORBIDDEN["an absolute path of a build machine"].search("exp/home/x and /tmp/y")


def test_license_file_matches_pyproject():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert meta["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
