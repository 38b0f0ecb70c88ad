"""tools/constraints.txt (the versions the suite passed with) and tools/pin_versions.py."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
BEGIN = "# torch block: only while the torch installed is this one (tools/install.sh)"
END = "# end of the torch block"


def _parse(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(torch block, the rest): {name: version}; fails on a malformed line."""
    lines = text.splitlines()
    assert lines.count(BEGIN) == 1 and lines.count(END) == 1, "torch block markers"
    i, j = lines.index(BEGIN), lines.index(END)
    blocks: tuple[dict[str, str], dict[str, str]] = ({}, {})
    for n, line in enumerate(lines):
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and name == name.lower() and "+" not in version, f"line {n + 1}: {line!r}"
        Version(version)
        block = blocks[0] if i < n < j else blocks[1]
        assert name not in blocks[0] and name not in blocks[1], f"line {n + 1}: {name} twice"
        block[name] = version
    return blocks


def _declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(d) for d in [*project["dependencies"], *extras["dev"],
                                     *extras["export"]]]


def test_the_constraints_pin_every_declared_dependency_inside_its_range():
    torch_block, rest = _parse((REPO / "tools" / "constraints.txt").read_text())
    pins = {**torch_block, **rest}
    assert "torch" in torch_block and "wespeaker-lap" not in pins
    for req in _declared():
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{req} is not pinned"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), (str(req), pins[name])
    # what the package needs besides torch is pinned for any torch
    assert {"transformers", "numpy", "filelock", "typing-extensions"} <= set(rest)


def test_pin_versions_pins_this_environment_and_only_what_the_install_pulls():
    proc = subprocess.run([sys.executable, "tools/pin_versions.py"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    torch_block, rest = _parse(proc.stdout)
    pins = {**torch_block, **rest}
    assert torch_block["torch"] == Version(importlib.metadata.version("torch")).public
    assert pins["transformers"] == importlib.metadata.version("transformers")
    for req in _declared():
        assert req.name.lower().replace("_", "-") in pins, req
    # not the project, not the installer's own tools
    assert not {"wespeaker-lap", "pip"} & set(pins)
    # torch's block: torch and what only torch pulls (sympy), never what others need too
    assert "sympy" in torch_block and "filelock" not in torch_block
