"""What the agent's measuring child does: the same measurement a local study makes.

Each function returns the work as a closure over plain paths and the spec, to be called in the
bounded child (:func:`~search.measure.agent.sandbox.run_bounded`) with its scratch folder; it
returns JSON-ready data. A measurement's outputs go to ``outputs.npy`` in the scratch folder,
where the agent picks them up and stores them as a blob.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from search.measure.confirmation import time_files
from search.measure.measurement import measure_onnx, pack_outputs
from search.measure.spec import MeasureSpec

Work = Callable[[Path], dict[str, Any]]


def measure_work(paths: Mapping[str, Path], *, spec: MeasureSpec, label: str) -> Work:
    """``POST /v1/measure``: :func:`~search.measure.measurement.measure_onnx` of
    ``paths["model"]`` on ``eval_inputs`` and ``latency_input`` (paired with
    ``paths["reference"]`` when given); the summary with ``output_layout``, every output
    packed into one array in the scratch folder
    (:func:`~search.measure.measurement.pack_outputs`)."""

    def work(scratch: Path) -> dict[str, Any]:
        m = measure_onnx(
            paths["model"],
            spec=spec,
            eval_inputs=np.load(paths["eval_inputs"], allow_pickle=False),
            latency_input=np.load(paths["latency_input"], allow_pickle=False),
            device_label=label,
            reference=paths.get("reference"),
            kernels=True,  # the model runs here: so is what it ran as audited here
        )
        packed, layout = pack_outputs(m.outputs)  # every output in one blob, exactly
        np.save(scratch / "outputs.npy", packed, allow_pickle=False)
        return {**m.summary(), "output_layout": layout}

    return work


def confirm_work(
    paths: Mapping[str, Path],
    *,
    reference: Path,
    spec: MeasureSpec,
    latency_input: Path | None,
    label: str,
) -> Work:
    """``POST /v1/confirm``: :func:`~search.measure.confirmation.time_files` of ``paths``
    against ``reference``."""

    def work(scratch: Path) -> dict[str, Any]:
        latency = None if latency_input is None else np.load(latency_input, allow_pickle=False)
        return time_files(
            dict(paths),
            reference=reference,
            spec=spec,
            latency_input=latency,
            device_label=label,
        )

    return work
