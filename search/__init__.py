"""search: hardware-aware compression search for PyTorch models.

The public API is listed in ``__all__``; names load lazily, so ``import search`` stays cheap and
the measurement agent can run where torch is not installed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "SearchError": "search.errors",
    "load_space": "search.config",
    "load_profile": "search.config",
    "TrialConfig": "search.config",
    "StudySpec": "search.study",
    "run_study": "search.study",
    "Task": "search.tasks",
    "load_task": "search.tasks",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")
