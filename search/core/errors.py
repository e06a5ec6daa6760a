"""One line about an exception: the single place that turns an error into the text a user, a
trial record or a report reads.

Example:
    >>> first_line(ValueError("bad shape\\n  more detail"))
    'bad shape'
    >>> message('Error(s) in loading state_dict for Net:\\n\\tMissing key(s): "a", "b".\\nMore.')
    'Error(s) in loading state_dict for Net: Missing key(s): "a", "b"; More'
    >>> try:
    ...     int("x")
    ... except ValueError as e:
    ...     describe(e).startswith("ValueError: invalid literal for int() with base 10: 'x' at ")
    True
"""

from __future__ import annotations

import re
import sysconfig
import traceback
from pathlib import Path

_SEARCH = str(Path(__file__).resolve().parents[1])  # this package: not the user's code
_STDLIB = str(Path(sysconfig.get_paths()["stdlib"]).resolve())
_KEYS_SHOWN = 5  # quoted names kept from a long list (torch's missing/unexpected state_dict keys)
_LINES_SHOWN = 6  # lines kept from a long message
_QUOTED = re.compile(r'"[^"]*"|\'[^\']*\'')
_LIST = re.compile(r"^(?P<head>.*?:\s*)(?P<items>([\"'][^\"']*[\"'],\s*)+[\"'][^\"']*[\"'])\.?$")


def first_line(e: BaseException | str, limit: int = 200) -> str:
    """The first non-empty line of ``e``'s message (or of a text), at most ``limit`` characters;
    '' when there is none."""
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[0].strip()[:limit] if lines else ""


def _short_list(line: str) -> str:
    """A line ending in a long list of quoted names, cut to the first few and ``and N more``."""
    m = _LIST.match(line)
    if not m:
        return line
    items = _QUOTED.findall(m["items"])
    if len(items) <= _KEYS_SHOWN:
        return line
    return f"{m['head']}{', '.join(items[:_KEYS_SHOWN])} and {len(items) - _KEYS_SHOWN} more"


def message(e: BaseException | str, limit: int = 400) -> str:
    """All the lines of ``e``'s message as one line, at most ``limit`` characters: a line that
    ends in ``:`` runs on into the next, other lines are joined with ``; ``; a long list of
    quoted names (torch's ``Missing key(s) in state_dict: ...``) keeps its first five and says
    how many more; after six lines, the number of lines left out. '' for an empty message."""
    lines = [_short_list(line.strip().rstrip(".").strip()) for line in str(e).splitlines()]
    lines = [line for line in lines if line]
    if len(lines) > _LINES_SHOWN:
        lines = [*lines[:_LINES_SHOWN], f"and {len(lines) - _LINES_SHOWN} more line(s)"]
    text = ""
    for line in lines:
        text += ("" if not text else " " if text.endswith(":") else "; ") + line
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def where(e: BaseException) -> str:
    """``file.py:line`` of the innermost frame of ``e``'s traceback ('' without one)."""
    frames = traceback.extract_tb(e.__traceback__) if e.__traceback__ else []
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""


def _library(filename: str) -> bool:
    return "site-packages" in filename or "dist-packages" in filename


def _foreign(filename: str) -> bool:
    """Whether a frame's file is not the user's: an installed library, the standard library
    (importlib's frozen frames included) or this package."""
    if filename.startswith("<") or _library(filename):
        return True
    resolved = str(Path(filename).resolve())
    return resolved.startswith((_STDLIB + "/", _SEARCH + "/"))


def user_frame(e: BaseException) -> traceback.FrameSummary | None:
    """The deepest frame of ``e``'s traceback in the user's own code (not a library, the
    standard library or ``search``); else the deepest outside installed libraries and the
    standard library; else the innermost; None without a traceback."""
    frames = traceback.extract_tb(e.__traceback__) if e.__traceback__ else []
    own = [f for f in frames if not _foreign(f.filename)]
    ours = [f for f in frames if not _library(f.filename) and not f.filename.startswith("<")]
    ours = [f for f in ours if not str(Path(f.filename).resolve()).startswith(_STDLIB + "/")]
    pick = own or ours or frames
    return pick[-1] if pick else None


def at_user(e: BaseException, limit: int = 400) -> str:
    """``at my_task.py:12: Type: message`` for an exception from the user's code: the deepest
    frame of their own code (:func:`user_frame`) and every line of the message that matters
    (:func:`message`), one line."""
    frame = user_frame(e)
    at = f"at {Path(frame.filename).name}:{frame.lineno}: " if frame else ""
    return f"{at}{type(e).__name__}: {message(e, limit)}"


def describe(e: BaseException, limit: int = 200) -> str:
    """``Type: first line at file:line``, one line; where the innermost frame is in an installed
    library, also the deepest frame of the caller's own code (``(from my_model.py:23)``)."""
    frames = traceback.extract_tb(e.__traceback__) if e.__traceback__ else []
    msg = first_line(e, limit)
    if not frames:
        return f"{type(e).__name__}: {msg}"
    name = lambda f: f"{Path(f.filename).name}:{f.lineno}"  # noqa: E731
    at = name(frames[-1])
    if _library(frames[-1].filename):
        own = user_frame(e)
        at += f" (from {name(own)})" if own is not None and name(own) != at else ""
    return f"{type(e).__name__}: {msg} at {at}"
