"""Workers: the command-line options of one worker, and ``run --workers N`` (N local workers).

Every worker is the same command. On one machine ``run --workers N`` starts N copies of the
``run`` command it was given (each with ``--threads`` = cores / N unless told otherwise, and
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

from search.distributed.worker import WorkerSettings
from search.errors import SearchError


def add_store_argument(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--artifacts", default=None, metavar="PATH|s3://BUCKET", help=help)


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """``--workers``, ``--threads``, ``--artifacts``, ``--heartbeat``, ``--grace``."""
    parser.add_argument(
        "--workers", type=int, default=1, help="start N workers on this machine (default: 1)"
    )
    parser.add_argument(
        "--threads",
        type=int,
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
        type=int,
        default=defaults.heartbeat_s,
        metavar="S",
        help=f"seconds between heartbeats of a running trial (default: {defaults.heartbeat_s})",
    )
    parser.add_argument(
        "--grace",
        type=int,
        default=defaults.grace_s,
        metavar="S",
        help="a trial without a heartbeat for S seconds (its worker died) is failed and "
        f"retried by another worker (default: {defaults.grace_s})",
    )


def worker_settings(args: argparse.Namespace) -> WorkerSettings:
    """The worker options of ``args``, checked (one line for a bad value)."""
    for flag, value in (("--workers", args.workers), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise SearchError(f"{flag} must be at least 1, but got {value}")
    if args.heartbeat < 1 or args.grace < 2 * args.heartbeat:
        raise SearchError(
            f"--heartbeat must be at least 1 and --grace at least twice --heartbeat, but got "
            f"--heartbeat {args.heartbeat} --grace {args.grace}"
        )
    return WorkerSettings(
        threads=args.threads,
        artifacts=args.artifacts,
        heartbeat_s=args.heartbeat,
        grace_s=args.grace,
    )


def child_command(argv: list[str], *, workers: int, threads: int | None) -> list[str]:
    """The command of one of ``workers`` local workers: ``argv`` (a ``run`` command line)
    without ``--workers``, without progress bars, with its share of the cores."""
    from search.core.threads import cores

    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word == "--workers":
            skip = True
        elif not word.startswith("--workers="):
            out.append(word)
    if "--no-progress" not in out:
        out.append("--no-progress")
    if threads is None and not os.environ.get("OMP_NUM_THREADS"):
        out += ["--threads", str(max(1, cores() // workers))]
    return [sys.executable, "-m", "search", *out]


def _relay(stream: IO[str], prefix: str) -> None:
    for line in stream:
        sys.stdout.write(f"{prefix}{line}")
        sys.stdout.flush()


def run_workers(workers: int, argv: list[str], *, threads: int | None) -> int:
    """Start ``workers`` local workers running ``argv`` and wait for them; the first non-zero
    exit code, else 0. Ctrl-C and SIGTERM reach every worker."""
    cmd = child_command(argv, workers=workers, threads=threads)
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    procs, relays = [], []
    for i in range(1, workers + 1):
        p = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
        )
        relay = threading.Thread(target=_relay, args=(p.stdout, f"[worker {i}] "), daemon=True)
        relay.start()
        procs.append(p)
        relays.append(relay)
    from search.distributed.storage import redact_text

    print(f"started {workers} workers: {redact_text(' '.join(cmd[1:]))}", file=sys.stderr)

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
    for relay in relays:
        relay.join(timeout=5)
    return next((c for c in codes if c != 0), 0)
