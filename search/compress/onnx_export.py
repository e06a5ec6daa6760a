"""torch -> ONNX with the dynamo exporter: readable weight names, a dynamic batch dimension."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

OPSET = 21  # opset 21 lets int4 and int8 weights mix in standard Q/DQ nodes


def export_onnx(
    model: nn.Module, example_input: torch.Tensor, path: Path, *, opset: int = OPSET
) -> Path:
    """Export ``model`` (eval mode) to a single self-contained ONNX file at ``path``.

    The input is named ``input`` and its first dimension is a dynamic batch; weights keep their
    PyTorch names (``layers.0.conv1.weight``), which per-layer precision choices rely on.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The exporter logs and warns at length about optional torchvision ops; keep the console clean.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        level = logging.getLogger("torch.onnx").level
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            torch.onnx.export(
                model,
                (example_input,),
                str(path),
                input_names=["input"],
                output_names=["output"],
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        finally:
            logging.getLogger("torch.onnx").setLevel(level)
    return path
