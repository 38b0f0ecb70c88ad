#!/usr/bin/env python3
"""Write the constraints file of the environment this Python runs in (tools/constraints.txt).

Pins exactly what the project's install pulls: the installed ``wespeaker-lap``'s requirements
with its ``dev`` and ``export`` extras, followed transitively through the installed
distributions' metadata (markers evaluated for this interpreter). Nothing else in the
environment is pinned. Local version labels (``2.13.0+cpu``) are dropped: they name one
index's build, and ``==2.13.0`` is met by every build of that version.

torch and what only torch pulls go in a block of their own, between the lines
:data:`TORCH_BEGIN` and :data:`TORCH_END`: ``tools/install.sh`` installs torch first at
``TORCH_VERSION`` (default: this block's ``torch==`` line) and leaves the block out when the
torch installed (or asked for) is another version, so its requirements may differ.

    python tools/pin_versions.py                 # to stdout
    python tools/pin_versions.py --out tools/constraints.txt
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import platform
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

PROJECT = "wespeaker-lap"
EXTRAS = ("dev", "export")
TORCH_BEGIN = "# torch block: only while the torch installed is this one (tools/install.sh)"
TORCH_END = "# end of the torch block"


def canonical(name: str) -> str:
    """PEP 503 name: ``PyYAML`` -> ``pyyaml``, ``kaldi_native_fbank`` -> ``kaldi-native-fbank``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _wanted(req: Requirement, extras: frozenset[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": e}) for e in ("", *sorted(extras)))


def closure(roots: list[tuple[str, frozenset[str]]], skip: frozenset[str] = frozenset(),
            ) -> dict[str, str]:
    """Installed distributions reachable from ``roots`` ((name, extras) pairs): {name: version}.

    ``skip`` names are neither listed nor followed. A requirement whose distribution is not
    installed is reported on stderr and left out.
    """
    seen: dict[str, frozenset[str]] = {}
    versions: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name, extras = todo.pop()
        key = canonical(name)
        if key in skip or (key in seen and extras <= seen[key]):
            continue
        seen[key] = seen.get(key, frozenset()) | extras
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            print(f"pin_versions.py: {name} is required but not installed; not pinned",
                  file=sys.stderr)
            continue
        versions[key] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if _wanted(req, seen[key]):
                todo.append((req.name, frozenset(req.extras)))
    return versions


def pins() -> tuple[dict[str, str], dict[str, str]]:
    """(torch block, the rest): {canonical name: public version}, the project itself left out."""
    try:
        dist = md.distribution(PROJECT)
    except md.PackageNotFoundError:
        sys.exit(f"pin_versions.py: {PROJECT} is not installed in {sys.prefix} "
                 "(run tools/install.sh with WESPEAKER_LAP_VENV pointing here first)")
    project = canonical(PROJECT)
    direct = [(Requirement(r).name, frozenset(Requirement(r).extras))
              for r in dist.requires or [] if _wanted(Requirement(r), frozenset(EXTRAS))]
    every = closure(direct, skip=frozenset({project}))
    # what the package needs without going through torch stays pinned for any torch
    rest = closure([d for d in direct if canonical(d[0]) != "torch"],
                   skip=frozenset({project, "torch"}))
    public = {k: Version(v).public for k, v in every.items()}
    return ({k: v for k, v in public.items() if k not in rest},
            {k: v for k, v in public.items() if k in rest})


def render(torch_block: dict[str, str], rest: dict[str, str]) -> str:
    if "torch" not in torch_block:
        sys.exit("pin_versions.py: torch is not installed here; nothing to pin it to")
    lines = [
        "# The versions the test suite passed with. tools/install.sh installs with these",
        "# (pip -c); bash tools/install.sh --latest resolves afresh. Refresh them with",
        "# bash tools/refresh_pins.sh (written by tools/pin_versions.py; do not edit by hand).",
        f"# Python {platform.python_version()}, {sys.platform} {platform.machine()}.",
        "",
        TORCH_BEGIN,
        *(f"{k}=={v}" for k, v in sorted(torch_block.items())),
        TORCH_END,
        "",
        *(f"{k}=={v}" for k, v in sorted(rest.items())),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="write here instead of stdout")
    args = ap.parse_args(argv)
    text = render(*pins())
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
