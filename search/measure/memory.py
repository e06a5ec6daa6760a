"""Peak memory of inference, measured in a fresh child process.

The child imports onnxruntime, records its idle resident set, resets the kernel's peak counter
(``echo 5 > /proc/self/clear_refs``), builds the session, runs it and reads ``VmHWM``. The peak
above the idle process is what the model costs; ``ru_maxrss`` alone cannot be reset and would
include the interpreter and imports.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class MemoryStats:
    peak_mb: float  # resident set at its peak while building and running the session
    idle_mb: float  # resident set of the child with onnxruntime imported, before the session
    inference_mb: float  # peak_mb - idle_mb: what the model itself costs
    method: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child(args: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime as ort

    feed = {args["input_name"]: np.load(args["input_path"])}
    idle = _status_mb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        method = "VmHWM after clear_refs"
    except OSError:
        method = "VmHWM (peak not reset: includes imports)"
    so = ort.SessionOptions()
    so.intra_op_num_threads = args["intra_op"]
    so.inter_op_num_threads = args["inter_op"]
    so.log_severity_level = 3
    session = ort.InferenceSession(
        args["path"], sess_options=so, providers=[tuple(p) for p in args["providers"]]
    )
    for _ in range(args["runs"]):
        session.run(None, feed)
    peak = _status_mb("VmHWM")
    return {
        "peak_mb": peak,
        "idle_mb": idle,
        "inference_mb": max(0.0, peak - idle),
        "method": method,
        "providers": session.get_providers(),
    }


def measure_peak_memory(
    path: Path | str, *, feed: dict[str, np.ndarray], profile: Any, timeout: float = 300.0
) -> MemoryStats:
    """Peak resident memory of building and running ``path`` on the profile's providers."""
    (name, value), = feed.items()
    with tempfile.TemporaryDirectory() as tmp:
        input_path = Path(tmp) / "input.npy"
        np.save(input_path, value)
        args = {
            "path": str(path),
            "input_name": name,
            "input_path": str(input_path),
            "providers": [[p.name, dict(p.options)] for p in profile.providers],
            "intra_op": profile.threads.intra_op,
            "inter_op": profile.threads.inter_op,
            "runs": profile.measure.memory_runs,
        }
        proc = subprocess.run(
            [sys.executable, "-m", "search.measure.memory"],
            input=json.dumps(args),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"memory measurement failed: {tail[0]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return MemoryStats(
        peak_mb=out["peak_mb"],
        idle_mb=out["idle_mb"],
        inference_mb=out["inference_mb"],
        method=out["method"],
    )


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.stdin.read()))))
