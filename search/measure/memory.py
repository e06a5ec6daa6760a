"""Peak memory of inference, measured in a fresh child process.

The child imports onnxruntime, records its idle resident set, resets the kernel's peak counter
(``echo 5 > /proc/self/clear_refs``), builds the session with the one session factory
(:func:`search.measure.runtime.create_session`, from the spec the parent sends as JSON), runs it
and reads ``VmHWM``. The peak
above the idle process is what the model costs; ``ru_maxrss`` alone cannot be reset and would
include the interpreter and imports.

On CUDA and TensorRT the child also reports device memory: the drop in free device memory
(``cudaMemGetInfo`` through ctypes, no extra package) from before the session to after its
runs. ONNX Runtime's arena does not shrink, so that drop is the session's peak. Where libcudart
cannot be loaded, nvidia-smi's per-process figure is used (it includes the CUDA context). These
GPU paths are written against the CUDA runtime API but have not run on a GPU here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search.measure.runtime import (
    GPU_PROVIDERS,
    available_providers,
    create_session,
    nvidia_smi,
    requested_providers,
)
from search.measure.spec import MeasureSpec

if TYPE_CHECKING:
    import ctypes


@dataclass(frozen=True)
class MemoryStats:
    peak_mb: float  # resident set at its peak while building and running the session
    idle_mb: float  # resident set of the child with onnxruntime imported, before the session
    inference_mb: float  # peak_mb - idle_mb: what the model itself costs
    method: str
    device_mb: float | None = None  # device memory the session holds on CUDA/TensorRT
    device_method: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


_CUDART = ("libcudart.so", "libcudart.so.12", "libcudart.so.13", "libcudart.so.11.0")


def _cudart() -> ctypes.CDLL | None:
    import ctypes

    for name in _CUDART:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    try:  # the pip wheels of onnxruntime-gpu bring libcudart in nvidia/cuda_runtime/lib
        import nvidia.cuda_runtime as cr

        for lib in sorted(Path(next(iter(cr.__path__))).glob("lib/libcudart.so*")):
            return ctypes.CDLL(str(lib))
    except (ImportError, OSError, StopIteration):
        pass
    return None


def _cuda_free_mb(lib: ctypes.CDLL, device_id: int) -> float | None:
    import ctypes

    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    if lib.cudaSetDevice(device_id) != 0 or lib.cudaFree(None) != 0:  # cudaFree(0) makes a context
        return None
    if lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) != 0:
        return None
    return free.value / 2**20


def _smi_process_mb() -> float | None:
    out = nvidia_smi("--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits")
    if out is None:
        return None
    for line in out.splitlines():
        pid, _, used = line.partition(",")
        if pid.strip() == str(os.getpid()):
            return float(used)
    return None


def _child(args: dict[str, Any]) -> dict[str, Any]:
    spec = MeasureSpec.from_json(args["spec"])
    feed = {args["input_name"]: np.load(args["input_path"], allow_pickle=False)}
    first, options = requested_providers(spec, available_providers())[0]
    gpu = first in GPU_PROVIDERS
    lib = _cudart() if gpu else None
    device_id = int(options.get("device_id", 0)) if gpu else 0
    free_before = _cuda_free_mb(lib, device_id) if lib is not None else None
    idle = _status_mb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        method = "VmHWM after clear_refs"
    except OSError:
        method = "VmHWM (peak not reset: includes imports)"
    session = create_session(args["path"], spec)
    for _ in range(spec.measure.memory_runs):
        session.run(None, feed)
    peak = _status_mb("VmHWM")
    device_mb, device_method = None, ""
    if free_before is not None and lib is not None:  # lib is set when free_before is
        free_after = _cuda_free_mb(lib, device_id)
        if free_after is not None:
            device_mb, device_method = max(0.0, free_before - free_after), "cudaMemGetInfo drop"
    if gpu and device_mb is None:
        device_mb = _smi_process_mb()
        device_method = "nvidia-smi per process (includes CUDA context)" if device_mb else ""
    return {
        "peak_mb": peak,
        "idle_mb": idle,
        "inference_mb": max(0.0, peak - idle),
        "method": method,
        "device_mb": device_mb,
        "device_method": device_method,
        "providers": session.get_providers(),
    }


def measure_peak_memory(
    path: Path | str, *, feed: dict[str, np.ndarray], spec: MeasureSpec, timeout: float = 300.0
) -> MemoryStats:
    """Peak resident memory of building and running ``path`` as ``spec`` says, ``memory_runs``
    times on ``feed``.

    Runs in a fresh child process so nothing this process allocated counts; on CUDA/TensorRT
    the device memory the session holds is reported too (``device_mb``).

    Raises:
        RuntimeError: the child failed (its last line of stderr says why).
    """
    ((name, value),) = feed.items()
    with tempfile.TemporaryDirectory() as tmp:
        input_path = Path(tmp) / "input.npy"
        np.save(input_path, value)
        args = {
            "path": str(path),
            "input_name": name,
            "input_path": str(input_path),
            "spec": spec.to_json(),
        }
        proc = subprocess.run(
            [sys.executable, "-m", "search.measure.memory"],
            input=json.dumps(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=child_env(),
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
        device_mb=out["device_mb"],
        device_method=out["device_method"],
    )


def child_env() -> dict[str, str]:
    """This process's environment, with this ``search`` package first on the child's path: the
    child must run the same code, whatever its working directory or installed copy."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, path) if p)}


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.stdin.read()))))
