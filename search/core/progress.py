"""Live progress for long work: a bar for trials, one for the epochs of the running trial."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

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
    """The progress display and its epoch bar, as one trial updates them."""

    progress: Any
    epochs: Any

    def show(self, number: int, epoch: int, total: int | None = None) -> None:
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
