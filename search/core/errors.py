"""One line about an exception: the single place that turns an error into the text a user, a
trial record or a report reads.

Example:
    >>> first_line(ValueError("bad shape\\n  more detail"))
    'bad shape'
    >>> try:
    ...     int("x")
    ... except ValueError as e:
    ...     describe(e).startswith("ValueError: invalid literal for int() with base 10: 'x' at ")
    True
"""

from __future__ import annotations

import traceback
from pathlib import Path


def first_line(e: BaseException | str, limit: int = 200) -> str:
    """The first non-empty line of ``e``'s message (or of a text), at most ``limit`` characters;
    '' when there is none."""
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[0].strip()[:limit] if lines else ""


def where(e: BaseException) -> str:
    """``file.py:line`` of the innermost frame of ``e``'s traceback ('' without one)."""
    frames = traceback.extract_tb(e.__traceback__) if e.__traceback__ else []
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""


def _library(filename: str) -> bool:
    return "site-packages" in filename or "dist-packages" in filename


def describe(e: BaseException, limit: int = 200) -> str:
    """``Type: first line at file:line``, one line; where the innermost frame is in an installed
    library, also the innermost frame of the caller's own code (``(from my_model.py:23)``)."""
    frames = traceback.extract_tb(e.__traceback__) if e.__traceback__ else []
    msg = first_line(e, limit)
    if not frames:
        return f"{type(e).__name__}: {msg}"
    name = lambda f: f"{Path(f.filename).name}:{f.lineno}"  # noqa: E731
    at = name(frames[-1])
    if _library(frames[-1].filename):
        own = [f for f in frames if not _library(f.filename)]
        at += f" (from {name(own[-1])})" if own else ""
    return f"{type(e).__name__}: {msg} at {at}"
