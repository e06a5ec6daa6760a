"""What each layer group really ran as, read from ONNX Runtime's optimized graph.

A QDQ file says what *may* run in integer arithmetic; the plan says what was asked. Neither is
what ran: ONNX Runtime fuses DequantizeLinear -> Conv -> QuantizeLinear into an integer kernel
only where it has one (int4 weights run as float convs after DequantizeLinear), and nodes outside
every group follow the space's ``ungrouped`` setting whatever the plan says. The optimized graph
(``model.opt.onnx``, saved when the measured session is built) names the weight of each integer
kernel (``<weight>_quantized``), so every layer of the file gets the type it ran at, and every
group a label: ``int8`` when all its layers ran as integer kernels, ``float`` when none did,
``mixed (int8 x2, float x1)`` otherwise. Trial labels in the report come from here.

Example:
    >>> ran = layer_kernels(onnx.load("model.opt.onnx"), q.layer_types)
    >>> group_labels(ran, q.weight_groups)   # {"stem": "int8", "layer1": "float", ...}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

from search.core.ort_ops import INTEGER_WEIGHT_INPUT

if TYPE_CHECKING:
    import onnx

OUTSIDE_GROUPS = "(outside groups)"
_LAYOUT = ("Transpose", "Reshape", "ReorderInput", "Identity")
_INTEGER = ("int", "uint")


def _weight_source(name: str, producers: Mapping[str, onnx.NodeProto]) -> str:
    """The initializer an input comes from, through layout changes the optimizer inserts."""
    seen = 0
    while name in producers and seen < 8:
        node = producers[name]
        if node.op_type not in _LAYOUT or not node.input:
            break
        name, seen = node.input[0], seen + 1
    return name.removesuffix("_quantized")


def layer_kernels(optimized: onnx.ModelProto, stored: Mapping[str, str]) -> dict[str, str]:
    """Weight name -> what its layer ran at in ``optimized`` (a ModelProto of the optimized
    graph): the stored integer type where an integer kernel reads it, else ``float`` (or
    ``fp16`` for a weight stored in float16). ``stored`` is the file's weight -> stored type
    (:func:`search.compress.quantize.groups.layer_types`)."""
    producers = {o: n for n in optimized.graph.node for o in n.output}
    integer: set[str] = set()
    for node in optimized.graph.node:
        idx = INTEGER_WEIGHT_INPUT.get(node.op_type)
        if idx is not None and len(node.input) > idx:
            integer.add(_weight_source(node.input[idx], producers))
    ran: dict[str, str] = {}
    for weight, kind in stored.items():
        if weight in integer:
            ran[weight] = kind if kind.startswith(_INTEGER) else "int8"
        else:
            ran[weight] = "fp16" if kind == "fp16" else "float"
    return ran


def layer_kernels_reported(
    ran_weights: Mapping[str, str], stored: Mapping[str, str]
) -> dict[str, str]:
    """As :func:`layer_kernels`, from a provider's own per-layer report (weight -> ``integer``,
    ``float`` or ``fp16``; :func:`search.measure.kernels.kernel_report`'s ``ran_weights``) where
    no optimized graph is at hand (OpenVINO, QNN, a model measured on an agent). A weight the
    report does not name ran as it is stored in float (``float``, or ``fp16``)."""
    ran: dict[str, str] = {}
    for weight, kind in stored.items():
        got = ran_weights.get(weight)
        if got == "integer":
            ran[weight] = kind if kind.startswith(_INTEGER) else "int8"
        elif got in ("float", "fp16"):
            ran[weight] = got
        else:
            ran[weight] = "fp16" if kind == "fp16" else "float"
    return ran


def group_labels(
    ran: Mapping[str, str], weight_groups: Mapping[str, str | None]
) -> dict[str, str]:
    """Group -> what its layers ran at (see the module docstring); layers outside every group
    are reported under :data:`OUTSIDE_GROUPS`."""
    by_group: dict[str, Counter] = {}
    for weight, kind in ran.items():
        group = weight_groups.get(weight) or OUTSIDE_GROUPS
        by_group.setdefault(group, Counter())[kind] += 1
    labels = {}
    for group, counts in by_group.items():
        if len(counts) == 1:
            labels[group] = next(iter(counts))
        else:
            parts = ", ".join(f"{k} x{n}" for k, n in counts.most_common())
            labels[group] = f"mixed ({parts})"
    return labels
