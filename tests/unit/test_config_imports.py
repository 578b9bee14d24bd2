"""The config package's modules import each other in one direction only: the sections build on
config/base.py, and FleetConfig (model.py) on the sections. A cycle would make import order
matter, and hiding one behind an import inside a function is what this guards against."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import llmfleet.config

PACKAGE = "llmfleet.config"
CONFIG_DIR = Path(llmfleet.config.__file__).parent
MODULES = sorted(p.stem for p in CONFIG_DIR.glob("*.py"))


def config_imports(source: str) -> set[str]:
    """Modules of the config package that `source` imports anywhere, functions included
    ("__init__" for the package itself, which imports every section)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(_module(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = PACKAGE + (f".{node.module}" if node.module else "")
            else:  # level 2 and up leave the package
                base = "" if node.level else node.module or ""
            if base == PACKAGE:
                # `from llmfleet.config import aws` names a module; `... import FleetConfig`
                # runs the package's __init__.
                found.update(a.name if a.name in MODULES else "__init__" for a in node.names)
            else:
                found.add(_module(base))
    found.discard("")
    return found


def _module(dotted: str) -> str:
    if dotted == PACKAGE:
        return "__init__"
    return dotted.removeprefix(PACKAGE + ".") if dotted.startswith(PACKAGE + ".") else ""


def graph() -> dict[str, set[str]]:
    return {name: config_imports((CONFIG_DIR / f"{name}.py").read_text(encoding="utf-8"))
            for name in MODULES}


def test_aws_never_imports_model_not_even_inside_a_function():
    imports = graph()
    assert "model" not in imports["aws"]
    assert "__init__" not in imports["aws"]  # the package's __init__ imports model


def test_shared_parts_come_from_base_which_imports_no_other_config_module():
    imports = graph()
    assert imports["base"] == set()
    assert "base" in imports["aws"] and "base" in imports["model"]


def test_config_modules_import_each_other_without_a_cycle():
    imports = graph()
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, "import cycle: " + " -> ".join((*path, name))
        if name in done:
            return
        for other in sorted(imports.get(name, ())):
            visit(other, (*path, name))
        done.add(name)

    for name in MODULES:
        visit(name, ())


@pytest.mark.parametrize("line", [
    "from llmfleet.config.model import GPU_INSTANCE_FAMILIES",
    "import llmfleet.config.model",
    "from llmfleet.config import model",
    "from .model import Strict",
    "def f():\n    from llmfleet.config.model import FleetConfig\n",
])
def test_every_spelling_of_an_import_is_seen(line):
    assert "model" in config_imports(line)
