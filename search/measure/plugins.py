"""Plugin execution providers: ONNX Runtime libraries registered at run time
(``onnxruntime.register_execution_provider_library``) rather than built into the wheel, such as
Qualcomm's QNN (``onnxruntime-qnn``)."""

from __future__ import annotations

import functools
import importlib
from typing import Any

import onnxruntime as ort

# Plugin execution providers: ONNX Runtime names a plugin by the name it is registered under, so
# this project registers each under a name of its own (a builtin name such as
# QNNExecutionProvider would make ``providers=`` pick the absent builtin and fall back to the CPU
# provider without a word). Name -> (module, function giving the library's path).
PLUGINS = {"QnnHtpExecutionProvider": ("onnxruntime_qnn", "get_library_path")}


@functools.cache
def register_plugins() -> tuple[str, ...]:
    """Register every plugin provider of :data:`PLUGINS` whose package is installed, once per
    process (a second registration under the same name raises); the names registered."""
    names = []
    for name, (module, getter) in PLUGINS.items():
        try:
            library = getattr(importlib.import_module(module), getter)()
        except ImportError:
            continue
        devices: list[Any] = getattr(ort, "get_ep_devices", list)()
        if not any(d.ep_name == name for d in devices):
            ort.register_execution_provider_library(name, library)
        names.append(name)
    return tuple(names)
