"""ONNX Runtime sessions on a profile's execution providers, with no silent fallback.

:func:`create_session` is the one session factory: latency and outputs, the optimized graph that
kernel counts read, and the peak-memory child all build their sessions with it from one
:class:`~search.measure.spec.MeasureSpec`, so what is counted is what is measured.
"""

from __future__ import annotations

import difflib
import platform
from pathlib import Path
from typing import Any

import onnxruntime as ort

from search.errors import ProviderError

# Where they lived before machine.py: re-exported for the modules that import them from here.
from search.measure.machine import describe_device as describe_device
from search.measure.machine import gpu_name as gpu_name
from search.measure.machine import nvidia_smi as nvidia_smi
from search.measure.plugins import PLUGINS, register_plugins
from search.measure.spec import MeasureSpec, Threads

GPU_PROVIDERS = (
    "CUDAExecutionProvider",
    "TensorrtExecutionProvider",
    "NvTensorRTRTXExecutionProvider",
)

_FIX = {
    "CUDAExecutionProvider": "install onnxruntime-gpu (pip install -e '.[cuda]') on a machine "
    "with an NVIDIA GPU",
    "OpenVINOExecutionProvider": "make its runtime with ./setup.sh --target openvino (an agent "
    "elsewhere: start it with .runtimes/openvino/bin/python -m search agent)",
    "QnnHtpExecutionProvider": "make its runtime with ./setup.sh --target qnn (onnxruntime-qnn; "
    "an agent elsewhere: start it with .runtimes/qnn/bin/python -m search agent)",
    "TensorrtExecutionProvider": "install onnxruntime-gpu with TensorRT libraries on the target "
    "(on a Jetson: NVIDIA's JetPack onnxruntime-gpu wheel)",
    "ACLExecutionProvider": "use an onnxruntime build with the Arm Compute Library",
    "XnnpackExecutionProvider": "use an onnxruntime build with XNNPACK",
}

_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}


def normalize_arch(machine: str) -> str:
    """``platform.machine()`` spelled one way: ``x86_64`` or ``aarch64`` (others unchanged)."""
    m = machine.lower()
    return _ARCH_ALIASES.get(m, m)


def local_arch() -> str:
    return normalize_arch(platform.machine())


def available_providers() -> list[str]:
    """The providers of this onnxruntime, plugins included (:func:`register_plugins`)."""
    register_plugins()
    return list(ort.get_available_providers())


def requested_providers(
    spec: MeasureSpec, available: list[str]
) -> list[tuple[str, dict[str, Any]]]:
    """The spec's providers in priority order, minus optional ones this build lacks."""
    return [
        (p.name, dict(p.options)) for p in spec.providers if not p.optional or p.name in available
    ]


def check_providers(
    spec: MeasureSpec,
    available: list[str] | None = None,
    *,
    arch: str | None = None,
    where: str = "here",
    version: str | None = None,
) -> None:
    """Raise :class:`ProviderError` unless the target can run ``spec`` as it is written.

    Args:
        spec: What the hardware profile asks of the target.
        available: Providers of the onnxruntime that will measure; this process's by default.
        arch: CPU architecture of the machine that will measure; this machine's by default.
        where: Where that machine is, for the message ("here", "on the agent at URL").
        version: onnxruntime version there, for the message.
    """
    available = available_providers() if available is None else available
    arch = local_arch() if arch is None else normalize_arch(arch)
    version = version or ort.__version__
    if spec.arch and spec.arch != arch:
        raise ProviderError(
            f"hardware profile '{spec.name}' targets {spec.arch}, but the machine {where} is "
            f"{arch}: start the agent on the target (python -m search agent --host 0.0.0.0 "
            "--port 8765 with SEARCH_AGENT_TOKEN set) and pass --agent URL, or pick another "
            "profile with --hw"
        )
    missing = [p for p in spec.required if p not in available]
    if missing:
        _check_spelling(spec, missing, available)
        if "TensorrtExecutionProvider" in missing:  # its fix brings the CUDA provider too
            missing_fix = [p for p in missing if p != "CUDAExecutionProvider"]
        else:
            missing_fix = missing
        fixes = "; ".join(
            dict.fromkeys(_FIX.get(p, f"install a build with {p}") for p in missing_fix)
        )
        raise ProviderError(
            f"hardware profile '{spec.name}' needs {', '.join(missing)}, but onnxruntime "
            f"{version} {where} has only {', '.join(available)}: {fixes}, measure through "
            "the target's agent (--agent URL), or pick another profile with --hw"
        )


# Providers of earlier onnxruntime releases that this one no longer lists, still real names.
_RETIRED = frozenset(
    {
        "ACLExecutionProvider",
        "ArmNNExecutionProvider",
        "RknpuExecutionProvider",
        "SNPEExecutionProvider",
        "TvmExecutionProvider",
    }
)


def _check_spelling(spec: MeasureSpec, missing: list[str], available: list[str]) -> None:
    """A missing provider whose name is close to a known one is a typo, not an install to fix.
    (Names this onnxruntime does not know may still be real: other builds have other ones.)"""
    known = sorted(set(ort.get_all_providers()) | set(available) | _RETIRED | set(PLUGINS))
    for name in missing:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if name not in known and close:
            raise ProviderError(
                f"hardware profile '{spec.name}' names {name}, which no onnxruntime build "
                f"knows; did you mean {close[0]}?"
            )


def session_options(
    threads: Threads,
    config: dict[str, str] | None = None,
    free_dimensions: dict[str, int] | None = None,
) -> ort.SessionOptions:
    """Fixed thread counts, sequential execution, full graph optimization, quiet logs, the
    profile's session config entries and its fixed dimensions."""
    so = ort.SessionOptions()
    for name, size in (free_dimensions or {}).items():
        so.add_free_dimension_override_by_name(name, size)
    so.intra_op_num_threads = threads.intra_op
    so.inter_op_num_threads = threads.inter_op
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    for key, value in (config or {}).items():
        so.add_session_config_entry(key, str(value))
    return so


def create_session(
    path: Path | str, spec: MeasureSpec, *, optimized_path: Path | str | None = None
) -> ort.InferenceSession:
    """A session on exactly the spec's providers; raise if ONNX Runtime dropped any.

    With ``optimized_path`` ONNX Runtime also saves the graph it optimized for those providers
    there (what really runs: fused integer kernels, layout changes).

    Raises:
        ProviderError: a required provider is missing, or the session fell back from one.
    """
    available = available_providers()
    check_providers(spec, available)
    wanted = requested_providers(spec, available)  # optional providers this build lacks: out
    options = session_options(spec.threads, spec.session_config, spec.free_dimensions)
    if optimized_path is not None:
        Path(optimized_path).parent.mkdir(parents=True, exist_ok=True)
        options.optimized_model_filepath = str(optimized_path)
    session = ort.InferenceSession(str(path), sess_options=options, providers=wanted)
    check_fallback(session.get_providers(), [name for name, _ in wanted], path)
    return session


def check_fallback(got: list[str], wanted: list[str], path: Path | str) -> None:
    """Raise when a session runs without a provider it was asked for (a silent fallback)."""
    dropped = [p for p in wanted if p not in got]
    if dropped:
        raise ProviderError(
            f"ONNX Runtime fell back from {', '.join(dropped)} to {', '.join(got)} for "
            f"{Path(path).name}; refusing to report these numbers as the profile's"
        )
