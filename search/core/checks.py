"""Checks that run before any work: names, folders, free space; and how a full disk is told.

Every function here is cheap and torch-free, so the command line can refuse bad input in
milliseconds, before a study, a teacher or an artifact exists. Each failure is a one-line
:class:`~search.errors.SearchError` naming the input and the fix.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sqlite3
import tempfile
from pathlib import Path

from search.errors import SearchError

# A study name becomes a folder under the results folder: one path component, no dot first (no
# "..", no hidden folder), characters that every file system and shell take as they are.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]{0,127}")
# Below this much free space a study cannot even write its report; refused before any work.
MIN_FREE_MB = 64
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


class DiskError(SearchError):
    """The results folder cannot be written (read-only, no permission) or the disk is full."""


def check_study_name(name: str, *, flag: str = "--study") -> str:
    """``name`` when it is a plain name (a folder under the results folder), else a one-line
    :class:`SearchError`: a name with a path separator, ``..`` or an absolute path would put the
    study outside the results folder."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = name if isinstance(name, str) else type(name).__name__
        raise SearchError(
            f"{flag} {shown!r} is not a study name: use letters, digits and . _ - + = (at most "
            "128, starting with a letter or digit, no / or ..); pass --study NAME, and choose "
            "the folder with --results-dir"
        )
    return name


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(
    folder: Path, *, what: str = "results", min_free_mb: float = MIN_FREE_MB
) -> None:
    """Refuse a folder that cannot be written, or a disk with less than ``min_free_mb`` free.

    The folder need not exist yet: its nearest existing parent is probed by creating (and at
    once removing) a temporary file, which catches read-only mounts, permissions and ACLs alike.
    Nothing else is created.

    Raises:
        DiskError: one line naming the folder and the reason.
    """
    folder = Path(folder)
    base = _existing_ancestor(folder)
    if not base.is_dir():
        raise DiskError(f"cannot write {what} to {folder}: {base} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".search-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = (e.strerror or str(e)).lower()  # strerror is set for every OS call that fails
        raise DiskError(
            f"cannot write {what} to {folder}: {reason} ({base}); pick another "
            "folder with --results-dir"
        ) from None
    free_mb = shutil.disk_usage(base).free / 2**20
    if free_mb < min_free_mb:
        raise DiskError(
            f"only {free_mb:.1f} MB free for {what} in {folder} (a study needs at least "
            f"{min_free_mb} MB): free some space or pick another folder with --results-dir"
        )


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def check_out_not_source(out: Path, source: Path, *, what: str, inside_ok: bool = False) -> None:
    """Refuse an export folder that is ``source`` (a folder export reads from), holds it, or
    (unless ``inside_ok``) lies inside it, symbolic links followed: writing there would change
    or copy over what is being exported (``shutil.SameFileError`` when it is the same file).

    Raises:
        SearchError: one line naming ``what`` the source is.
    """
    o, src = _real(Path(out)), _real(Path(source))
    if o == src:
        relation = "is"
    elif o in src.parents:
        relation = "holds"
    elif src in o.parents and not inside_ok:
        relation = "lies inside"
    else:
        return
    raise SearchError(
        f"--out {out} {relation} {what} ({source}); name a new folder outside it for the export"
    )


def check_out_dir(out: Path, *, force: bool, study_dir: Path | None = None) -> None:
    """Refuse an export folder that is not a folder (a file, a device, a broken or looping
    symbolic link), holds anything unless ``force``, cannot be written, or clashes with the
    study in ``study_dir``: is it or holds it, or lies in its ``artifacts/`` or ``store/``.

    Raises:
        SearchError: one line naming ``--out`` and the fix.
    """
    out = Path(out)
    try:
        os.stat(out)
    except FileNotFoundError:
        if out.is_symlink():
            raise SearchError(
                f"--out {out} is a symbolic link to a path that does not exist "
                f"({os.readlink(out)}); name a folder"
            ) from None
    except OSError as e:  # a loop of symbolic links, a path through a file, no permission
        reason = (e.strerror or str(e)).lower()
        raise SearchError(f"--out {out}: {reason}; name a folder to write the export to") from None
    if out.exists() and not out.is_dir():
        raise SearchError(f"--out {out} is a file; name a folder to write the export to")
    if study_dir is not None:
        study_dir = Path(study_dir)
        check_out_not_source(out, study_dir, what="the study's folder", inside_ok=True)
        for sub in ("artifacts", "store"):
            check_out_not_source(out, study_dir / sub, what=f"the study's {sub} folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise SearchError(
            f"--out {out} is not empty: name a new or empty folder, or add --force to "
            "overwrite the files export writes there"
        )
    check_writable(out, what="the export", min_free_mb=1)


def disk_problem(error: BaseException) -> str | None:
    """A short reason when ``error`` (or what caused it) means the disk is full or read-only:
    an ``OSError`` with ENOSPC/EDQUOT/EROFS, SQLite's "database or disk is full", or torch's
    "file write failed"; None for anything else."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
            return os.strerror(e.errno).lower()
        text = str(e).lower()
        if isinstance(e, sqlite3.OperationalError) or "sqlite" in type(e).__module__:
            if "disk is full" in text:
                return "no space left on device"
            if "disk i/o error" in text:
                return "disk I/O error"
            if "readonly database" in text:
                return "read-only database"
        if "database or disk is full" in text or "no space left on device" in text:
            return "no space left on device"
        if "file write failed" in text and "pytorchstreamwriter" in text:
            return "no space left on device (or the file could not be written)"
        e = e.__cause__ or e.__context__
    return None


def disk_full(error: BaseException, folder: Path) -> DiskError | None:
    """The one-line error for a run that ``error`` stopped because ``folder``'s disk is full or
    read-only, or None when ``error`` is something else."""
    reason = disk_problem(error)
    if reason is None:
        return None
    return DiskError(
        f"{reason} while writing to {folder}: free some space (or make it writable) and rerun "
        "the same command to resume the study"
    )
