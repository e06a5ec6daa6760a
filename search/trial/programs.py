"""The compressed float model of a trial as a ``torch.export`` program: ``model.pt2``.

A trial writes the program while it still holds the model, so nothing later has to rebuild the
model or unpickle it: ``search export`` only copies the file. The program loads with PyTorch
alone (``torch.export.load(path).module()``), for inference and for fine-tuning (its parameters
are ordinary ``nn.Parameter`` s).

Loading a ``.pt2`` is not safe for files from elsewhere: in torch 2.14,
``torch.export.load`` unpickles payloads the archive marks as pickled
(``torch/export/pt2_archive/_package.py``: ``torch.load(..., weights_only=False)`` and
``pickle.loads`` of opaque constants), falls back to ``weights_only=False`` for sample inputs it
cannot read otherwise (``torch/_export/serde/serialize.py``: ``deserialize_torch_artifact``),
and parses shape expressions with ``sympy.sympify``, which evaluates Python. So this package
never loads a program it did not just create; it copies them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.core.checks import disk_problem
from search.core.errors import first_line
from search.core.hashing import sha256_bytes

if TYPE_CHECKING:
    import torch
    from torch import nn


MAX_BATCH = 4096
TOLERANCE = 1e-4


def save_program(model: nn.Module, example_input: torch.Tensor, path: Path) -> dict[str, Any]:
    """Export ``model`` (eval mode) to ``path`` with a dynamic batch dimension.

    The program is traced on two copies of ``example_input`` (``torch.export`` specializes a
    dimension of size 1 to a constant) and compared with the model on them before it is saved.

    Returns:
        ``{"file", "bytes", "sha256", "max_abs_diff", "batch": [1, MAX_BATCH]}``.

    Raises:
        RuntimeError: the program differs from the model by more than ``TOLERANCE``.
        Exception: whatever ``torch.export`` raises for a model it cannot trace.
    """
    import torch

    model = model.eval()
    x = torch.cat([example_input, example_input])
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
        diff = (program.module()(x) - model(x)).abs().max().item()
    if not diff <= TOLERANCE:
        raise RuntimeError(f"the exported program differs from the model by {diff:.2g}")
    path = Path(path)
    torch.export.save(program, path)
    data = path.read_bytes()
    return {
        "file": path.name,
        "bytes": len(data),
        "sha256": sha256_bytes(data),
        "max_abs_diff": diff,
        "batch": [1, MAX_BATCH],
    }


def try_save_program(model: nn.Module, example_input: torch.Tensor, path: Path) -> dict[str, Any]:
    """:func:`save_program`, or ``{"error": reason}`` when the model cannot be exported that
    way: the trial is measured from its ONNX file either way, so it goes on without one."""
    try:
        return save_program(model, example_input, path)
    except Exception as e:  # noqa: BLE001 - any export failure leaves the trial without a .pt2
        Path(path).unlink(missing_ok=True)
        if disk_problem(e):
            raise
        first = first_line(e, 200)
        return {"error": f"{type(e).__name__}: {first}"}
