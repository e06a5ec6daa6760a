"""Once-per-study work claimed through the storage: exactly one worker does it, others wait.

The one atomic primitive Optuna's public API offers on every RDB backend is the unique study
name: ``optuna.create_study(study_name=...)`` without ``load_if_exists`` succeeds for one caller
and raises ``DuplicatedStudyError`` for every other (a UNIQUE constraint on SQLite and
PostgreSQL alike). A claim is the small study ``<study>:claim:<key>:<generation>``; listings hide
them (:func:`is_claim_study`).

- The winner runs the work while a thread bumps the claim's ``beat`` user attribute; when the
  work is done (its results written where the caller reads them) the claim becomes ``done``.
- Waiters poll. A claim whose ``beat`` has not changed for ``grace_s`` seconds of the waiter's
  own monotonic clock is stale (no clocks of two hosts are compared): a waiter then creates the
  next generation, which again only one can win, and redoes the work.
- Work that raised marks the claim ``failed`` with the reason: its waiters stop with that
  reason (the work would fail for them too); a worker started later tries again.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError

from search.errors import SearchError

SEP = ":claim:"


class ClaimFailed(SearchError):
    """The worker that held the claim reported that the work failed."""


class ClaimLost(SearchError):
    """Another worker took the claim over (it looked stale); this worker's results are unused."""


@dataclass(frozen=True)
class Outcome:
    """Who did the work: this process (``won``) or ``owner`` ({host, pid})."""

    won: bool
    generation: int
    owner: dict[str, Any]
    waited_s: float


def is_claim_study(name: str) -> bool:
    """Claim studies are bookkeeping, not a user's studies."""
    return SEP in name


def _generations(storage: optuna.storages.BaseStorage, prefix: str) -> list[int]:
    gens = []
    for name in optuna.get_all_study_names(storage):
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            gens.append(int(name[len(prefix) :]))
    return sorted(gens)


def _try_create(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    try:
        claim = optuna.create_study(study_name=name, storage=storage)
    except DuplicatedStudyError:
        return None
    claim.set_user_attr("owner", {"host": socket.gethostname(), "pid": os.getpid()})
    claim.set_user_attr("state", "running")
    return claim


class _Beat:
    """Bumps the claim's ``beat`` attribute every ``interval`` seconds until the block ends."""

    def __init__(self, claim: optuna.Study, interval: float) -> None:
        self._claim, self._interval = claim, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="claim-beat")

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self._interval):
            n += 1
            try:
                self._claim.set_user_attr("beat", n)
            except Exception:  # noqa: BLE001 - a lost connection must not kill the work
                pass

    def __enter__(self) -> _Beat:
        self._claim.set_user_attr("beat", 0)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class _Watch:
    """A waiter's view of one generation: the last beat seen and when (its own clock)."""

    beat: Any = None
    since: float = 0.0


def run_once(
    storage: optuna.storages.BaseStorage,
    study_name: str,
    key: str,
    work: Callable[[], object],
    *,
    heartbeat_s: float = 10.0,
    grace_s: float = 60.0,
    poll_s: float = 0.5,
    on_wait: Callable[[dict[str, Any]], None] | None = None,
) -> Outcome:
    """Run ``work()`` in exactly one worker of ``study_name``; the others return once it is done.

    ``work`` writes its results to the storage itself (e.g. the study's user attributes) before
    it returns; waiters read them from there. ``on_wait(owner)`` is called once when this
    process starts waiting.

    Raises:
        ClaimFailed: the worker doing the work reported that it failed.
        ClaimLost: this process froze longer than ``grace_s`` and another worker redid it.
    """
    prefix = f"{study_name}{SEP}{key}:"
    start = time.monotonic()
    seen: dict[int, _Watch] = {}
    told = False
    while True:
        gens = _generations(storage, prefix)
        gen = gens[-1] if gens else -1
        if gen >= 0:
            attrs = optuna.load_study(study_name=f"{prefix}{gen}", storage=storage).user_attrs
            state, owner = attrs.get("state"), attrs.get("owner") or {}
            if state == "done":
                return Outcome(False, gen, owner, time.monotonic() - start)
            if state == "failed" and gen in seen:
                where = f"{owner.get('host')}:{owner.get('pid')}"
                raise ClaimFailed(f"the {key} of study {study_name!r} failed on {where}: "
                                  f"{attrs.get('error')}")  # fmt: skip
            now = time.monotonic()
            watch = seen.setdefault(gen, _Watch(since=now))
            if (attrs.get("beat"), state) != watch.beat:
                watch.beat, watch.since = (attrs.get("beat"), state), now
            # A failed claim seen for the first time (a later run) is retried, not obeyed; an
            # abandoned one (its worker was interrupted) is taken over at once.
            if state not in ("failed", "abandoned") and now - watch.since <= grace_s:
                if on_wait is not None and not told:
                    on_wait(owner)
                    told = True
                time.sleep(poll_s)
                continue
        mine = _try_create(storage, f"{prefix}{gen + 1}")
        if mine is not None:
            return _do(storage, prefix, gen + 1, mine, work, heartbeat_s, start)


def _do(
    storage: optuna.storages.BaseStorage,
    prefix: str,
    gen: int,
    claim: optuna.Study,
    work: Callable[[], object],
    heartbeat_s: float,
    start: float,
) -> Outcome:
    with _Beat(claim, heartbeat_s):
        try:
            work()
        except Exception as e:
            claim.set_user_attr("error", f"{type(e).__name__}: {e}"[:500])
            claim.set_user_attr("state", "failed")
            raise
        except BaseException:  # Ctrl-C, SIGTERM: another worker may take it over at once
            claim.set_user_attr("state", "abandoned")
            raise
    if _generations(storage, prefix)[-1] != gen:
        # This process froze longer than the grace period and another worker took over.
        raise ClaimLost(
            f"{prefix}{gen} was taken over by another worker while this one ran it (it sent no "
            "heartbeat for longer than the grace period); run the worker again to join"
        )
    claim.set_user_attr("state", "done")
    return Outcome(True, gen, claim.user_attrs["owner"], time.monotonic() - start)
