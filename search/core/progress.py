"""Live progress for long work: a bar for trials, one for the epochs of the running trial, and
lines for the long steps of a setup (:class:`Ticker`, :class:`EpochReporter`) that a log file
shows as well as a terminal."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console
from rich.errors import LiveError
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.status import Status

# Soft wrap: lines piped to a log stay whole instead of breaking at 80 columns.
console = Console(stderr=True, soft_wrap=True)


@contextlib.contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner with ``message`` while a single long step runs."""
    with console.status(message):
        yield


def study_progress(*, disable: bool = False) -> Progress:
    """Bars for the trials and the running trial's epochs; ``disable`` draws nothing (the calls
    still work, so the study loop needs no second path)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=disable,
    )


@dataclass
class TrialBars:
    """The progress display and its epoch bar, as one trial updates them; with ``ticker`` (no
    bars: output to a file or ``--no-progress``) each epoch is a line of that ticker instead."""

    progress: Any
    epochs: Any
    ticker: Ticker | None = None
    total: int | None = None

    def epoch_done(self, number: int, epoch: int, metric: str) -> None:
        """After epoch ``epoch`` of trial ``number``, whose validation metric reads ``metric``."""
        if self.ticker is not None:
            self.ticker.note(f"epoch {epoch}/{self.total or '?'}: validation {metric}")
        self.show(number, epoch)

    def show(self, number: int, epoch: int, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        update = {"total": total} if total is not None else {}
        self.progress.update(
            self.epochs,
            completed=epoch,
            visible=True,
            description=f"trial {number} epoch {epoch}",
            **update,
        )

    def hide(self) -> None:
        self.progress.update(self.epochs, visible=False)


# ---------------------------------------------------------------- long steps, said in lines

HEARTBEAT_S = 10.0  # the longest a long step stays silent (issue 28: a log file's reader)


def duration(seconds: float) -> str:
    """``seconds`` as a user reads it: ``'8.2 s'``, ``'3 min 05 s'``, ``'1 h 02 min'``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class Ticker:
    """A long step said as it runs: a start line, a line for each :meth:`note`, a heartbeat
    with the elapsed time (and the latest :meth:`detail`) whenever ``interval`` seconds passed
    without a line (default :data:`HEARTBEAT_S`), and an end line with its duration (none
    when the step raises).

    Lines go to ``stream`` (default: stderr), flushed. On a terminal the heartbeat is a
    spinner instead (the start, note and end lines stay); elsewhere (a file, a pipe) there is
    no spinner and no ANSI escape, only whole lines.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> with Ticker("counting", stream=out) as t:
        ...     t.note("one")
        >>> out.getvalue().splitlines()[:2]
        ['counting ...', '  one']
    """

    def __init__(
        self, message: str, *, interval: float | None = None, stream: TextIO | None = None
    ) -> None:
        self.message, self._stream = message, stream
        self.interval = HEARTBEAT_S if interval is None else interval
        self._detail = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._start = self._last = time.monotonic()
        self._spinner: Status | None = None
        self._thread: threading.Thread | None = None

    @property
    def elapsed(self) -> float:
        """Seconds since the step started."""
        return time.monotonic() - self._start

    def __enter__(self) -> Ticker:
        self._start = self._last = time.monotonic()
        self.line(f"{self.message} ...")
        if self._stream is None and console.is_terminal:
            with contextlib.suppress(LiveError):  # rich < 14: one live display at a time
                self._spinner = console.status(self.message)
                self._spinner.start()
        self._thread = threading.Thread(target=self._beat, name="progress-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._spinner is not None:
            self._spinner.stop()
        if kind is None:
            self.line(f"{self.message}: done in {duration(self.elapsed)}")

    def line(self, text: str) -> None:
        """Print ``text`` as one whole line now."""
        with self._lock:
            self._last = time.monotonic()
            if self._stream is None and console.is_terminal:
                console.print(text, markup=False, highlight=False)
            else:
                stream = self._stream or sys.stderr
                stream.write(text + "\n")
                stream.flush()

    def note(self, text: str) -> None:
        """Say what the step does now, as an indented line; later heartbeats repeat it."""
        self.detail(text)
        self.line(f"  {text}")

    def detail(self, text: str) -> None:
        """What the next heartbeat (or the spinner, now) says, without a line of its own."""
        self._detail = text
        if self._spinner is not None:
            said = f"{self.message}: {text}" if text else self.message
            self._spinner.update(f"{said} ({duration(self.elapsed)})")

    def _wait(self) -> float:
        """Seconds to the next heartbeat: ``interval`` after the last line (each second on a
        terminal, where the spinner's elapsed time moves on)."""
        if self._spinner is not None:
            return min(1.0, self.interval)
        return max(0.01, self._last + self.interval - time.monotonic())

    def _beat(self) -> None:
        while not self._stop.wait(self._wait()):
            if self._spinner is not None:  # a terminal: the spinner says it, no line
                self.detail(self._detail)
            elif time.monotonic() - self._last >= self.interval:  # else a line came meanwhile
                said = f": {self._detail}" if self._detail else ""
                self.line(f"  ... {duration(self.elapsed)} elapsed{said}")


class EpochReporter:
    """Training said epoch by epoch through ``ticker``: a line per epoch with its mean
    training loss, the elapsed time and the time left (extrapolated from the epochs and
    batches done); the heartbeat says the running epoch's batches and loss.

    Pass :meth:`batch` as :func:`search.compress.distill.train`'s ``on_batch`` and
    :meth:`epoch` as its ``on_epoch``.
    """

    def __init__(self, ticker: Ticker, *, epochs: int) -> None:
        self.ticker, self.epochs = ticker, epochs
        self._sum, self._count, self._epoch = 0.0, 0, 1
        self._start = time.monotonic()

    def _left(self, done: float) -> str:
        """The time left once ``done`` (a fraction of all epochs) is done, extrapolated."""
        spent = time.monotonic() - self._start
        return f"about {duration(spent * (1 - done) / done)} left" if done > 0 else "time left ?"

    def batch(self, batch: int, batches: int, loss: float) -> None:
        """After batch ``batch`` of ``batches`` (1-based) with training loss ``loss``."""
        self._sum += loss
        self._count += 1
        done = (self._epoch - 1 + batch / max(batches, 1)) / self.epochs
        self.ticker.detail(
            f"epoch {self._epoch}/{self.epochs}, batch {batch}/{batches}, running loss "
            f"{self._sum / self._count:.4f}, {self._left(done)}"
        )

    def epoch(self, epoch: int) -> None:
        """After epoch ``epoch`` (1-based): its line, then the next epoch starts afresh."""
        loss = f"{self._sum / self._count:.4f}" if self._count else "-"
        spent = duration(time.monotonic() - self._start)
        left = self._left(epoch / self.epochs)
        self.ticker.note(f"epoch {epoch}/{self.epochs}: loss {loss}, {spent} elapsed, {left}")
        self._sum, self._count, self._epoch = 0.0, 0, epoch + 1
