"""The package's layering, read from its imports: each folder imports only the folders below it.

The rules live in :data:`ALLOWED` (and ``docs/architecture.md`` explains them).
A package import that goes upward, into a folder not listed for it, fails here;
so does a package import placed inside a function (the way cycles are hidden),
outside the few places :data:`LAZY_OK` lists (``cli/``, which imports its
torch-based parts on use so that ``--help`` and the numpy-only paths start fast,
the package ``__init__``'s lazy ``load_model`` and ``api/``'s PyTorch backend).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "wespeaker_lap"

#: What each part of the package may import from the package (besides itself).
#: Bottom to top; a part may import any part listed for it, never one above.
ALLOWED: dict[str, set[str]] = {
    "__init__": {"api", "versions"},
    "versions": set(),
    "checks": set(),
    "registry": set(),
    "lr_schedule": set(),
    "io": {"checks"},
    "frontend": {"checks", "io", "registry"},
    "scoring": {"checks", "io"},
    "dataset": {"checks", "io", "registry"},
    "models": {"checks", "io", "registry", "frontend"},
    "pretrain": {"checks", "io", "registry", "lr_schedule", "frontend", "dataset"},
    "utils": {"checks", "io", "registry", "lr_schedule", "frontend", "dataset", "models",
              "scoring"},
    "export": {"checks", "io", "registry", "frontend", "models"},
    "api": {"checks", "io", "registry", "frontend", "dataset", "models", "scoring", "utils",
            "export"},
    "cli": {"checks", "io", "registry", "frontend", "dataset", "models", "scoring", "utils",
            "export", "api"},
    "bin": {"checks", "io", "registry", "lr_schedule", "frontend", "dataset", "models",
            "scoring", "utils", "cli", "pretrain", "export", "api"},
}
#: Parts whose functions may import package modules on use, and which parts they may so
#: import (None: any they may import at all). ``cli`` imports its torch-based parts on use so
#: that ``--help`` and ``--onnx`` start without torch. The package's ``__init__`` gives
#: ``wespeaker_lap.load_model`` through a PEP 562 ``__getattr__``: importing ``api`` at its
#: top would load scoring, export and io into every ``import wespeaker_lap.<anything>``.
#: ``api`` imports its own PyTorch backend only when ``runtime="torch"`` asks for it: the
#: ONNX runtime path must never import torch.
LAZY_OK: dict[str, set[str] | None] = {"cli": None, "__init__": {"api"}, "api": {"api"}}


def _part(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _package_imports(tree: ast.AST, path: Path):
    """Yield ``(lineno, imported part, inside a function)`` for every package import."""
    def visit(node: ast.AST, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    raise AssertionError(f"{path}:{child.lineno}: relative import; "
                                         "use absolute wespeaker_lap imports")
                mod = child.module or ""
                names = [mod] if mod != "wespeaker_lap" else \
                    [f"wespeaker_lap.{a.name}" for a in child.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "wespeaker_lap" and len(parts) > 1:
                    yield child.lineno, parts[1], in_function
            yield from visit(child, inner)
    yield from visit(tree, False)


def _modules():
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _violations(path: Path, source: str) -> list[str]:
    part = _part(path)
    allowed = ALLOWED.get(part)
    if allowed is None:
        return [f"{path}: part {part!r} is not in the layering table (tests/test_layering.py)"]
    out = []
    for lineno, target, in_function in _package_imports(ast.parse(source), path):
        where = f"{path.relative_to(PKG.parent)}:{lineno}"
        if target != part and target not in allowed:
            out.append(f"{where}: {part}/ may not import {target}/ (allowed: {sorted(allowed)})")
        lazy = LAZY_OK.get(part, set())
        if in_function and lazy is not None and target not in lazy:
            out.append(f"{where}: package import inside a function ({target}/); "
                       "import at module top")
    return out


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_module_imports_only_lower_layers(path):
    assert _violations(path, path.read_text(encoding="utf-8")) == []


def test_layering_check_catches_an_upward_import():
    # a frontend module that reaches up into models/, and one hiding an import in a function
    bad = "from wespeaker_lap.models import build_extractor\n"
    hidden = "def f():\n    from wespeaker_lap.dataset import audio\n"
    path = PKG / "frontend" / "ssl.py"
    assert any("may not import models/" in v for v in _violations(path, bad))
    assert any("inside a function" in v for v in _violations(path, hidden))


def test_every_part_is_in_the_table():
    parts = {_part(p) for p in _modules()}
    assert parts <= set(ALLOWED), sorted(parts - set(ALLOWED))
