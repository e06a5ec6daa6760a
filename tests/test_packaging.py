"""pyproject.toml asks for what the code really uses."""

from __future__ import annotations

import ast
import tomllib

import optuna
from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import REPO

# Optuna APIs the search calls that older releases lack, and the release that added each
# (checked against the 4.9.0 and 5.0.0 wheels: optuna/optuna#6754 added set_constraint).
OPTUNA_NEEDS = {"set_constraint": Version("5.0.0")}


def _floor(name: str) -> Version:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    req = next(Requirement(d) for d in deps if Requirement(d).name == name)
    floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    assert floors, f"{name} has no lower bound in pyproject.toml"
    return max(floors)


def _called_attributes() -> set[str]:
    names = set()
    for path in (REPO / "search").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                names.add(node.func.attr)
    return names


def test_the_optuna_floor_has_every_api_the_code_calls():
    used = {api for api in OPTUNA_NEEDS if api in _called_attributes()}
    assert used, "the table lists APIs the code no longer calls: update OPTUNA_NEEDS"
    need = max(OPTUNA_NEEDS[api] for api in used)
    assert _floor("optuna") >= need, f"pyproject.toml allows optuna below {need} ({used})"
    assert Version(optuna.__version__) >= need and hasattr(optuna.trial.Trial, "set_constraint")
