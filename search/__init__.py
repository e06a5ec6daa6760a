"""search: hardware-aware compression search for PyTorch models.

The public API is listed in ``__all__``; names load lazily, so ``import search`` stays cheap and
the measurement agent can run where torch is not installed.
"""

import _signal  # built in and already loaded at start-up: no file to read before the handler
import sys


def _interrupted_early(signum, frame):  # noqa: ANN001, ARG001 - a signal handler
    # Ctrl-C before main() runs: nothing has been created yet, so stop at once, in one line.
    import os

    run = sys.argv[1:2] == ["run"]
    sys.stderr.write(
        "interrupted; rerun the same command to resume the study\n" if run else "interrupted\n"
    )
    os._exit(130)


def _run_as_main() -> bool:
    """Whether this process is ``python [options] -m search ...`` (not ``import search``)."""
    argv = getattr(sys, "orig_argv", [])
    return "-m" in argv and argv[argv.index("-m") + 1 : argv.index("-m") + 2] == ["search"]


# The earliest moment our code can answer Ctrl-C: the package's first statements only bind
# names. (`import signal` here read a file first; an interrupt during that read was a traceback.)
if _run_as_main():
    _signal.signal(_signal.SIGINT, _interrupted_early)

import importlib  # noqa: E402 - after the handler: these imports take a while under load
from typing import Any  # noqa: E402

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
