"""Workers: the command-line options of one worker, and ``run --workers N`` (N local workers).

Every worker is the same command. On one machine ``run --workers N`` starts N copies of the
``run`` command it was given (each with ``--threads`` = free cores / N unless told otherwise, and
``OMP_WAIT_POLICY=PASSIVE`` so idle OpenMP threads do not spin on shared cores), prefixes their
output with ``[worker i]`` and waits for all. On other machines the user starts the same
``run`` command with the same ``--storage``, ``--study`` and ``--artifacts``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from typing import IO

from search.distributed.worker import (
    GRACE_BEATS,
    MAX_GRACE_S,
    MAX_HEARTBEAT_S,
    MIN_GRACE_S,
    MIN_HEARTBEAT_S,
    WorkerSettings,
)
from search.errors import SearchError


def add_store_argument(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--artifacts", default=None, metavar="PATH|s3://BUCKET", help=help)


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """``--workers``, ``--threads``, ``--artifacts``, ``--heartbeat``, ``--grace``.

    Counts have bounds: at most 2 workers and 4 torch threads per core here (more only share
    the same cores), and the heartbeat and grace bounds of
    :func:`search.distributed.worker.check_heartbeat`.
    """
    from search.cli.base import count
    from search.core.threads import cores

    n = max(cores(), 1)
    parser.add_argument(
        "--workers",
        type=count(1, high=2 * n),
        default=1,
        help=f"start N workers on this machine (default: 1; at most {2 * n}, 2 per core)",
    )
    parser.add_argument(
        "--threads",
        type=count(1, high=4 * n),
        default=None,
        help="torch threads of each worker (default: $OMP_NUM_THREADS, else cores / workers)",
    )
    add_store_argument(
        parser,
        "artifact store for trial files and the teacher (default: the study's, else "
        "results/<study>/store); a shared mount or s3://bucket when workers run on several "
        "machines",
    )
    defaults = WorkerSettings()
    parser.add_argument(
        "--heartbeat",
        type=count(MIN_HEARTBEAT_S, high=MAX_HEARTBEAT_S),
        default=defaults.heartbeat_s,
        metavar="S",
        help=f"seconds between heartbeats of a running trial (default: {defaults.heartbeat_s}; "
        f"at least {MIN_HEARTBEAT_S})",
    )
    parser.add_argument(
        "--grace",
        type=count(MIN_GRACE_S, high=MAX_GRACE_S),
        default=defaults.grace_s,
        metavar="S",
        help="a trial without a heartbeat for S seconds (its worker died) is failed and "
        f"retried by another worker (default: {defaults.grace_s}; at least {MIN_GRACE_S} and "
        f"{GRACE_BEATS} heartbeats: see docs/distributed.md)",
    )


def worker_settings(args: argparse.Namespace) -> WorkerSettings:
    """The worker options of ``args``, checked (one line for a bad value)."""
    return WorkerSettings(
        threads=args.threads,
        artifacts=args.artifacts,
        heartbeat_s=args.heartbeat,
        grace_s=args.grace,
    )


# Set in the environment of every worker ``run --workers N`` starts: a worker never starts more.
WORKER_ENV = "SEARCH_WORKER_OF"
# What a worker's command line never carries over from its leader's: each worker is one worker,
# draws no progress bars, and gets its share of the cores.
_NOT_PASSED = {"help", "workers", "no_progress", "threads"}


def child_command(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    *,
    workers: int,
    fixed: dict[str, object] | None = None,
) -> list[str]:
    """The complete command line of one of ``workers`` local workers, built from the parsed
    ``args`` of ``parser`` (the ``run`` parser), never from the words the leader was given.

    Every option of ``parser`` whose value is set is written out as ``--flag=value`` (a value
    that starts with ``-`` stays a value), ``fixed`` overrides values by destination (the study
    name and trial count the leader resolved), ``--workers`` is left out, ``--no-progress`` is
    added, and ``--threads`` is the leader's, else the free cores / ``workers`` unless
    ``$OMP_NUM_THREADS`` says.

    Raises:
        TypeError: ``parser`` has an option kind this function does not know how to write.
    """
    from search.core.threads import choose_threads

    values = {**vars(args), **(fixed or {})}
    words = []
    for action in parser._actions:  # noqa: SLF001 - argparse lists its options only here
        if action.dest in _NOT_PASSED or not action.option_strings:
            continue
        flag, value = action.option_strings[-1], values.get(action.dest)
        if isinstance(action, argparse._StoreTrueAction):  # noqa: SLF001
            words += [flag] if value else []
        elif type(action) is argparse._StoreAction and action.nargs is None:  # noqa: SLF001
            words += [] if value is None else [f"{flag}={value}"]
        else:
            raise TypeError(f"child_command cannot write {flag} ({type(action).__name__})")
    words.append("--no-progress")
    threads = values.get("threads")
    if threads is None and not os.environ.get("OMP_NUM_THREADS"):
        # The usable cores less those other processes keep busy, shared among the workers.
        threads = choose_threads(workers=workers).threads
    if threads is not None:
        words.append(f"--threads={threads}")
    return [sys.executable, "-m", "search", "run", *words]


class _Relay:
    """Copies each worker's output to ours with a ``[worker i]`` prefix; an error or
    interruption line that every worker says alike is printed once, unprefixed, on stderr."""

    def __init__(self) -> None:
        self._said: set[str] = set()
        self._lock = threading.Lock()

    def copy(self, stream: IO[str], prefix: str, out: IO[str]) -> None:
        for line in stream:
            with self._lock:
                if line.startswith(("error: ", "interrupted")):
                    if line not in self._said:
                        self._said.add(line)
                        sys.stderr.write(line)
                        sys.stderr.flush()
                    continue
                out.write(f"{prefix}{line}")
                out.flush()


def run_workers(cmd: list[str], *, workers: int) -> int:
    """Start ``workers`` local workers running ``cmd`` (:func:`child_command`) and wait for
    them; the first non-zero exit code, else 0. Ctrl-C and SIGTERM reach every worker.

    Raises:
        SearchError: this process is itself a worker started by ``run --workers``.
    """
    if os.environ.get(WORKER_ENV):
        raise SearchError(
            f"this run was started by 'run --workers' (${WORKER_ENV} is set), so it cannot "
            "start workers of its own"
        )
    env = {
        **os.environ,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        WORKER_ENV: str(os.getpid()),
    }
    relay = _Relay()
    procs, threads = [], []
    for i in range(1, workers + 1):
        p = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, bufsize=1
        )
        procs.append(p)
        for stream, out in ((p.stdout, sys.stdout), (p.stderr, sys.stderr)):
            t = threading.Thread(
                target=relay.copy, args=(stream, f"[worker {i}] ", out), daemon=True
            )
            t.start()
            threads.append(t)
    from search.distributed.storage import redact_text

    print(f"started {workers} workers: {redact_text(' '.join(cmd[1:]))}", flush=True)

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = signal.signal(signal.SIGTERM, forward)
    try:
        codes = []
        for p in procs:
            while True:
                try:
                    codes.append(p.wait())
                    break
                except KeyboardInterrupt:  # the workers got the terminal's Ctrl-C too
                    forward(signal.SIGINT, None)
    finally:
        signal.signal(signal.SIGTERM, old)
    for t in threads:
        t.join(timeout=5)
    return next((c for c in codes if c != 0), 0)
