"""The installed torch and transformers against the ranges ``pyproject.toml`` declares.

:func:`check_tested_versions` runs when the package is imported: outside a range
it logs one warning line; ``tools/constraints.txt`` holds the versions the tests
passed with. It reads the installed distributions' metadata files itself and
compares plain release numbers: importing ``importlib.metadata`` (email, zipfile,
csv) and ``packaging`` would cost the numpy-only paths (``wespeaker-lap --onnx``,
scoring) tens of milliseconds; tests/test_versions.py checks it against both.
"""

from __future__ import annotations

import logging
import os
import re
import sys

#: The dependencies whose installed versions are checked on import.
TESTED = ("torch", "transformers")

_log = logging.getLogger("wespeaker_lap")
_SPEC = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*(\d+(?:\.\d+)*)\s*")
_RELEASE = re.compile(r"\d+(?:\.\d+)*")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _metadata(names: tuple[str, ...]) -> dict[str, dict[str, list[str]]]:
    """Header fields of the installed distributions ``names``: {name: {field: [values]}}.

    What ``importlib.metadata`` finds (the first ``<name>-<version>.dist-info`` or
    ``<name>.egg-info`` on ``sys.path``: an editable install's in the repository root comes
    first there), read directly: importing ``importlib.metadata`` (email, zipfile, csv) would
    cost the numpy-only paths tens of milliseconds.
    """
    wanted = {_canonical(n): n for n in names}
    found: dict[str, dict[str, list[str]]] = {}
    for entry in sys.path:
        try:
            listing = os.listdir(entry or ".")
        except OSError:
            continue
        for item in listing:
            stem, dot, kind = item.rpartition(".")
            if not dot or kind not in ("dist-info", "egg-info"):
                continue
            name = wanted.get(_canonical(stem.split("-", 1)[0]))
            if name is None or name in found:
                continue
            fields: dict[str, list[str]] = {}
            path = os.path.join(entry or ".", item,
                                "METADATA" if kind == "dist-info" else "PKG-INFO")
            try:
                with open(path, encoding="utf-8") as f:
                    for line in f:
                        if not line.strip():
                            break  # the description follows the headers
                        key, _, value = line.partition(":")
                        fields.setdefault(key, []).append(value.strip())
            except OSError:
                continue
            found[name] = fields
    return found


def _versions() -> tuple[list[str], dict[str, str]]:
    """(the installed package's requirement strings, {name: installed version} of TESTED)."""
    meta = _metadata(("wespeaker-lap", *TESTED))
    requires = meta.get("wespeaker-lap", {}).get("Requires-Dist", [])
    return requires, {n: meta[n]["Version"][0] for n in TESTED if "Version" in meta.get(n, {})}


def _inside(version: str, specifier: str) -> bool | None:
    """Whether ``version`` meets ``specifier`` (``>=4.40,<6``); None when not understood.

    Release numbers only: a local label or a pre-release counts as its release
    (``2.13.0+cpu`` as 2.13.0). Specifiers other than ``>= <= > < == !=`` on release numbers
    (``~=``, ``2.*``) are not understood; tests/test_versions.py keeps pyproject's simple.
    """
    have = _RELEASE.match(version)
    if have is None:
        return None
    v = tuple(int(x) for x in have.group().split("."))
    for clause in specifier.split(","):
        m = _SPEC.fullmatch(clause)
        if m is None:
            return None
        w = tuple(int(x) for x in m.group(2).split("."))
        n = max(len(v), len(w))
        a, b = v + (0,) * (n - len(v)), w + (0,) * (n - len(w))
        ok = {">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b, "==": a == b,
              "!=": a != b}[m.group(1)]
        if not ok:
            return False
    return True


def check_tested_versions() -> list[str]:
    """Warn, one log line each, about :data:`TESTED` packages installed outside their range.

    The ranges are the installed package's requirements (``pyproject.toml``'s dependencies).
    Returns the warnings: empty inside the ranges, and when the package is not installed.
    """
    requires, installed = _versions()
    out = []
    for line in requires:
        m = re.fullmatch(r"\s*([A-Za-z0-9._-]+)\s*\(?([^;()]*)\)?\s*", line)  # no markers
        if m is None or _canonical(m.group(1)) not in TESTED or not m.group(2).strip():
            continue
        name, spec = _canonical(m.group(1)), m.group(2).replace(" ", "")
        have = installed.get(name)
        if have is not None and _inside(have, spec) is False:
            msg = (f"wespeaker_lap: {name} {have} is outside the tested range {name}{spec} "
                   "(pyproject.toml; tools/constraints.txt pins the versions the tests passed "
                   "with); results may differ")
            _log.warning(msg)
            out.append(msg)
    return out
