"""One ONNX file measured on this machine: its outputs, latency, peak memory and size."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from search.measure.latency import (
    LatencyStats,
    cpu_timed,
    make_runner,
    measure_latency,
    summarize,
)
from search.measure.load import LoadWatch
from search.measure.machine import runtime_info, timing_of
from search.measure.memory import MemoryStats, measure_peak_memory
from search.measure.paired import time_paired
from search.measure.runtime import create_session, describe_device
from search.measure.spec import MeasureSpec


@dataclass
class Measurement:
    """Raw measurement of one ONNX file; the metric is computed from ``outputs`` (every output of
    the file over the evaluation inputs, in the file's order, batch first) by the caller."""

    outputs: list[np.ndarray]
    latency: list[LatencyStats]
    memory: MemoryStats
    size_bytes: int
    providers: list[str]
    onnxruntime: str
    device: str
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready record of everything but the raw outputs."""
        return {
            "latency": [s.to_dict() for s in self.latency],
            "memory": self.memory.to_dict(),
            "size_bytes": self.size_bytes,
            "providers": self.providers,
            "onnxruntime": self.onnxruntime,
            "device": self.device,
            **self.extra,
        }


def run_all(
    session: ort.InferenceSession, inputs: np.ndarray, batch_size: int = 256
) -> list[np.ndarray]:
    """Every output of the session over ``inputs`` (N x ..., in the dtype the model takes:
    float images, int64 token ids), run ``batch_size`` at a time, or at the session's own batch
    size where its input has a fixed one (a static export, or a profile's
    ``free_dimensions``)."""
    name, first = session.get_inputs()[0].name, session.get_inputs()[0].shape[0]
    batch_size = first if isinstance(first, int) and first > 0 else batch_size
    parts = [
        session.run(None, {name: inputs[i : i + batch_size]})
        for i in range(0, len(inputs), batch_size)
    ]
    return [np.concatenate(column) for column in zip(*parts, strict=True)]


def run_batches(
    session: ort.InferenceSession, inputs: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """The session's first output over ``inputs`` (N x ...), batched as :func:`run_all`."""
    return run_all(session, inputs, batch_size)[0]


def pack_outputs(outputs: list[np.ndarray]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Several outputs (batch first, any dtypes) as one (N, bytes) uint8 array and the layout
    that :func:`unpack_outputs` reads back exactly: how the agent returns them in one blob."""
    n = len(outputs[0])
    layout = [{"shape": list(o.shape[1:]), "dtype": o.dtype.str} for o in outputs]
    rows = [np.ascontiguousarray(o).reshape(n, -1).view(np.uint8) for o in outputs]
    return np.concatenate(rows, axis=1) if n else np.zeros((0, 0), np.uint8), layout


def unpack_outputs(packed: np.ndarray, layout: list[dict[str, Any]]) -> list[np.ndarray]:
    """The outputs :func:`pack_outputs` packed."""
    out, at = [], 0
    for part in layout:
        dtype, shape = np.dtype(part["dtype"]), tuple(int(d) for d in part["shape"])
        width = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        chunk = np.ascontiguousarray(packed[:, at : at + width])
        out.append(chunk.view(dtype).reshape(len(packed), *shape))
        at += width
    return out


def measure_onnx(
    path: Path | str,
    *,
    spec: MeasureSpec,
    eval_inputs: np.ndarray,
    latency_input: np.ndarray,
    device_label: str = "",
    reference: Path | str | None = None,
    timing: Callable[[], contextlib.AbstractContextManager] | None = None,
    kernels: bool = False,
) -> Measurement:
    """Run ``path`` as ``spec`` says: every output over ``eval_inputs``, then latency at each of
    the spec's batch sizes (``latency_input`` repeated: the same input every trial), then peak
    memory at the first batch size in a fresh child process. Inputs keep their dtype.

    ``extra["runtime"]`` is the ONNX Runtime build (:func:`~search.measure.machine.runtime_info`);
    with ``kernels`` (the agent's case) ``extra["kernels"]`` is what the provider ran it as,
    audited here (:func:`~search.measure.kernels.kernel_report`, without the optimized graph).

    With ``reference`` (the study's baseline file) the first batch size is timed interleaved
    with it (:func:`~search.measure.paired.time_paired`): ``extra["paired"]`` holds the relative
    latency and its interval, ``extra["noisy"]`` whether its spread stayed above the profile's
    ``noise_threshold`` after the repeats. Either way ``extra["load"]`` says how busy the machine
    was while latency was timed (:class:`~search.measure.load.Load`).

    ``timing()`` is held around the latency runs only (a study's host lock, so that no other
    worker here trains meanwhile).

    Raises:
        ProviderError: a provider is missing, or the session fell back from one.
    """
    session = create_session(path, spec)
    name = session.get_inputs()[0].name
    # The inputs keep their dtype: the file takes what the model took (int64 token ids too).
    outputs = run_all(session, eval_inputs)
    one = latency_input[:1]
    feeds = [{name: np.repeat(one, bs, axis=0)} for bs in spec.batch_sizes]
    with timing() if timing is not None else contextlib.nullcontext():
        latency, extra = _timed(session, feeds, reference=reference, spec=spec)
    extra["runtime"] = runtime_info()
    extra["timing"] = timing_of(session.get_providers()[0])  # device, emulated or simulated
    if kernels:
        extra["kernels"] = _kernels(path, spec)
    memory = measure_peak_memory(path, feed=feeds[0], spec=spec)
    return Measurement(
        outputs=outputs,
        latency=latency,
        memory=memory,
        size_bytes=os.path.getsize(path),
        providers=session.get_providers(),
        onnxruntime=ort.__version__,
        device=describe_device(device_label),
        extra=extra,
    )


def _timed(
    session: ort.InferenceSession,
    feeds: list[dict[str, np.ndarray]],
    *,
    reference: Path | str | None,
    spec: MeasureSpec,
) -> tuple[list[LatencyStats], dict[str, Any]]:
    """Latency at each batch size of ``feeds`` (the first paired with ``reference`` when
    given), and ``extra``: ``measured_by``, ``paired``/``noisy`` and the window's ``load``."""
    extra: dict[str, Any] = {"measured_by": "local"}
    settings = spec.measure
    cpu = cpu_timed(spec)
    with LoadWatch(threshold=settings.busy_threshold) as watch:
        if reference is None:
            latency = [measure_latency(session, feed, settings, cpu=cpu) for feed in feeds]
        else:
            first, extra["paired"] = _paired(session, reference, feeds[0], spec)
            extra["noisy"] = extra["paired"]["spread"] > settings.noise_threshold
            rest = [measure_latency(session, f, settings, cpu=cpu) for f in feeds[1:]]
            latency = [first, *rest]
    assert watch.load is not None
    extra["load"] = watch.load.to_dict()
    return latency, extra


def _paired(
    session: ort.InferenceSession,
    reference: Path | str,
    feed: dict[str, np.ndarray],
    spec: MeasureSpec,
) -> tuple[LatencyStats, dict[str, Any]]:
    """The candidate's latency stats over its interleaved runs, and its paired record."""
    ref_session = create_session(reference, spec)
    ref_feed = {ref_session.get_inputs()[0].name: next(iter(feed.values()))}
    runners = {
        "candidate": make_runner(session, feed),
        "reference": make_runner(ref_session, ref_feed),
    }
    clock = "cpu" if cpu_timed(spec) else "wall"
    times, paired, _ = time_paired(
        runners, reference="reference", settings=spec.measure, clock=clock
    )
    batch = int(next(iter(feed.values())).shape[0])
    mine = times["candidate"]
    stats = summarize(
        np.concatenate(mine.wall), batch, np.concatenate(mine.cpu) if clock == "cpu" else None
    )
    return stats, paired["candidate"].to_dict()


def _kernels(path: Path | str, spec: MeasureSpec) -> dict[str, Any]:
    """The kernel report of ``path`` computed here; its optimized graph is not kept."""
    from search.measure.kernels import kernel_report

    with tempfile.TemporaryDirectory(prefix="search-kernels-") as tmp:
        report = kernel_report(path, spec, Path(tmp) / "model.opt.onnx")
    report.pop("optimized_graph", None)
    return report
