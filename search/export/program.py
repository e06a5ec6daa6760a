"""The trial's ``model.pt2`` as export ships it: checked against the sha256 the trial recorded,
never loaded (loading a ``.pt2`` can run code; see :mod:`search.trial.programs`)."""

from __future__ import annotations

import sys
from pathlib import Path

from search.core.hashing import sha256_file
from search.core.paths import PROGRAM
from search.errors import SearchError
from search.record import TrialRecord


class ProgramError(SearchError):
    """A trial's program is not the file the trial wrote."""


def program_source(src: Path, rec: TrialRecord, *, number: int) -> Path | None:
    """The trial's ``model.pt2`` in ``src`` (checked, never loaded); None, with a note on
    stderr, when the trial has none.

    Raises:
        ProgramError: the file differs from the one the trial recorded (its sha256).
    """
    program, info = src / PROGRAM, rec.program
    if not program.is_file():
        if (src / "model.pt").is_file():
            why = (
                "its model was saved as a pickle (model.pt) by an older version, and export "
                "does not load pickles (they can run code)"
            )
        else:
            why = info.get("error") or "the trial saved none"
        print(
            f"note: no {PROGRAM} for trial {number}: {why}; python reproduce.py reruns the "
            "trial and writes one",
            file=sys.stderr,
        )
        return None
    if info.get("sha256") and sha256_file(program) != info["sha256"]:
        raise ProgramError(
            f"trial {number}: {program} is not the file the trial wrote (sha256 differs); "
            "rerun the trial"
        )
    return program
