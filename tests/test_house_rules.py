"""House rules a reviewer would otherwise have to remember: short modules and functions, one error
tree, the lease fields written only by the lease helper, and statuses compared as enums."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import shared
from shared.foundation import errors
from tests.peers.processes import ROOT

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50
# Flat wiring may run longer (the issue allows it): one constructor call per service.
LONG_WIRING = {("shared/runtime.py", "build")}
LEASE_FIELDS = {"lease_owner", "lease_expires_at"}
# Fields that hold a status or a step: compared with their enum members, never with bare strings.
STATUS_FIELDS = {"status", "state", "upstream", "local", "rotation_step", "revoke_upstream"}

CODE = sorted([*(ROOT / "shared").rglob("*.py"), *(ROOT / "functions").rglob("*.py")])


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _tree(path: Path) -> ast.AST:
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("path", CODE, ids=_name)
def test_modules_stay_short(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{_name(path)} has {lines} lines: split it by concern"


@pytest.mark.parametrize("path", CODE, ids=_name)
def test_functions_stay_short(path: Path) -> None:
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
        and (_name(path), node.name) not in LONG_WIRING
    ]
    assert not long, f"{_name(path)}: {', '.join(long)}"


@pytest.mark.parametrize("path", CODE, ids=_name)
def test_only_the_lease_helper_writes_the_lease_fields(path: Path) -> None:
    if _name(path) == "shared/storage/lease.py" or "tables" in path.parts:
        return  # the helper, and the row definitions that declare the fields
    writes = [
        f"line {node.lineno}"
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        for part in ast.walk(target)
        if isinstance(part, ast.Attribute) and part.attr in LEASE_FIELDS
    ]
    assert not writes, f"{_name(path)} sets lease fields inline ({writes}): use storage.lease"


def _bare_status_comparisons(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        fields = [o for o in operands if isinstance(o, ast.Attribute) and o.attr in STATUS_FIELDS]
        literals = [
            c
            for o in operands
            for c in ([o] if not isinstance(o, ast.Tuple | ast.List | ast.Set) else o.elts)
            if isinstance(c, ast.Constant) and isinstance(c.value, str)
        ]
        if fields and literals:
            found.append(f"line {node.lineno}: .{fields[0].attr} vs {literals[0].value!r}")
    return found


@pytest.mark.parametrize("path", CODE, ids=_name)
def test_statuses_are_compared_as_enums(path: Path) -> None:
    found = _bare_status_comparisons(_tree(path))
    assert not found, f"{_name(path)}: {found}"


def test_the_status_check_would_catch_a_bare_string() -> None:
    tree = ast.parse("if pat.status != 'revoked' or row.state in ('a', 'b'): pass")
    assert len(_bare_status_comparisons(tree)) == 2


def _every_module_of_shared() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(shared.__path__, "shared.")]


def test_every_error_class_lives_in_the_one_tree_and_is_drawn_in_it() -> None:
    tree_text = errors.__doc__ or ""
    for module_name in _every_module_of_shared():
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if not inspect.isclass(value) or not issubclass(value, BaseException):
                continue
            if value.__module__ != module_name:
                continue  # imported, not defined here
            assert module_name == errors.__name__, (
                f"{module_name}.{name} is an error class outside shared.foundation.errors"
            )
    drawn = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, errors.KeystewardError)
    }
    for name in drawn:
        assert re.search(rf"\b{name}\b", tree_text), f"{name} is missing from the drawing"


def test_the_drawing_shows_each_class_under_its_true_parent() -> None:
    lines = [line for line in (errors.__doc__ or "").splitlines() if "Error" in line or "─" in line]
    depth_of: dict[str, int] = {}
    stack: list[str] = []
    for line in lines:
        words = line.replace("│", " ").replace("├──", "   ").replace("└──", "   ").split()
        if not words or not hasattr(errors, words[0]):
            continue
        name = words[0]
        indent = len(line) - len(line.lstrip(" │├└─"))
        depth = indent // 4
        depth_of[name] = depth
        del stack[depth - 1 :]
        if stack:
            parent = getattr(errors, stack[-1])
            assert getattr(errors, name).__bases__ == (parent,), f"{name} is not a {stack[-1]}"
        stack.append(name)
    assert "GrantInvalid" in depth_of
