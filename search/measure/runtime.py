"""ONNX Runtime sessions on a profile's execution providers, with no silent fallback."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import onnxruntime as ort

from search.errors import ProviderError

_FIX = {
    "CUDAExecutionProvider": "install onnxruntime-gpu (pip install -e '.[cuda]') on a machine "
    "with an NVIDIA GPU",
    "TensorrtExecutionProvider": "install onnxruntime-gpu with TensorRT libraries on the target",
    "ACLExecutionProvider": "use an onnxruntime build with the Arm Compute Library",
    "XnnpackExecutionProvider": "use an onnxruntime build with XNNPACK",
}


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def check_providers(profile: Any, available: list[str] | None = None) -> None:
    """Raise :class:`ProviderError` unless every provider ``profile`` names is available."""
    available = available_providers() if available is None else available
    missing = [p for p in profile.provider_names if p not in available]
    if missing:
        fixes = "; ".join(dict.fromkeys(_FIX.get(p, f"install a build with {p}") for p in missing))
        raise ProviderError(
            f"hardware profile '{profile.name}' needs {', '.join(missing)}, but onnxruntime "
            f"{ort.__version__} here has only {', '.join(available)}: {fixes}, measure through "
            "the target's agent (--agent URL), or pick another profile with --hw"
        )


def session_options(threads: Any) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads.intra_op
    so.inter_op_num_threads = threads.inter_op
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


def create_session(path: Path | str, profile: Any) -> ort.InferenceSession:
    """A session on exactly the profile's providers; raise if ONNX Runtime dropped any."""
    check_providers(profile)
    providers = [(p.name, dict(p.options)) for p in profile.providers]
    session = ort.InferenceSession(
        str(path), sess_options=session_options(profile.threads), providers=providers
    )
    got = session.get_providers()
    dropped = [p for p in profile.provider_names if p not in got]
    if dropped:
        raise ProviderError(
            f"ONNX Runtime fell back from {', '.join(dropped)} to {', '.join(got)} for {path}; "
            "refusing to report these numbers as the profile's"
        )
    return session


def describe_device() -> str:
    """A one-line description of this machine: CPU model, core count, architecture."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.machine()}, {platform.system()}"
