"""The shape of the house, read from the source (``ast``; nothing is imported or run).

- no import cycle among the modules of ``search/`` (imports anywhere in a file count: lazy ones
  inside functions and ``TYPE_CHECKING`` ones are dependencies too);
- every room imports only rooms below it (``ABOVE`` lists, per room, what it must not import):
  ``trial/`` knows no ``study/``; ``report/`` and ``export/`` know no ``trial/``; ``compress/``
  knows no study, trial, measurement or task; ``measure/`` (what the agent runs on a target)
  imports no torch, pydantic, optuna or yaml; ``distributed/`` imports no torch and ``core/``
  none at module level;
- at most six modules directly in ``search/``, and every room's ``__init__`` says what it is for;
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

# The rooms from the top floor down; a room may import only rooms below it (and itself).
# ``search.config`` (spaces and profiles, built from the steps' own sections) and
# ``search.record`` (the typed trial record) sit between the techniques and the study.
ABOVE = {
    "search.cli": ("search.__main__",),
    "search.bench": ("search.cli", "search.__main__"),
    "search.study": ("search.cli", "search.bench"),
    "search.export": ("search.cli", "search.bench", "search.study", "search.trial"),
    "search.report": ("search.cli", "search.bench", "search.study", "search.trial"),
    "search.trial": ("search.cli", "search.bench", "search.study", "search.report"),
    "search.tasks": (
        "search.cli",
        "search.bench",
        "search.study",
        "search.trial",
        "search.report",
        "search.export",
    ),  # fmt: skip
    "search.compress": (
        "search.cli",
        "search.bench",
        "search.study",
        "search.trial",
        "search.report",
        "search.export",
        "search.measure",
        "search.tasks",
        "search.distributed",
    ),  # fmt: skip
    "search.distributed": (
        "search.cli",
        "search.bench",
        "search.study",
        "search.trial",
        "search.report",
        "search.export",
        "search.compress",
        "search.tasks",
        "search.measure",
    ),  # fmt: skip
    "search.measure": (
        "search.cli",
        "search.bench",
        "search.study",
        "search.trial",
        "search.report",
        "search.export",
        "search.compress",
        "search.tasks",
        "search.config",
        "search.distributed",
        "search.record",
    ),  # fmt: skip
    "search.core": (
        "search.cli",
        "search.bench",
        "search.study",
        "search.trial",
        "search.report",
        "search.export",
        "search.compress",
        "search.tasks",
        "search.config",
        "search.distributed",
        "search.measure",
        "search.record",
    ),  # fmt: skip
}
# Rooms that load without these: the agent runs where torch is not installed (measure), the
# distributed parts run on any worker before a model exists, core is imported by everything.
NO_THIRD_PARTY = {
    "search.measure": ("torch", "pydantic", "optuna", "yaml"),
    "search.distributed": ("torch",),
}
# core may use torch inside a function (the training device, torch's thread count), never at
# module level: importing core stays cheap and torch-free.
NO_TOP_LEVEL = {"search.core": ("torch",)}
FORBIDDEN = {room: ABOVE[room] + NO_THIRD_PARTY.get(room, ()) for room in ABOVE}
# At most this many modules directly in search/ (the face: __init__, __main__, errors, config,
# record); everything else lives in a room.
MAX_TOP_MODULES = 6
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
    assert "search.compress.prune.step" in graph["search.config"]
    assert (
        "search.compress.distill" in graph["search.trial.pipeline"]
    )  # from search.compress import ...
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


def test_no_import_runs_back_up():
    """Same as the lower-package rule, read the other way: every room's imports, listed."""
    bad = []
    for room, above in ABOVE.items():
        for name, path in MODULES.items():
            if name != room and not name.startswith(room + "."):
                continue
            for dep in _imports(path):
                if any(dep == a or dep.startswith(a + ".") for a in above):
                    bad.append(f"{name} imports {dep}")
    assert not bad, bad


@pytest.mark.parametrize("room", sorted(NO_TOP_LEVEL))
def test_core_loads_without_torch(room):
    bad = []
    for name, path in MODULES.items():
        if not name.startswith(room):
            continue
        for node in ast.parse(path.read_text()).body:  # module level only
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            banned = NO_TOP_LEVEL[room]
            hits = [n for n in names if any(n == f or n.startswith(f + ".") for f in banned)]
            bad += [f"{name} imports {n}" for n in hits]
    assert not bad, bad


def test_few_modules_at_the_top_and_every_room_says_what_it_is_for():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc.split()) >= 8, (
            f"{init.relative_to(REPO)} needs a docstring saying what the room is for"
        )


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
