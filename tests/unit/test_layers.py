"""Imports point one way: the runtime that ships to a deployed edge (everything under
`llmfleet` but `llmfleet.local` and the CLI) never imports the local tools, and what ships is
exactly that runtime."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "llmfleet"
LOCAL_ONLY = ("llmfleet.local", "llmfleet.cli")


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module the file imports, also inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


RUNTIME = sorted(p for p in PACKAGE.rglob("*.py")
                 if not _module(p).startswith(LOCAL_ONLY))


@pytest.mark.parametrize("path", RUNTIME, ids=lambda p: _module(p))
def test_the_runtime_never_imports_the_local_tools(path):
    leaks = sorted(name for name in _imports(path) if name.startswith(LOCAL_ONLY))
    assert not leaks, f"{_module(path)} imports {leaks}"


def test_the_edge_bundle_ships_the_runtime_and_not_the_local_tools():
    sys.path.insert(0, str(PACKAGE.parents[1] / "infra"))
    try:
        from edge import bundle_files  # infra/edge.py, without Pulumi running
    finally:
        sys.path.pop(0)
    shipped = {p.relative_to(PACKAGE.parents[1]).as_posix() for p in bundle_files(
        PACKAGE.parents[1])}
    runtime = {p.relative_to(PACKAGE.parents[1]).as_posix() for p in RUNTIME}
    assert runtime <= shipped
    assert not any(name.startswith("src/llmfleet/local/") for name in shipped)
    assert "src/llmfleet/services.py" in shipped and "pyproject.toml" in shipped

