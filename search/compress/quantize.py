"""Per-layer mixed-precision quantization with ONNX Runtime's own static QDQ quantizer.

Calibration and quantization are separate calls, so one calibration (activation ranges of one
float model, for one method and one set of inputs) is reused by every precision variant of that
model: the trial's own plan, the sensitivity pass and the uniform-int8 reference.

Layers are named by their PyTorch module path, which the dynamo exporter keeps (weights are
``layers.0.conv1.weight``; every node carries ``pkg.torch.onnx.name_scopes`` metadata). A group is
a list of patterns; a pattern matches a module and everything under it (``layers.0`` matches
``layers.0.conv1``) and may use shell wildcards. The first group that matches a node owns it.

Example:
    >>> space = QuantizeSpace(groups={"stem": ["stem"], "rest": ["layers", "fc"]})
    >>> space.choices(PrecisionSupport())["precision_stem"]
    ['float', 'int8']
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from search.errors import ConfigError

Precision = Literal["float", "int8", "int4", "int16"]
Activations = Literal["uint8", "int8", "uint16", "int16"]
Signedness = Literal["signed", "unsigned"]
CalibMethod = Literal["minmax", "entropy", "percentile"]

# Ops whose second input is a weight that gets a per-layer type; weightless ops follow their group.
WEIGHTED_OPS = {"Conv": 0, "ConvTranspose": 1, "Gemm": None, "MatMul": 1}
_SCOPES = "pkg.torch.onnx.name_scopes"


class _Strict(BaseModel):
    # The same rules as search.config._Strict; declared here so config.py can import this module
    # without an import cycle.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class PrecisionSupport(_Strict):
    """What a profile's execution provider runs well; the search only offers these."""

    layer: list[Precision] = Field(["float", "int8"], min_length=1)
    activations: list[Activations] = Field(["uint8"], min_length=1)
    weights: list[Signedness] = Field(["signed"], min_length=1)
    calibration: list[CalibMethod] = Field(["minmax", "entropy", "percentile"], min_length=1)


class QuantizeSpace(_Strict):
    """Searched per-layer precision: groups of layers, their choices, calibration and signedness.

    Attributes:
        groups: Group name -> module patterns. Each group is one searched dimension; the default
            one group keeps a model of unknown layout to a single uniform choice.
        precisions: Choices per group; ``int4``/``int16`` quantize weights to that width with
            activations at ``activations``' type; ``float`` leaves the layer unquantized.
        calibration: Calibration methods to search (ONNX Runtime's MinMax, Entropy, Percentile).
        activations: Activation types to search (signedness and 8/16 bits).
        weights: Weight signedness to search.
        ungrouped: What happens to nodes no group matches when anything is quantized.
        calibration_samples: Calibration inputs taken from the task's calibration split.
        sensitivity: Run the one-off per-group sensitivity pass that seeds the search.
        tolerance: Accuracy drop a group may show in the sensitivity pass and still be quantized
            in the seeded trial.
    """

    groups: dict[str, list[str]] = {"all": ["*"]}
    precisions: list[Precision] = Field(["float", "int8"], min_length=1)
    calibration: list[CalibMethod] = Field(["minmax"], min_length=1)
    activations: list[Activations] = Field(["uint8"], min_length=1)
    weights: list[Signedness] = Field(["signed"], min_length=1)
    ungrouped: Literal["quantize", "float"] = "quantize"
    calibration_samples: int = Field(128, ge=1)
    sensitivity: bool = True
    tolerance: float = Field(0.01, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> QuantizeSpace:
        for group, patterns in self.groups.items():
            if not patterns:
                raise ValueError(f"group {group!r} needs at least one layer name pattern")
        if "int8" in self.activations and "signed" not in self.weights:
            raise ValueError(
                "int8 activations need signed weights (ONNX Runtime has no int8 x uint8 "
                "kernels); add signed to weights"
            )
        return self

    def choices(self, support: PrecisionSupport | None) -> dict[str, list[str]]:
        """Optuna parameter name -> the choices left after dropping what the profile cannot run.

        Raises:
            ConfigError: when nothing the space asks for is supported for some parameter.
        """
        support = support or PrecisionSupport(
            layer=["float", "int8", "int4", "int16"],
            activations=["uint8", "int8", "uint16", "int16"],
            weights=["signed", "unsigned"],
        )
        wanted: dict[str, tuple[list[str], list[str], str]] = {
            "calibration": (list(self.calibration), list(support.calibration), "calibration"),
            "activations": (list(self.activations), list(support.activations), "activations"),
            "weights": (list(self.weights), list(support.weights), "weights"),
        }
        for group in self.groups:
            wanted[f"precision_{group}"] = (list(self.precisions), list(support.layer), "layer")
        out: dict[str, list[str]] = {}
        for name, (asked, allowed, key) in wanted.items():
            kept = [c for c in asked if c in allowed]
            if not kept:
                raise ConfigError(
                    f"quantize: {name} choices {asked} are all unsupported by the hardware "
                    f"profile (precisions.{key}: {allowed}); add one of those to the space"
                )
            out[name] = kept
        return out


def check_combination(activations: str, weights: str) -> None:
    """Raise :class:`ConfigError` for a type pair ONNX Runtime's quantizer refuses."""
    if activations == "int8" and weights == "unsigned":
        raise ConfigError(
            "int8 activations with unsigned weights are not supported by ONNX Runtime; "
            "use uint8 activations or signed weights"
        )


# ------------------------------------------------------------------------------ layer mapping


def _matches(key: str, pattern: str) -> bool:
    return fnmatchcase(key, pattern) or fnmatchcase(key, pattern + ".*")


def weight_name(node: Any, initializers: set[str]) -> str | None:
    """The initializer holding ``node``'s weight, or None for weightless nodes."""
    if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in initializers:
        return node.input[1]
    return None


def _keys(node: Any, initializers: set[str]) -> list[str]:
    """Module paths a node belongs to: its weight's module first, then its name scopes."""
    keys = []
    weight = weight_name(node, initializers)
    if weight is not None:
        keys.append(weight.rsplit(".", 1)[0] if "." in weight else weight)
    for prop in node.metadata_props:
        if prop.key == _SCOPES:
            # The last scope is the op itself (``relu_1``), the empty one is the root module.
            scopes = [s for s in json.loads(prop.value.replace("'", '"'))[:-1] if s]
            keys.extend(reversed(scopes))
    return keys or [node.name]


def assign_groups(model: Any, groups: Mapping[str, list[str]]) -> dict[str, str | None]:
    """Node name -> the first group whose patterns match it (None when none does)."""
    inits = {i.name for i in model.graph.initializer}
    out: dict[str, str | None] = {}
    for node in model.graph.node:
        keys = _keys(node, inits)
        out[node.name] = next(
            (g for g, pats in groups.items() if any(_matches(k, p) for k in keys for p in pats)),
            None,
        )
    return out


# -------------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """Activation ranges of one pre-processed float model for one method and one input set."""

    model: Path  # the float model after quant_pre_process; every variant quantizes this file
    ranges: Path  # ONNX Runtime's calibration cache (TensorsData as JSON)
    method: CalibMethod
    key: str
    computed: bool  # False when the ranges came from the cache


_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


class _Reader:
    """ONNX Runtime CalibrationDataReader over a numpy batch, in fixed-size chunks."""

    def __init__(self, name: str, inputs: np.ndarray, batch: int = 32) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(
            {name: inputs[i : i + batch]} for i in range(0, len(inputs), batch)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def calibrate(
    onnx_path: Path | str, inputs: np.ndarray, *, method: CalibMethod, cache_dir: Path
) -> Calibration:
    """Pre-process ``onnx_path`` and compute its activation ranges, or load them from the cache.

    The cache key is the hash of the float model, the calibration inputs and the method, so the
    ranges are computed once per float model and reused by every precision variant of it.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, create_calibrator, quant_pre_process
    from onnxruntime.quantization.calibrate import save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    if method not in _METHODS:
        raise ConfigError(f"unknown calibration method {method!r}: use one of {list(_METHODS)}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    model_key = _digest(Path(onnx_path).read_bytes())
    pre = cache_dir / f"{model_key}.pre.onnx"
    if not pre.is_file():
        # Shape inference and graph clean-up that ONNX Runtime's quantizer expects; it keeps
        # opset 21 (checked in tests), so int4 and int8 weights mix in standard Q/DQ nodes.
        quant_pre_process(str(onnx_path), str(pre))
    key = _digest(pre.read_bytes(), inputs.tobytes(), str(inputs.shape).encode(), method.encode())
    ranges = cache_dir / f"{key}.{method}.calib.json"
    if ranges.is_file():
        return Calibration(model=pre, ranges=ranges, method=method, key=key, computed=False)
    input_name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="calib.") as tmp:
        calibrator = create_calibrator(
            pre,
            list(set(QLinearOpsRegistry) | set(QDQRegistry)),  # what quantize_static calibrates
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=getattr(CalibrationMethod, _METHODS[method]),
        )
        # The histogram calibrators print progress to stdout; keep the study's console clean.
        with contextlib.redirect_stdout(io.StringIO()):
            calibrator.collect_data(_Reader(input_name, inputs))
            save_tensors_data(calibrator.compute_data(), ranges)
        del calibrator
    return Calibration(model=pre, ranges=ranges, method=method, key=key, computed=True)


# ------------------------------------------------------------------------------- quantization


@dataclass(frozen=True)
class QuantizeResult:
    """The quantized file and the type each weighted layer really carries in it."""

    path: Path
    layer_types: dict[str, str]  # weight name -> float / int8 / uint8 / int4 / int16 ...
    groups: dict[str, str | None]  # node name -> group
    excluded: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "layer_types": self.layer_types,
            "excluded_nodes": len(self.excluded),
        }


def _qtype(bits: str, signed: bool) -> Any:
    from onnxruntime.quantization import QuantType

    return getattr(QuantType, f"Q{'' if signed else 'U'}Int{bits}")


def _weight_axis(node: Any) -> int:
    axis = WEIGHTED_OPS[node.op_type]
    if axis is not None:
        return axis
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return 0 if trans_b else 1


def is_quantized(plan: Mapping[str, str]) -> bool:
    """Whether any group of ``plan`` asks for a quantized precision."""
    return any(p != "float" for p in plan.values())


def quantize(
    calibration: Calibration,
    out_path: Path | str,
    *,
    plan: Mapping[str, str],
    groups: Mapping[str, list[str]],
    activations: Activations = "uint8",
    weights: Signedness = "signed",
    ungrouped: Literal["quantize", "float"] = "quantize",
) -> QuantizeResult:
    """Quantize ``calibration.model`` to ``out_path`` (static QDQ, per-channel weights).

    ``plan`` maps each group to a precision: ``float`` nodes are excluded from quantization,
    ``int4``/``int16`` set the group's weights through ONNX Runtime's tensor overrides, ``int8``
    uses the default 8-bit weights. Calibration ranges come from ``calibration``; this call never
    runs calibration itself (it passes no data reader).
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, quantize_static

    unknown = set(plan) - set(groups)
    if unknown:
        raise ConfigError(f"precision plan names unknown groups {sorted(unknown)}")
    signed = weights == "signed"
    model = onnx.load(str(calibration.model))
    inits = {i.name for i in model.graph.initializer}
    owner = assign_groups(model, groups)
    excluded, overrides = [], {}
    for node in model.graph.node:
        group = owner[node.name]
        precision = (
            plan.get(group, "float") if group else ("int8" if ungrouped == "quantize" else "float")
        )
        if precision == "float":
            if not node.name:
                raise ConfigError(f"an unnamed {node.op_type} node cannot be left float")
            excluded.append(node.name)
            continue
        weight = weight_name(node, inits)
        if weight is not None and precision in ("int4", "int16"):
            qtype = _qtype(precision.removeprefix("int"), signed)
            overrides[weight] = [{"quant_type": qtype, "axis": _weight_axis(node)}]
    quantize_static(
        str(calibration.model),
        str(out_path),
        calibration_data_reader=None,
        calibration_cache_path=str(calibration.ranges),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=_qtype(
            activations.lstrip("u").removeprefix("int"), not activations.startswith("u")
        ),
        weight_type=_qtype("8", signed),
        calibrate_method=_calib_enum(calibration.method),
        nodes_to_exclude=excluded,
        extra_options={"TensorQuantOverrides": overrides} if overrides else {},
    )
    q = onnx.load(str(out_path))
    return QuantizeResult(
        path=Path(out_path), layer_types=layer_types(q), groups=owner, excluded=excluded
    )


def _calib_enum(method: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return getattr(CalibrationMethod, _METHODS[method])


def layer_types(model: Any) -> dict[str, str]:
    """Weight name -> the element type its layer computes with in ``model`` (a QDQ graph).

    A weight fed to its op directly is ``float``; one fed through DequantizeLinear is the type of
    the stored integer initializer (``int8``, ``int4``, ...).
    """
    import onnx

    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    out: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        src = node.input[1]
        if src in inits:
            out[src] = onnx.helper.tensor_dtype_to_np_dtype(inits[src].data_type).name
            out[src] = "float" if out[src].startswith("float") else out[src]
            continue
        dq = producers.get(src)
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits:
            name = dq.input[0].removesuffix("_quantized")
            dtype = inits[dq.input[0]].data_type
            out[name] = onnx.TensorProto.DataType.Name(dtype).lower()
    return out
