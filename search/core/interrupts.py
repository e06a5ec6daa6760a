"""Ctrl-C that cannot be lost.

Python turns SIGINT into a ``KeyboardInterrupt`` raised wherever the main thread happens to be.
Some places lose it: a ``__del__`` or weakref callback running at that moment prints "Exception
ignored" and goes on, and a C extension being imported can turn it into another error
("ImportError: initialization failed"). A run then either kept going after Ctrl-C or ended
with a traceback. So the handler here also remembers the request, and:

- raises ``KeyboardInterrupt`` again every :data:`REDELIVER_S` seconds until the command (or the
  trial that caught it) has handled it (:func:`handled`), so a swallowed one is delivered
  again, and keeps the "Exception ignored" traceback of a swallowed one off the console;
- lets the command line and the study ask :func:`requested`, so an error that is really a
  converted Ctrl-C is treated as one.

The kernel may hand a process's SIGINT to any of its threads (torch's and ONNX Runtime's worker
threads among them). Python then only sets a flag, and a main thread blocked in a system call
(a sleep, a socket read from the agent, a wait for a child process) would not notice until that
call returns. A small watcher thread, woken through ``signal.set_wakeup_fd``, pokes the main
thread with SIGURG (its default action is to ignore it) so the call is interrupted at once.

It also replaces an inherited "ignore SIGINT" (a background job of a shell script): Python
leaves that in place, and Ctrl-C or ``kill -INT`` would then never reach the run.

This module is the one home of Ctrl-C and SIGTERM: :func:`install` (the command line calls it
first), :func:`terminate_as_interrupt` (a study stops on SIGTERM as on Ctrl-C),
:func:`stop_reason` (what an interrupted trial records) and :func:`exit_quietly` (the process's
last step). The one handler that cannot live here is ``search/__init__.py``'s
``_interrupted_early``: it answers a Ctrl-C that arrives before any module of the package could
be read.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import NoReturn

REDELIVER_S = 10.0
_state = {"requested": False, "handled": False}
_watcher: list[threading.Thread | socket.socket] = []  # the thread and its socket's writer end
_WAKE = signal.SIGURG  # delivered to the main thread only, to interrupt a blocking call


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _state["requested"] = True
    if not _state["handled"]:
        signal.setitimer(signal.ITIMER_REAL, REDELIVER_S, REDELIVER_S)
    raise KeyboardInterrupt


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    if _state["requested"] and not _state["handled"]:
        raise KeyboardInterrupt


def _unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    # "Exception ignored in ...": a Ctrl-C lost in a __del__ or callback is delivered again by
    # the timer, so its traceback would only be noise; anything else is reported as usual.
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def _watch(sock: socket.socket, main: int) -> None:
    """Wake the main thread whenever SIGINT or the re-delivery alarm arrives (on any thread)."""
    while True:
        try:
            data = sock.recv(64)
        except OSError:
            return
        if not data:
            return
        if signal.SIGINT in data or signal.SIGALRM in data:
            with contextlib.suppress(OSError, ValueError):
                signal.pthread_kill(main, _WAKE)


def _start_watcher() -> None:
    if _watcher:
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    signal.signal(_WAKE, lambda signum, frame: None)  # only interrupts the blocking call
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    main = threading.main_thread().ident
    thread = threading.Thread(target=_watch, args=(reader, main), name="ctrl-c", daemon=True)
    thread.start()
    _watcher.append(thread)
    _watcher.append(writer)  # kept open for the process's life


def install() -> None:
    """Make SIGINT raise ``KeyboardInterrupt`` (re-delivered until handled, promptly whatever
    thread receives it). Main thread only; a no-op elsewhere (handlers can only be set there)."""
    if threading.current_thread() is threading.main_thread():
        _start_watcher()  # first: a Ctrl-C meanwhile still meets the handler in place
        _state.update(requested=False, handled=False)
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.signal(signal.SIGINT, _on_sigint)
        sys.unraisablehook = _unraisable


def requested() -> bool:
    """Whether Ctrl-C was pressed during this command."""
    return _state["requested"]


def handled() -> None:
    """The command reported the interrupt: stop re-delivering it."""
    _state["handled"] = True
    if threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be: the run stops the same way and can be resumed."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"signal {signum}")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``), so a study
    stopped by a process manager marks its trial interrupted and resumes like after Ctrl-C."""
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def stop_reason(e: BaseException) -> str:
    """Why a run stopped, as a trial records it: ``interrupted by the user`` (Ctrl-C),
    ``interrupted by signal 15`` (SIGTERM), or the error's type and message."""
    if isinstance(e, Terminated):
        return f"interrupted by {e}"
    if isinstance(e, KeyboardInterrupt):
        return "interrupted by the user"
    return f"{type(e).__name__}: {e}"


def exit_quietly(code: int) -> NoReturn:
    """End the process with ``code``, Ctrl-C from here on ignored (no traceback at exit).

    Under ``python -m``, CPython exits by SIGINT (status -2, not our code) when a
    KeyboardInterrupt once ended code run from a string (exec/eval: dataclasses, torch.fx),
    even though the command caught it; evaluating a string again clears that flag
    (``Modules/main.c``, ``Python/pythonrun.c``).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exec("None", {})  # noqa: S102
    raise SystemExit(code)
