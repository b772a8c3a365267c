"""The layering rules of docs/ARCHITECTURE.md, checked on the source tree (imports read with ``ast``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dynascope"
PURE = ("ntk", "analysis", "dynamics")


def _imports(path: Path) -> set[str]:
    """Every module name imported anywhere in ``path`` (top level or inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_the_rules_see_every_module() -> None:
    assert len(_modules()) > 50 and (SRC / "commands" / "ntk.py") in _modules()


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_layers_point_one_way(path: Path) -> None:
    rel = path.relative_to(SRC)
    imports = _imports(path)
    if rel.parts[0] not in ("commands", "cli.py"):
        assert not {m for m in imports if m.startswith("dynascope.commands") or m == "argparse"}, rel
    if rel.parts[0] in PURE:
        banned = {m for m in imports if m.split(".")[0] in ("tqdm", "matplotlib") or m == "dynascope.progress"}
        assert not banned, f"{rel} imports {banned}"


def test_run_directory_file_names_are_spelled_once() -> None:
    spelled = [p for p in _modules() if '"metrics.json"' in p.read_text(encoding="utf-8")]
    assert spelled == [SRC / "runio.py"]
