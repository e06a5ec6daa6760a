"""Task registry: built-in names, or ``module:function`` for a user's own factory."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from search.errors import TaskError
from search.tasks.base import Task, accuracy, stack

BUILTIN = {
    "digits": "search.tasks.digits:make_task",
    "distorted_digits": "search.tasks.distorted_digits:make_task",
}

__all__ = ["BUILTIN", "Task", "accuracy", "load_task", "resolve_factory", "stack"]


def resolve_factory(spec: str) -> Callable[..., Task]:
    """Find the factory for a built-in task name or a ``module:function`` spec."""
    target = BUILTIN.get(spec, spec)
    if ":" not in target:
        known = ", ".join(sorted(BUILTIN))
        raise TaskError(
            f"unknown task {spec!r}: choose one of {known} or pass module:function "
            "naming your own task factory"
        )
    module_name, func_name = target.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise TaskError(f"task {spec!r}: cannot import module {module_name!r}: {e}") from None
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise TaskError(f"task {spec!r}: module {module_name!r} has no function {func_name!r}")
    return factory


def load_task(spec: str, *, seed: int, cache_dir: Path) -> Task:
    task = resolve_factory(spec)(seed=seed, cache_dir=cache_dir)
    if not isinstance(task, Task):
        raise TaskError(f"task {spec!r}: the factory returned {type(task).__name__}, not a Task")
    return task
