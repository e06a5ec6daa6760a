"""Where the agent keeps uploads: ``<sha256>.onnx`` and ``<sha256>.npy`` in one private folder,
never more than a set size.

- An upload is written to a temporary ``.part`` file and renamed into place; on any failure (a
  full disk included) the ``.part`` file is removed, and those a killed agent left behind are
  removed when it starts.
- The folder holds at most ``cap`` bytes. An upload that would pass the cap first evicts the
  blobs least recently used, if they were last used more than ``idle_s`` seconds ago (so a
  measurement in progress never loses its inputs); when that is not enough it is refused with
  :class:`StoreFull` (507). A client that finds a blob gone uploads it again.
- Each measurement gets a scratch folder here (its working directory), removed afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

KINDS = ("onnx", "npy")
SCRATCH = "run-"
_FULL = (errno.ENOSPC, errno.EDQUOT)


class StoreFull(OSError):
    """The store cannot take an upload (the cap or the disk): answered 507."""


class BlobStore:
    """Uploads addressed by SHA-256 in ``root`` (already created 0700), at most ``cap`` bytes."""

    def __init__(self, root: Path, *, cap: int, idle_s: float = 600.0) -> None:
        self.root = root
        self.cap = cap
        self.idle_s = idle_s
        self.lock = threading.Lock()  # space is checked and taken in one step
        self.removed = self._clean()

    def _clean(self) -> int:
        """Remove what a killed agent left: ``.part`` files and scratch folders; how many."""
        count = 0
        for path in self.root.iterdir():
            if path.name.endswith(".part") and path.is_file():
                path.unlink(missing_ok=True)
                count += 1
            elif path.name.startswith(SCRATCH) and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                count += 1
        return count

    def path(self, sha: str) -> Path | None:
        """The stored blob ``sha`` (either kind), or None."""
        for kind in KINDS:
            path = self.root / f"{sha}.{kind}"
            if path.is_file():
                return path
        return None

    def touch(self, path: Path) -> None:
        """Mark ``path`` as used now: eviction takes the least recently used first."""
        with contextlib.suppress(OSError):
            os.utime(path)

    def used(self) -> int:
        """Bytes the blobs and leftovers in the store take now."""
        total = 0
        for path in self.root.iterdir():
            with contextlib.suppress(OSError):
                if path.is_file():
                    total += path.stat().st_size
        return total

    def _evict(self, need: int) -> None:
        """Make room for ``need`` more bytes by removing blobs idle for ``idle_s``; raise
        :class:`StoreFull` when that is not enough."""
        used = self.used()
        if used + need <= self.cap:
            return
        now = time.time()
        blobs = []
        for path in self.root.iterdir():
            with contextlib.suppress(OSError):
                st = path.stat()
                if path.suffix in (".onnx", ".npy") and now - st.st_mtime > self.idle_s:
                    blobs.append((st.st_mtime, st.st_size, path))
        for _, size, path in sorted(blobs):
            if used + need <= self.cap:
                break
            path.unlink(missing_ok=True)
            used -= size
        if used + need > self.cap:
            raise StoreFull(
                f"the agent's store is full ({used / 2**20:.1f} of {self.cap / 2**20:.1f} MiB "
                f"in use, none of it idle for {self.idle_s:.0f} s): DELETE uploads you no "
                "longer need or restart the agent with a larger --max-store-mb"
            )

    def put(self, sha: str, kind: str, data: bytes) -> Path:
        """Store ``data`` as ``<sha>.<kind>`` (atomically: a reader never sees half a file).

        Raises:
            StoreFull: over the cap, or the disk is full (nothing is left behind).
        """
        path = self.root / f"{sha}.{kind}"
        tmp = self.root / f"{sha}.{kind}.{secrets.token_hex(4)}.part"
        with self.lock:
            self._evict(len(data))
            try:
                tmp.write_bytes(data)
                tmp.replace(path)
            except OSError as e:
                tmp.unlink(missing_ok=True)
                if isinstance(e, StoreFull) or e.errno not in _FULL:
                    raise
                raise StoreFull(
                    f"the agent's disk is full ({e.strerror}): DELETE uploads you no longer "
                    "need or free space on the target"
                ) from None
        return path

    def delete(self, sha: str) -> bool:
        """Forget ``sha``; whether it was there."""
        path = self.path(sha)
        if path is not None:
            path.unlink(missing_ok=True)
        return path is not None

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        """A fresh folder for one measurement (its working directory), removed afterwards."""
        folder = self.root / f"{SCRATCH}{secrets.token_hex(6)}"
        folder.mkdir(mode=0o700)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
