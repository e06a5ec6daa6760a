"""Calibration of a float ONNX model with ONNX Runtime's calibrators, cached and reused.

Calibration and quantization are separate calls, so one calibration (activation ranges of one
float model, for one method and one set of inputs) is reused by every precision variant of that
model: the trial's own plan, the sensitivity pass and the uniform-int8 reference.

Two things in ONNX Runtime's tools would take a study down, and are worked around here:

* ``quant_pre_process`` runs symbolic shape inference first, which raises "Incomplete symbolic
  shape inference" on graphs it cannot follow (a Resize from ``nn.Upsample``; Swin V2); then
  pre-processing runs again without it (``skip_symbolic_shape=True``: ONNX shape inference and
  the graph clean-up still run) and :attr:`Calibration.notes` says so. The model it saves into
  the working directory on that failure (``sym_shape_infer_temp.onnx`` and a ``<uuid>.data``
  file, symbolic_shape_infer.py:3315, never removed) is removed.
* The histogram calibrators (entropy, percentile) stack every batch of one ``collect_data`` call
  with ``np.asarray`` (calibrate.py:931): batches of unequal size (32 + 16) fail with
  "inhomogeneous shape". Inputs are fed in equal batches (the largest divisor of their number
  up to 32), which give the same ranges as any other equal split (measured: 30+30, 20x3 and
  60x1 identical on mobilenet_v2); only the time grows when the number has no good divisor.

Example:
    >>> calib = calibrate("model.onnx", inputs, method="minmax", cache_dir=Path("calib"))
    >>> calib.computed  # False when the same model, inputs and method were calibrated before
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from search.compress.quantize.groups import SCOPES, name_nodes
from search.core.errors import first_line
from search.errors import ConfigError

CalibMethod = Literal["minmax", "entropy", "percentile"]
_PRE_VERSION = b"scopes-v1"


@dataclass(frozen=True)
class Calibration:
    """Activation ranges of one pre-processed float model for one method and one input set."""

    model: Path  # the float model after quant_pre_process; every variant quantizes this file
    ranges: Path  # ONNX Runtime's calibration cache (TensorsData as JSON)
    method: CalibMethod
    key: str
    computed: bool  # False when the ranges came from the cache
    notes: tuple[str, ...] = ()  # fallbacks taken while pre-processing (say them once)


METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


def equal_batch(n: int, largest: int = 32) -> int:
    """The largest batch size up to ``largest`` that divides ``n`` (60 -> 30, 48 -> 24, 61 -> 1):
    equal batches are what the histogram calibrators can stack."""
    return next(b for b in range(min(largest, max(n, 1)), 0, -1) if n % b == 0)


class _Reader:
    """ONNX Runtime CalibrationDataReader over a numpy batch, in equal chunks."""

    def __init__(self, name: str, inputs: np.ndarray, batch: int) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(
            {name: inputs[i : i + batch]} for i in range(0, len(inputs), batch)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _restore_scopes(source: Path, pre: Path) -> None:
    """Give the pre-processed model's nodes back the module scopes groups are matched by.

    ``quant_pre_process`` keeps node names but drops node metadata, so a layer whose weight has
    no module name (a transposed MatMul weight is ``val_8``) would leave its group. Nodes it
    created (a Transpose it split out) borrow the scopes of a neighbour: the first consumer of
    their output, else the producer of their input.
    """
    import onnx

    src = onnx.load(str(source), load_external_data=False)
    scopes = {n.name: p.value for n in src.graph.node for p in n.metadata_props if p.key == SCOPES}
    model = onnx.load(str(pre))
    nodes = list(model.graph.node)
    found = {n.name: scopes[n.name] for n in nodes if n.name in scopes}
    consumers: dict[str, list[str]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n.name)
    producer = {o: n.name for n in nodes for o in n.output}
    for n in nodes:
        if n.name in found:
            continue
        near = [c for o in n.output for c in consumers.get(o, [])]
        near += [producer[i] for i in n.input if i in producer]
        borrowed = next((found[m] for m in near if m in found), None)
        if borrowed is not None:
            found[n.name] = borrowed
    for n in nodes:
        if n.name in found and not any(p.key == SCOPES for p in n.metadata_props):
            n.metadata_props.add(key=SCOPES, value=found[n.name])
    name_nodes(model)  # after the scopes (matched by the original names): groups need names
    onnx.save(model, str(pre))


def preprocess(src: Path, dst: Path) -> list[str]:
    """``quant_pre_process`` of ``src`` into ``dst``, without symbolic shape inference when that
    fails; returns what fell back (one line each)."""
    import time

    from onnxruntime.quantization import quant_pre_process

    started = time.time()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(src), str(dst))
        return []
    except Exception as e:  # noqa: BLE001 - symbolic shape inference is optional
        first = first_line(e, 160)
        why = f"{type(e).__name__}: {first}"
    finally:
        _remove_shape_dump(started)
    with contextlib.redirect_stdout(io.StringIO()):
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return [f"quantization pre-processing ran without symbolic shape inference ({why})"]


_SHAPE_DUMP = Path("sym_shape_infer_temp.onnx")


def _remove_shape_dump(since: float) -> None:
    """Remove the model that failed symbolic shape inference saves into the working directory
    (symbolic_shape_infer.py:3315, a fixed name, weights in a ``<uuid>.data`` file beside it)."""
    import onnx

    if not _SHAPE_DUMP.is_file() or _SHAPE_DUMP.stat().st_mtime < since - 1:
        return
    with contextlib.suppress(Exception):
        graph = onnx.load(str(_SHAPE_DUMP), load_external_data=False).graph
        for init in graph.initializer:
            for entry in init.external_data:
                if entry.key == "location" and "/" not in entry.value:
                    Path(entry.value).unlink(missing_ok=True)
    _SHAPE_DUMP.unlink(missing_ok=True)


def _preprocessed(onnx_path: Path, cache_dir: Path) -> tuple[Path, tuple[str, ...]]:
    """The pre-processed model in the cache (made once per float model) and its notes."""
    # The version tag keeps files pre-processed by older code (without scopes) out of use.
    model_key = _digest(Path(onnx_path).read_bytes(), _PRE_VERSION)
    pre = cache_dir / f"{model_key}.pre.onnx"
    sidecar = pre.with_suffix(".json")
    if not pre.is_file():
        # Shape inference and graph clean-up that ONNX Runtime's quantizer expects; it keeps
        # opset 21 (checked in tests), so int4 and int8 weights mix in standard Q/DQ nodes.
        # Written under a temporary name: a crash never leaves a half-made file in the cache.
        tmp = pre.with_suffix(f".{os.getpid()}.tmp")
        notes = preprocess(Path(onnx_path), tmp)
        _restore_scopes(Path(onnx_path), tmp)
        sidecar.write_text(json.dumps({"notes": notes}))
        tmp.replace(pre)
    notes = json.loads(sidecar.read_text()).get("notes", []) if sidecar.is_file() else []
    return pre, tuple(notes)


def calibrate(
    onnx_path: Path | str, inputs: np.ndarray, *, method: CalibMethod, cache_dir: Path
) -> Calibration:
    """Pre-process ``onnx_path`` and compute its activation ranges, or load them from the cache.

    The cache key is the hash of the float model, the calibration inputs and the method, so the
    ranges are computed once per float model and reused by every precision variant of it.
    """
    import onnx

    if method not in METHODS:
        raise ConfigError(f"unknown calibration method {method!r}: use one of {list(METHODS)}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    inputs = np.ascontiguousarray(inputs)  # the dtype the model takes (int64 token ids too)
    pre, notes = _preprocessed(Path(onnx_path), cache_dir)
    key = _digest(pre.read_bytes(), inputs.tobytes(), str(inputs.shape).encode(), method.encode())
    ranges = cache_dir / f"{key}.{method}.calib.json"
    if ranges.is_file():
        return Calibration(pre, ranges, method, key, computed=False, notes=notes)
    input_name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
    batch, chunked = equal_batch(len(inputs)), False
    while True:
        try:
            _collect(
                pre, input_name, inputs, batch=batch, chunked=chunked, method=method, out=ranges
            )
            break
        except Exception as e:  # noqa: BLE001 - only ONNX Runtime's "cannot allocate" is retried
            if (chunked and batch == 1) or not _out_of_memory(e):
                raise
            # Calibrating makes every intermediate tensor a graph output, and one collect_data
            # call keeps them all until it ends: a large model at full resolution can exhaust
            # memory. Then one call per batch (ranges and histograms merge across calls), and
            # smaller equal batches until one fits.
            batch = equal_batch(len(inputs), largest=batch // 2) if chunked else batch
            chunked = True
    if chunked:
        notes = (*notes, f"calibrated {batch} inputs at a time: more ran out of memory")
    return Calibration(pre, ranges, method, key, computed=True, notes=notes)


def _out_of_memory(e: BaseException) -> bool:
    """Whether ONNX Runtime (or numpy) failed to allocate memory."""
    text = str(e)
    markers = ("bfc_arena", "Failed to allocate", "bad_alloc")
    return isinstance(e, MemoryError) or any(m in text for m in markers)


def _collect(
    pre: Path,
    input_name: str,
    inputs: np.ndarray,
    *,
    batch: int,
    chunked: bool,
    method: str,
    out: Path,
) -> None:
    """Run ONNX Runtime's calibrator over ``inputs`` in equal batches (one ``collect_data``
    call, or one call per batch when ``chunked``); write the ranges to ``out``."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.calibrate import save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    with tempfile.TemporaryDirectory(prefix="calib.") as tmp:
        calibrator = create_calibrator(
            pre,
            list(set(QLinearOpsRegistry) | set(QDQRegistry)),  # what quantize_static calibrates
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=getattr(CalibrationMethod, METHODS[method]),
        )
        # The histogram calibrators print progress to stdout; keep the study's console clean.
        with contextlib.redirect_stdout(io.StringIO()), quiet_logging():
            chunks = range(0, len(inputs), batch) if chunked else [0]
            for i in chunks:
                part = inputs[i : i + batch] if chunked else inputs
                calibrator.collect_data(_Reader(input_name, part, batch))
            save_tensors_data(calibrator.compute_data(), out)
        del calibrator


@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """ONNX Runtime's quantization tools log warnings on the root logger ("Axis 1 is
    out-of-range for weight 'norm.weight'") for every trial; hold them back for the call."""
    import logging

    before = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(before)


def calib_enum(method: str) -> Any:
    """ONNX Runtime's CalibrationMethod for one of our method names."""
    from onnxruntime.quantization import CalibrationMethod

    return getattr(CalibrationMethod, METHODS[method])
