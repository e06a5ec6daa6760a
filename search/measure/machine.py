"""What a measurement runs on: the machine (:func:`describe_device`) and the ONNX Runtime build
and execution providers that ran it (:func:`runtime_info`).

Both are computed where the model runs, so a measurement through an agent describes the agent's
machine and runtime. Under qemu-user emulation ``/proc/cpuinfo`` describes the *host's* CPU
(qemu does not emulate it), so an aarch64 process that reads an x86 ``cpuinfo`` is emulated:
the description says so, with the CPU features the emulated core offers (from the auxiliary
vector, which qemu fills from ``QEMU_CPU``), and :func:`emulation` returns it for the record.
Emulated timings are not the target's latency.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return ""


def nvidia_smi(*args: str) -> str | None:
    """nvidia-smi's output for ``args``, or None where it is missing or fails."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        return subprocess.run(
            ["nvidia-smi", *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None


@functools.cache
def gpu_name() -> str:
    """The NVIDIA GPU's name and driver from nvidia-smi, or '' (none, or a Jetson without it)."""
    out = nvidia_smi("--query-gpu=name,driver_version", "--format=csv,noheader") or ""
    first = out.strip().splitlines()[:1]
    return f"GPU {first[0].strip()}" if first else ""


# Bits of AT_HWCAP / AT_HWCAP2 on aarch64 (Linux arch/arm64/include/uapi/asm/hwcap.h) that
# decide which ONNX Runtime (MLAS) kernels run: fp16 arithmetic, dot product, SVE, int8 matrix
# multiply, bfloat16.
_HWCAP = {"fphp": 9, "asimddp": 20, "sve": 22}
_HWCAP2 = {"sve2": 1, "i8mm": 13, "bf16": 14}
_AT_HWCAP, _AT_HWCAP2 = 16, 26


def arm_features() -> list[str]:
    """The aarch64 CPU features above that this process's core offers (``[]`` elsewhere)."""
    if platform.machine().lower() not in ("aarch64", "arm64"):
        return []
    try:
        import ctypes

        getauxval = ctypes.CDLL(None).getauxval
        getauxval.restype = ctypes.c_ulong
        hwcap, hwcap2 = getauxval(_AT_HWCAP), getauxval(_AT_HWCAP2)
    except (OSError, AttributeError):
        return []
    found = [n for n, bit in _HWCAP.items() if hwcap >> bit & 1]
    return found + [n for n, bit in _HWCAP2.items() if hwcap2 >> bit & 1]


def _cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        if line.lower().startswith(("model name", "hardware")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def emulation() -> str | None:
    """``"qemu-user (QEMU_CPU=...) on <host CPU>"`` when this aarch64 process runs emulated on
    an x86 host, else None. qemu-user passes the host's ``/proc/cpuinfo`` through: x86 vendor
    ids in it on an aarch64 process mean the CPU is emulated."""
    if platform.machine().lower() not in ("aarch64", "arm64"):
        return None
    cpuinfo = _read("/proc/cpuinfo")
    if not any(v in cpuinfo for v in ("GenuineIntel", "AuthenticAMD", "HygonGenuine")):
        return None
    cpu = os.environ.get("QEMU_CPU")
    return f"qemu-user{f' (QEMU_CPU={cpu})' if cpu else ''} on {_cpu_model(cpuinfo)}"


def describe_device(label: str = "") -> str:
    """A one-line description of this machine, the same for every measurement on it.

    CPU model, core count, architecture and OS; on aarch64 the CPU features that pick ONNX
    Runtime's kernels, and emulation (qemu-user) where the CPU is emulated; the board model where
    the device tree names one (a Jetson says "NVIDIA Jetson AGX Orin ..."); the NVIDIA GPU where
    nvidia-smi finds one; and a free-form ``label`` the agent's owner gave (power mode, cooling)
    that nothing can detect.
    """
    emulated = emulation()
    model = "emulated aarch64 CPU" if emulated else _cpu_model(_read("/proc/cpuinfo"))
    parts = [f"{model}, {os.cpu_count()} cores, {platform.machine()}, {platform.system()}"]
    features = arm_features()
    if features:
        parts.append(f"features {' '.join(features)}")
    if emulated:
        parts.append(f"EMULATED by {emulated}: timings are not this CPU's latency")
    board = _read("/proc/device-tree/model")
    if board:
        parts.append(board)
    l4t = _read("/etc/nv_tegra_release").splitlines()[:1]
    if l4t:
        parts.append(l4t[0].lstrip("# ").split(",")[0])
    gpu = gpu_name()
    if gpu:
        parts.append(gpu)
    if label:
        parts.append(label)
    return "; ".join(parts)


# Providers whose timings on x86-64 come from a simulator, not the device they stand for.
SIMULATED = {
    "QnnHtpExecutionProvider": "simulated: Qualcomm's HTP simulator (libQnnHtp.so) on x86-64",
}


def timing_of(provider: str) -> str:
    """``device`` where ``provider``'s timings are the latency of the machine that ran it;
    else why not (``emulated: ...``, ``simulated: ...``): such timings check the protocol and
    rank nothing."""
    emulated = emulation()
    if emulated:
        return f"emulated: {emulated}"
    if provider in SIMULATED and platform.machine().lower() in ("x86_64", "amd64"):
        return SIMULATED[provider]
    return "device"


@functools.cache
def runtime_info() -> dict[str, Any]:
    """The ONNX Runtime build measuring here, as JSON: ``onnxruntime`` (version), ``build``
    (the pip distribution that provides the module: ``onnxruntime``, ``onnxruntime-openvino``,
    ``onnxruntime-gpu``), ``plugins`` (registered plugin providers and their package versions),
    ``openvino`` (the OpenVINO release bundled with onnxruntime-openvino), ``emulated``
    (:func:`emulation`) and ``arch``."""
    from importlib import metadata

    import onnxruntime as ort

    from search.measure.plugins import PLUGINS, register_plugins

    build = (metadata.packages_distributions().get("onnxruntime") or ["onnxruntime"])[0]
    plugins = {}
    for name in register_plugins():
        module = PLUGINS[name][0]
        try:
            plugins[name] = metadata.version(module.replace("_", "-"))
        except metadata.PackageNotFoundError:
            plugins[name] = "?"
    info: dict[str, Any] = {
        "onnxruntime": ort.__version__,
        "build": build,
        "plugins": plugins,
        "arch": platform.machine(),
        "emulated": emulation(),
    }
    capi = Path(ort.__file__).parent / "capi"
    bundled = sorted(capi.glob("libopenvino.so.*.*"))  # libopenvino.so.2025.4.1, not .2541
    if bundled:
        info["openvino"] = bundled[-1].name.removeprefix("libopenvino.so.")
    return info
