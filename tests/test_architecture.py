"""The layers of shared/ (shared/__init__.py) hold: no layer imports one above it, functions/
reaches shared only through its upper layers, and shared never imports azure.functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.peers.processes import ROOT

# What each layer may import from shared (itself included).
ALLOWED = {
    "foundation": {"foundation"},
    "config": {"foundation", "config"},
    "storage": {"foundation", "config", "storage"},
    "providers": {"foundation", "config", "providers"},
    "trail": {"foundation", "config", "storage", "trail"},
    "access": {"foundation", "config", "storage", "trail", "access"},
    "lifecycle": {"foundation", "config", "storage", "providers", "trail", "access", "lifecycle"},
    "runtime": {"foundation", "config", "storage", "providers", "trail", "access", "lifecycle"},
}
FUNCTIONS_MAY_IMPORT = {"foundation", "config", "access", "lifecycle", "runtime"}
# The typed rows the services hand back may be named (in annotations, enums), never the store.
FUNCTIONS_MAY_NAME = "shared.storage.tables"


def _shared_imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "shared":
                names += [f"shared.{alias.name}" for alias in node.names]
            else:
                names.append(node.module)
    return [n for n in names if n == "shared" or n.startswith("shared.")]


def _layer(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def _layer_of(path: Path) -> str:
    parts = path.relative_to(ROOT / "shared").parts
    return parts[0].removesuffix(".py") if parts else ""


SHARED = sorted(p for p in (ROOT / "shared").rglob("*.py") if p.name != "__init__.py"
                or p.parent != ROOT / "shared")  # fmt: skip


def test_every_module_of_shared_sits_in_a_layer() -> None:
    for path in SHARED:
        assert _layer_of(path) in ALLOWED, f"{path.relative_to(ROOT)} is outside every layer"


@pytest.mark.parametrize("path", SHARED, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_layer_imports_a_higher_one(path: Path) -> None:
    layer = _layer_of(path)
    for module in _shared_imports(path):
        assert _layer(module) in ALLOWED[layer], f"{layer} may not import {module}"


@pytest.mark.parametrize("path", sorted((ROOT / "functions").glob("*.py")), ids=lambda p: p.name)
def test_functions_reach_shared_only_through_the_upper_layers(path: Path) -> None:
    for module in _shared_imports(path):
        allowed = _layer(module) in FUNCTIONS_MAY_IMPORT or module.startswith(FUNCTIONS_MAY_NAME)
        assert allowed, f"functions/ may not import {module}"


def test_every_layer_says_what_it_holds_and_may_import() -> None:
    for layer in ALLOWED:
        init = ROOT / "shared" / layer / "__init__.py"
        if layer == "runtime":
            init = ROOT / "shared" / "runtime.py"
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring, f"{init.relative_to(ROOT)} has no docstring"


def test_the_checker_would_catch_a_lower_layer_importing_a_higher_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from shared.lifecycle.connect_flow import Connect\n")
    assert [_layer(m) for m in _shared_imports(bad)] == ["lifecycle"]
    assert "lifecycle" not in ALLOWED["storage"]
