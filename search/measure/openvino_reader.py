"""Read what OpenVINO compiled, in a process of its own: ``python openvino_reader.py FILE.bin``.

Run as a script by path, never imported by the package: it must not import onnxruntime. The
``openvino`` wheel and the OpenVINO runtime bundled in ``onnxruntime-openvino`` both ship
``libopenvino.so.2541`` built against different C++ ABIs; whichever a process loads first wins
and the other fails (``undefined symbol: _ZN2ov3Any4Base9to_string...``). Worse, with
``openvino`` loaded first the OpenVINO execution provider fails to load and a session without
``session.disable_cpu_ep_fallback`` runs on the CPU provider. So the measuring process exports the
EP's compiled partitions (an EPContext model, :mod:`search.measure.openvino_audit`) and this
child reads them with ``openvino.Core().import_model`` (the release bundled with the EP, pinned
by ``setup.sh --target openvino``) and prints one JSON line: per partition, every runtime op's
``layerType``, ``runtimePrecision``, ``primitiveType`` and ``originalLayersNames``.

The container (``<model>_ctx_OpenVINOExecutionProvider.bin``, magic ``OVEP_BIN``, written by
onnxruntime-openvino 1.24): a header, then a BSON document
``{blob_metadata_map: {<partition>: {data_offset, size}}, producer, ...}``; each partition's
compiled blob (what ``CompiledModel.export_model`` writes) lies at
``[data_offset, data_offset + size)``. The layout was read from the files the EP writes
(research notes of this project); a file in another layout is refused with a message.
"""

from __future__ import annotations

import json
import struct
import sys
from typing import Any

MAGIC = b"OVEP_BIN"
_SKIP = {"Input", "Output", "Const", "Parameter", "Result"}


def _bson(buf: bytes, i: int) -> dict[str, Any]:
    """The BSON document at ``buf[i:]`` (the element types the container uses)."""
    (size,) = struct.unpack_from("<i", buf, i)
    end, i = i + size - 1, i + 4
    out: dict[str, Any] = {}
    while i < end:
        kind = buf[i]
        i += 1
        j = buf.index(b"\0", i)
        key = buf[i:j].decode()
        i = j + 1
        if kind in (0x03, 0x04):  # document, array
            (n,) = struct.unpack_from("<i", buf, i)
            out[key] = _bson(buf, i)
            i += n
        elif kind == 0x02:  # string
            (n,) = struct.unpack_from("<i", buf, i)
            out[key] = buf[i + 4 : i + 3 + n].decode()
            i += 4 + n
        elif kind == 0x10:  # int32
            (out[key],) = struct.unpack_from("<i", buf, i)
            i += 4
        elif kind in (0x11, 0x12):  # timestamp, int64
            (out[key],) = struct.unpack_from("<q", buf, i)
            i += 8
        elif kind == 0x08:  # bool
            out[key] = bool(buf[i])
            i += 1
        elif kind == 0x01:  # double
            (out[key],) = struct.unpack_from("<d", buf, i)
            i += 8
        else:
            raise ValueError(f"BSON element type {kind:#x} is not one the container uses")
    return out


def read_container(path: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """``(metadata, {partition: compiled blob})`` of an ``OVEP_BIN`` file.

    Raises:
        ValueError: not an ``OVEP_BIN`` container, or one in another layout.
    """
    with open(path, "rb") as f:
        buf = f.read()
    if buf[:8] != MAGIC:
        raise ValueError(f"{path} is not an OVEP_BIN container")
    at = buf.find(b"\x03blob_metadata_map")
    if at < 4:
        raise ValueError(f"{path}: no blob_metadata_map (another onnxruntime-openvino layout?)")
    meta = _bson(buf, at - 4)  # the document starts 4 bytes (its size) before its first element
    blobs = {
        name: buf[v["data_offset"] : v["data_offset"] + v["size"]]
        for name, v in meta["blob_metadata_map"].items()
    }
    return meta, blobs


def runtime_layers(path: str) -> dict[str, Any]:
    """Every compiled op of every partition in ``path``, as OpenVINO's runtime model says."""
    import openvino as ov

    meta, blobs = read_container(path)
    core = ov.Core()
    layers = []
    for partition, blob in blobs.items():
        runtime = core.import_model(blob, "CPU").get_runtime_model()
        for op in runtime.get_ordered_ops():
            info = op.get_rt_info()

            def get(key: str, info: Any = info) -> str:
                return str(info[key].astype(str)) if key in info else ""

            kind = get("layerType")
            if kind in _SKIP:
                continue
            layers.append(
                {
                    "name": op.get_friendly_name(),
                    "type": kind,
                    "precision": get("runtimePrecision"),
                    "primitive": get("primitiveType"),
                    "original": [t for t in get("originalLayersNames").split(",") if t],
                    "partition": partition,
                }
            )
    return {
        "openvino": ov.get_version(),
        "producer": meta.get("producer"),
        "partitions": len(blobs),
        "layers": layers,
    }


if __name__ == "__main__":
    print(json.dumps(runtime_layers(sys.argv[1])))
