"""The installed torch and transformers against the ranges pyproject.toml declares, and the
warning ``import wespeaker_lap`` logs outside them (wespeaker_lap.check_tested_versions)."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from wespeaker_lap import versions

REPO = Path(__file__).resolve().parents[1]


def _declared() -> dict[str, Requirement]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = {Requirement(d).name: Requirement(d) for d in deps}
    return {name: reqs[name] for name in versions.TESTED}


def test_installed_torch_and_transformers_fall_within_the_declared_range():
    for name, req in _declared().items():
        have = Version(importlib.metadata.version(name))
        assert req.specifier.contains(have, prereleases=True), (name, str(have), str(req))


def test_the_declared_ranges_have_upper_bounds_the_import_check_understands():
    for name, req in _declared().items():
        assert any(s.operator in ("<", "<=") for s in req.specifier), f"{name}: no upper bound"
        assert versions._inside("1.0", str(req.specifier)) is not None, str(req)


@pytest.mark.parametrize("spec", [">=2.1,<3", ">=4.40,<6", "==2.13.0", "!=5.25.0", ">4.40",
                                  "<=6", "<2.13"])
def test_the_import_checks_range_test_agrees_with_packaging(spec):
    for v in ("2.0.1", "2.1", "2.1.0", "2.12.9", "2.13.0+cpu", "2.13.1", "3.0.0", "4.39.3",
              "4.40.0", "4.40.1", "5.25.0", "6", "6.0.0", "10.0"):
        expected = SpecifierSet(spec).contains(Version(v), prereleases=True)
        assert versions._inside(v, spec) is expected, (v, spec)
    assert versions._inside("2.13.0", "~=2.13") is None  # not understood: no warning


def test_the_metadata_reader_finds_what_importlib_metadata_finds():
    requires, installed = versions._versions()
    assert installed == {n: importlib.metadata.version(n) for n in versions.TESTED}
    assert requires == importlib.metadata.requires("wespeaker-lap")


def _fake(monkeypatch, **installed):
    requires = [str(r) for r in _declared().values()] + ['peft>=0.13; extra == "export"']
    monkeypatch.setattr(versions, "_versions", lambda: (requires, installed))


def test_no_warning_inside_the_range(monkeypatch, caplog):
    _fake(monkeypatch, torch="2.13.0+cpu", transformers="5.25.0")
    with caplog.at_level(logging.WARNING, logger="wespeaker_lap"):
        assert versions.check_tested_versions() == []
    assert caplog.records == []


def test_one_warning_line_for_each_package_outside_the_range(monkeypatch, caplog):
    _fake(monkeypatch, torch="2.0.1", transformers="6.1.0")
    with caplog.at_level(logging.WARNING, logger="wespeaker_lap"):
        lines = versions.check_tested_versions()
    assert [r.getMessage() for r in caplog.records] == lines and len(lines) == 2
    torch_line, tf_line = lines
    assert "torch 2.0.1 is outside the tested range torch" in torch_line
    assert "transformers 6.1.0 is outside the tested range transformers" in tf_line
    assert all("\n" not in ln and "tools/constraints.txt" in ln for ln in lines)


def test_nothing_installed_or_nothing_declared_is_silent(monkeypatch):
    _fake(monkeypatch)  # neither torch nor transformers found
    assert versions.check_tested_versions() == []
    monkeypatch.setattr(versions, "_versions", lambda: ([], {"torch": "9.0"}))
    assert versions.check_tested_versions() == []


def _dist_info(root: Path, name: str, version: str, requires: list[str] = ()) -> None:
    d = root / f"{name}-{version}.dist-info"
    d.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
             *(f"Requires-Dist: {r}" for r in requires), "", "Description."]
    (d / "METADATA").write_text("\n".join(lines) + "\n")


def test_importing_the_package_warns_about_a_transformers_outside_the_range(tmp_path):
    # a site directory first on sys.path with this tree's metadata and a transformers 6.1.0
    site = tmp_path / "site"
    site.mkdir()
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    _dist_info(site, "wespeaker_lap", "0.1.0", deps)
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{REPO}")
    cmd = [sys.executable, "-c", "import wespeaker_lap"]
    quiet = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=60)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    _dist_info(site, "transformers", "6.1.0")
    loud = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert loud.returncode == 0
    declared = next(d for d in deps if d.startswith("transformers"))  # as written there
    assert loud.stderr.splitlines() == [
        f"wespeaker_lap: transformers 6.1.0 is outside the tested range {declared} "
        "(pyproject.toml; tools/constraints.txt pins the versions the tests passed with); "
        "results may differ"], loud.stderr
