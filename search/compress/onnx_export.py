"""torch -> ONNX with a dynamic batch that really is dynamic, proven in ONNX Runtime.

The dynamo exporter keeps readable weight names (``layers.0.conv1.weight``), which per-layer
precision relies on. torch.export specialises the batch dimension when it traces a batch-1
example and the model makes the batch look constant: ConvNeXt fails ("Invalid ranges [2:1]"),
an LSTM silently gets a file fixed at batch 1 that scoring then feeds 16 inputs. So the example
is repeated to a batch of 2 (then 3) for tracing, and every file is checked: its batch must be
a named dimension, and ONNX Runtime must run it at batches 1 and 3 and agree with torch. The
legacy TorchScript exporter is the last resort (deprecated; it folds BatchNorm into Conv).

Example:
    >>> result = export_with_report(model, x[:1], Path("m.onnx"))
    >>> result.trace_batch, result.exporter, result.verified   # 2, "dynamo", {1: 3e-8, 3: 4e-8}
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

OPSET = 21  # opset 21 lets int4 and int8 weights mix in standard Q/DQ nodes
TOLERANCE = 1e-3  # max |ORT - torch| relative to max(1, max |torch|)
_LOGGERS = ("torch.onnx", "torch._guards", "torch._dynamo", "torch.export", "torch.fx")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ExportError(RuntimeError):
    """No exporter made a file that runs at any batch size and agrees with torch (one line)."""


@dataclass
class ExportResult:
    """The file, how it was made and what the check measured: ``verified`` maps a batch size to
    max |ORT - torch| / max(1, max |torch|); ``notes`` are the attempts that failed first."""

    path: Path
    trace_batch: int
    exporter: str
    verified: dict[int, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters log, warn and print at length (guard errors even when the export
    succeeds; the TorchScript exporter's C++ side dumps graphs to the process's stdout), so
    file descriptors 1 and 2 point at a scratch file for the duration."""
    loggers = [logging.getLogger(n) for n in _LOGGERS]
    levels = [lg.level for lg in loggers]
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(sink.fileno(), 1), os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def _batch_of(example_input: torch.Tensor, batch: int, *, noise: bool = False) -> torch.Tensor:
    one = example_input[:1]
    x = one.repeat(batch, *([1] * (one.dim() - 1)))
    if noise and x.is_floating_point():
        g = torch.Generator().manual_seed(batch)
        scale = float(one.std()) if one.numel() > 1 else 1.0
        x = x + 0.5 * (scale or 1.0) * torch.randn(x.shape, generator=g, dtype=x.dtype)
    return x


def _outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The model's raw outputs (a tensor or a tuple/list of tensors) as a tuple."""
    with torch.no_grad():
        out = model.eval()(x)
    return tuple(out) if isinstance(out, tuple | list) else (out,)


def output_names(model: nn.Module, x: torch.Tensor, names: Sequence[str] | None) -> list[str]:
    """``names``, or ``output`` for one output and ``output_0``, ``output_1``, ... for several.

    Raises:
        ExportError: ``names`` does not name every output.
    """
    count = len(_outputs(model, x[:1]))
    if names is None:
        return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
    if len(names) != count:
        raise ExportError(f"{len(names)} output names for {count} outputs")
    return list(names)


def _export(
    model: nn.Module,
    x: torch.Tensor,
    path: Path,
    *,
    exporter: str,
    opset: int,
    names: list[str],
) -> None:
    if exporter == "dynamo":
        torch.onnx.export(
            model,
            (x,),
            str(path),
            input_names=["input"],
            output_names=names,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
        return
    torch.onnx.export(
        model,
        (x,),
        str(path),
        input_names=["input"],
        output_names=names,
        opset_version=min(opset, 20),
        dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in names}},
        dynamo=False,
    )


def batch_dim(path: Path) -> str | int:
    """The first input's batch dimension as the file writes it: a name, or a fixed size."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dim = graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_param or int(dim.dim_value)


def verify(
    path: Path, model: nn.Module, example_input: torch.Tensor, batches: tuple[int, ...] = (1, 3)
) -> dict[int, float]:
    """Run the file at each batch size on ONNX Runtime's CPU provider; per batch, the largest
    over the outputs of max |torch - ORT| / max(1, max |torch|). Raises what ONNX Runtime
    raises for a batch it refuses."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.log_severity_level = 4  # a batch the file refuses is reported by the check itself
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out: dict[int, float] = {}
    for b in batches:
        x = _batch_of(example_input, b, noise=True)
        refs = [r.float().numpy() for r in _outputs(model, x)]
        got = sess.run(None, {name: x.numpy()})
        if len(got) != len(refs):
            raise ExportError(f"the file has {len(got)} outputs, the model {len(refs)}")
        out[b] = max(_relative(g, r) for g, r in zip(got, refs, strict=True))
    return out


def _relative(got: np.ndarray, ref: np.ndarray) -> float:
    if got.shape != ref.shape:
        raise ExportError(f"ONNX Runtime gave an output {got.shape} where torch gave {ref.shape}")
    if ref.size == 0:
        return 0.0
    return float(np.abs(got - ref).max() / max(1.0, float(np.abs(ref).max())))


def _attempt(
    model: nn.Module,
    example_input: torch.Tensor,
    path: Path,
    *,
    exporter: str,
    batch: int,
    opset: int,
    names: list[str],
) -> ExportResult:
    """One way of exporting; raises ExportError saying why the file is unusable."""
    with _quiet():
        x = _batch_of(example_input, batch)
        _export(model, x, path, exporter=exporter, opset=opset, names=names)
    fixed = batch_dim(path)
    if isinstance(fixed, int):
        raise ExportError(f"the file fixes the batch at {fixed}")
    try:
        verified = verify(path, model, example_input)
    except Exception as e:  # noqa: BLE001 - the named dim is not really dynamic
        raise ExportError(f"ONNX Runtime: {type(e).__name__}: {_first(e)}") from None
    worst = max(verified.values())
    if not worst <= TOLERANCE:
        raise ExportError(f"ONNX Runtime differs from torch by {worst:.1e} (relative)")
    return ExportResult(path=path, trace_batch=batch, exporter=exporter, verified=verified)


def _first(e: BaseException) -> str:
    """The line that says what went wrong: the torch.onnx errors open with generic advice and
    name the cause under "Exception summary" (``<class '...DispatchError'>: No ONNX function
    found for ...``) and the user's line under "The following call raised this error"."""
    lines = [_ANSI.sub("", line).strip() for line in str(e).strip().splitlines()] or [""]
    cause = next((ln for ln in lines if ln.startswith("<class '")), None)
    if cause is None:
        return lines[0][:200]
    kind, _, msg = cause.partition(">: ")
    text = f"{kind.rsplit('.', 1)[-1].rstrip(chr(39))}: {msg}"[:200]
    call = next((i for i, ln in enumerate(lines) if ln.startswith("The following call")), None)
    if call is not None and call + 1 < len(lines) and lines[call + 1].startswith("File "):
        where = lines[call + 1].split('"')
        if len(where) >= 3:
            text += f" at {Path(where[1]).name}:{where[2].split(',')[1].split()[-1]}"
    return text


def export_with_report(
    model: nn.Module,
    example_input: torch.Tensor,
    path: Path,
    *,
    opset: int = OPSET,
    names: Sequence[str] | None = None,
) -> ExportResult:
    """Export ``model`` (eval mode) to one self-contained ONNX file at ``path`` with a dynamic
    batch, traced at batch 2, then 3, then by the legacy exporter; each file is checked at
    batches 1 and 3 in ONNX Runtime against torch (:func:`verify`), every output.

    The input is named ``input`` (in the example's dtype: int64 token ids stay int64) and the
    outputs ``names`` (default :func:`output_names`); weights keep their PyTorch names. A
    model returns one tensor or a tuple of tensors, batch first.

    Raises:
        ExportError: no way gave a usable file; the one-line message lists every attempt.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    out_names = output_names(model, example_input, names)
    notes: list[str] = []
    for exporter, batch in (("dynamo", 2), ("dynamo", 3), ("legacy", 2)):
        try:
            result = _attempt(
                model, example_input, path, exporter=exporter, batch=batch, opset=opset,
                names=out_names,
            )  # fmt: skip
        except Exception as e:  # noqa: BLE001 - try the next way, report all at the end
            what = str(e) if isinstance(e, ExportError) else f"{type(e).__name__}: {_first(e)}"
            if notes and notes[-1].endswith(f": {what}"):  # the same reason at another batch
                notes[-1] = notes[-1].replace(": ", f" and {batch}: ", 1)
            else:
                notes.append(f"{exporter} exporter at batch {batch}: {what}")
            continue
        result.notes = notes
        return result
    path.unlink(missing_ok=True)
    raise ExportError("; ".join(notes))


def export_onnx(
    model: nn.Module,
    example_input: torch.Tensor,
    path: Path,
    *,
    opset: int = OPSET,
    names: Sequence[str] | None = None,
) -> Path:
    """:func:`export_with_report`, returning the path of the checked file."""
    return export_with_report(model, example_input, path, opset=opset, names=names).path
