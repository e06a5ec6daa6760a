"""What every command shares: the one-line argument errors, Ctrl-C, and exit codes.

- Argument errors (an unknown flag, ``--trials abc``, a missing ``--out``) are one line naming
  the argument and where the help is, not argparse's usage block.
- Ctrl-C ends any command with one line and exit 130, also when the process was started with
  SIGINT ignored (Python then never installs its own handler, so the interrupt would be lost).
- A full or read-only disk met during a command is one line and exit 2; a run can be resumed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn, TypeVar, overload

from search.core import interrupts
from search.errors import SearchError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
INTERRUPTED = "interrupted; rerun the same command to resume the study"
N = TypeVar("N")  # a namespace object given to parse_args


class UsageError(SearchError):
    """The command line itself is wrong: an unknown flag, a bad value, a missing argument."""


class Command:
    """Base class: ``add_arguments`` declares flags, ``run`` does the work and returns a code."""

    name = ""
    # What Ctrl-C prints: only a run has a study to resume.
    interrupted = "interrupted"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one :class:`UsageError` line, not a usage block,
    and that takes no abbreviated long options (``--wo 2`` is not ``--workers 2``): a prefix
    that matches today may match another option tomorrow, and a worker's command line must
    mean exactly what its leader parsed. Subparsers are made by this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    # The overloads of ArgumentParser.parse_args: the namespace given, else a new Namespace.
    @overload
    def parse_args(
        self, args: Iterable[str] | None = None, namespace: None = None
    ) -> argparse.Namespace: ...
    @overload
    def parse_args(self, args: Iterable[str] | None, namespace: N) -> N: ...
    @overload
    def parse_args(self, *, namespace: N) -> N: ...

    def parse_args(self, args: Iterable[str] | None = None, namespace: object = None) -> Any:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            where = f"{self.prog} {getattr(parsed, 'command', '')}".strip()
            raise UsageError(f"unrecognized arguments: {' '.join(extras)} (see: {where} --help)")
        return parsed

    def error(self, message: str) -> NoReturn:
        if "the following arguments are required: command" in message:
            message = "name a command: run, report, export, profiles, agent or bench"
        elif message.startswith("argument command: invalid choice"):
            message = message.replace("argument command: ", "")
        raise UsageError(f"{message} (see: {self.prog} --help)")


def run_guarded(
    run: Callable[[], int],
    *,
    interrupted: Callable[[], str],
    folder: Callable[[], Path | str | None],
) -> int:
    """``run()``, with user errors, Ctrl-C and a full disk turned into one line and an exit code.

    ``interrupted()`` gives the Ctrl-C line; ``folder()`` the folder a full disk is reported for.
    Anything else is a bug and keeps its traceback.
    """
    from search.core.checks import disk_full

    try:
        return run()
    except KeyboardInterrupt:
        return _stopped(interrupted())
    except SearchError as e:
        if interrupts.requested():  # an error made of a Ctrl-C (a C extension converted it)
            return _stopped(interrupted())
        _say(f"error: {e}")
        return EXIT_USAGE
    except Exception as e:
        if interrupts.requested():
            return _stopped(interrupted())
        problem = disk_full(e, Path(folder() or "."))
        if problem is None:
            raise
        _say(f"error: {problem}")
        return EXIT_USAGE


def _stopped(line: str) -> int:
    interrupts.handled()
    _say(line)
    return EXIT_INTERRUPTED


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except KeyboardInterrupt:  # a second Ctrl-C while the first is reported
        pass


def count(low: int, *, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``low`` (and at most ``high``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value

    return parse


def seed(text: str) -> int:
    value = count(0)(text)
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"must be below 2**32, got {value}")
    return value
