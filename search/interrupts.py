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
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from typing import Any

REDELIVER_S = 10.0
_state = {"requested": False, "handled": False}
_watcher: list[threading.Thread] = []
_WAKE = signal.SIGURG  # delivered to the main thread only, to interrupt a blocking call


def _on_sigint(signum: int, frame: Any) -> None:
    _state["requested"] = True
    if not _state["handled"]:
        signal.setitimer(signal.ITIMER_REAL, REDELIVER_S, REDELIVER_S)
    raise KeyboardInterrupt


def _on_alarm(signum: int, frame: Any) -> None:
    if _state["requested"] and not _state["handled"]:
        raise KeyboardInterrupt


def _unraisable(unraisable: Any) -> None:
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
    _watcher.append(writer)  # type: ignore[arg-type] - kept open for the process's life


def install() -> None:
    """Make SIGINT raise ``KeyboardInterrupt`` (re-delivered until handled, promptly whatever
    thread receives it). Main thread only; a no-op elsewhere (handlers can only be set there)."""
    if threading.current_thread() is threading.main_thread():
        _state.update(requested=False, handled=False)
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.signal(signal.SIGINT, _on_sigint)
        sys.unraisablehook = _unraisable
        _start_watcher()


def requested() -> bool:
    """Whether Ctrl-C was pressed during this command."""
    return _state["requested"]


def handled() -> None:
    """The command reported the interrupt: stop re-delivering it."""
    _state["handled"] = True
    if threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)
