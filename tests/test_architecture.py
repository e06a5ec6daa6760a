"""The shape of the house, read from the source (``ast``; nothing is imported or run).

- no import cycle among the modules of ``search/`` (imports anywhere in a file count: lazy ones
  inside functions and ``TYPE_CHECKING`` ones are dependencies too);
- ``compress/`` and ``measure/`` stay below the study: neither imports the study, a trial, the
  report or the command line; ``compress/`` imports no measurement and no task either, and
  ``measure/`` (what the agent runs on a target) imports no torch, pydantic, optuna or yaml;
- no file over 400 lines and no function over 60, except the ones listed with a reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "search"

# Cycles allowed for now, each with its reason.
ALLOWED_CYCLES: dict[frozenset[str], str] = {}
FORBIDDEN = {
    "search.compress": (
        "search.study",
        "search.trial",
        "search.report",
        "search.cli",
        "search.measure",
        "search.tasks",
        "search.references",
        "search.context",
        "search.bench",
    ),
    "search.measure": (
        "search.study",
        "search.trial",
        "search.report",
        "search.cli",
        "search.compress",
        "search.tasks",
        "search.config",
        "search.references",
        "search.context",
        "search.bench",
        "torch",
        "pydantic",
        "optuna",
        "yaml",
    ),
}
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
LONG_FILES: dict[str, str] = {}
LONG_FUNCTIONS: dict[str, str] = {}


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> Iterator[str]:
    """Every module ``path`` imports; ``from pkg import sub`` names the submodule ``pkg.sub``."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            found = [s for s in subs if s in MODULES]
            yield from found or [node.module]


def _graph() -> dict[str, set[str]]:
    return {
        name: {dep for dep in _imports(path) if dep in MODULES and dep != name}
        for name, path in MODULES.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_is_read_from_the_source():
    graph = _graph()
    assert "search.compress.prune" in graph["search.config"]
    assert "search.compress.distill" in graph["search.trial"]  # from search.compress import ...
    assert "search.measure.spec" in graph["search.measure.memory"]


def test_no_import_cycle_in_search():
    cycles = [c for c in _cycles(_graph()) if c not in ALLOWED_CYCLES]
    assert not cycles, [sorted(c) for c in cycles]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_packages_do_not_import_what_sits_above_them(package):
    bad = []
    for name, path in MODULES.items():
        if not name.startswith(package + "."):
            continue
        for dep in _imports(path):
            hit = [f for f in FORBIDDEN[package] if dep == f or dep.startswith(f + ".")]
            if hit and not dep.startswith(package):
                bad.append(f"{name} imports {dep}")
    assert not bad, bad


def test_no_file_over_400_lines():
    long = {
        str(p.relative_to(REPO)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert set(long) <= set(LONG_FILES), long


def test_no_function_over_60_lines():
    long = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(REPO)}:{node.name}"] = n
    assert set(long) <= set(LONG_FUNCTIONS), long
