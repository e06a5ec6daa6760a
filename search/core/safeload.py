"""Reading pickled data without running code from it: the CIFAR-10 python batches.

``pickle.load`` calls whatever callable a file names, so a crafted ``data_batch_1`` could run a
shell command. :class:`DataUnpickler` admits only what the CIFAR-10 format needs (dicts, lists,
bytes, numbers, built by the pickle opcodes themselves, and numpy arrays rebuilt through numpy's
own array reconstructor) and refuses every other global with :class:`UnsafePickle`, before
anything is called. Object arrays are refused too, so every array holds plain numbers.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

# (module, name) pairs a numpy array pickle needs; numpy 2 moved numpy.core to numpy._core.
# ``_codecs.encode`` rebuilds bytes in protocol-2 pickles written by Python 3 (it only encodes a
# string).
ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class UnsafePickle(pickle.UnpicklingError):
    """The file names a global outside :data:`ALLOWED_GLOBALS`; nothing was called."""


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    # Protocol-2 pickles spell bytes as _codecs.encode(text, "latin1"); no other codec is looked
    # up (a codec name can import a module).
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickle(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class DataUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickle(f"refused to load {module}.{name}: data files hold no code")
        if (module, name) == ("_codecs", "encode"):
            return _latin1
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickle("refused a persistent id: data files hold no external references")


def _check_arrays(obj: object, depth: int = 0) -> None:
    """Refuse object arrays anywhere in ``obj`` (their items could be anything)."""
    import numpy as np

    if depth > 20:
        raise UnsafePickle("nested too deeply for a data file")
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        raise UnsafePickle("holds an array of Python objects; data arrays hold numbers")
    if isinstance(obj, dict):
        for key, value in obj.items():
            _check_arrays(key, depth + 1)
            _check_arrays(value, depth + 1)
    elif isinstance(obj, list | tuple):
        # Long lists of labels are plain ints: only containers need looking into.
        for item in obj:
            if isinstance(item, dict | list | tuple) or type(item).__module__ == "numpy":
                _check_arrays(item, depth + 1)


def load_data_pickle(path: Path, *, encoding: str = "bytes") -> Any:
    """Unpickle the data file ``path`` with :class:`DataUnpickler`.

    Raises:
        UnsafePickle: the file names anything but containers, numbers, bytes and numeric
            numpy arrays; nothing in it was called.
        pickle.UnpicklingError, EOFError, ValueError, OSError: the file is damaged or unreadable.
    """
    data = Path(path).read_bytes()
    obj = DataUnpickler(io.BytesIO(data), encoding=encoding).load()
    _check_arrays(obj)
    return obj
