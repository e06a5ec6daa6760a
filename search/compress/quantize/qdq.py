"""Per-layer mixed-precision quantization with ONNX Runtime's own static QDQ quantizer.

Each layer group (:mod:`search.compress.quantize.groups`) gets a precision: float, fp16
(:mod:`search.compress.quantize.fp16`), or an integer type quantized by ``quantize_static`` from
one cached calibration of the float model (:mod:`search.compress.quantize.calibration`). The step
declares its own space section (:class:`QuantizeSpace`) and the part of a trial's config it runs
from (:class:`QuantizeConfig`).

Example:
    >>> space = QuantizeSpace(groups={"stem": ["stem"], "rest": ["layers", "fc"]})
    >>> space.choices(PrecisionSupport())["precision_stem"]
    ['float', 'int8']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import Field, model_validator

from search.compress.quantize.calibration import (
    METHODS,
    CalibMethod,
    Calibration,
    calib_enum,
    quiet_logging,
)
from search.compress.quantize.encoding import (
    ORDINAL_PARAM,
    Encoding,
    lowest_precision,
    ordinal_plan,
)
from search.compress.quantize.groups import assign_groups, layer_types, name_nodes
from search.compress.quantize.nodes import node_plan, qtype, weight_groups
from search.core.schema import Strict
from search.errors import ConfigError

if TYPE_CHECKING:
    import onnx
    import optuna

Precision = Literal["float", "fp16", "int8", "int4", "int16"]
# Precisions ONNX Runtime's quantizer makes (they need calibration); fp16 is a type conversion.
INTEGER_PRECISIONS = ("int8", "int4", "int16")
Activations = Literal["uint8", "int8", "uint16", "int16"]
Signedness = Literal["signed", "unsigned"]

PAIR_RULE = "int8 activations need signed weights (ONNX Runtime has no int8 x uint8 kernels)"


def pair_supported(activations: str, weights: str) -> bool:
    """Whether ONNX Runtime's quantizer and kernels take this activation/weight type pair.

    The one home of :data:`PAIR_RULE`: space validation, the profile's menu, sampling and a
    trial's config all ask here.
    """
    return not (activations == "int8" and weights == "unsigned")


class PrecisionSupport(Strict):
    """What a profile's execution provider runs well; the search only offers these."""

    layer: list[Precision] = Field(["float", "int8"], min_length=1)
    activations: list[Activations] = Field(["uint8"], min_length=1)
    weights: list[Signedness] = Field(["signed"], min_length=1)
    calibration: list[CalibMethod] = Field(["minmax", "entropy", "percentile"], min_length=1)


class QuantizeSpace(Strict):
    """Searched per-layer precision: groups of layers, their choices, calibration and signedness.

    Attributes:
        groups: Group name -> module patterns. Each group is one searched dimension; the default
            one group keeps a model of unknown layout to a single uniform choice.
        precisions: Choices per group; ``int4``/``int16`` quantize weights to that width with
            activations at ``activations``' type; ``fp16`` stores and runs the group in float16
            (no calibration); ``float`` leaves the layer unquantized.
        calibration: Calibration methods to search (ONNX Runtime's MinMax, Entropy, Percentile).
        activations: Activation types to search (signedness and 8/16 bits).
        weights: Weight signedness to search.
        unmatched_groups: What a group that matches no layer of the model means: ``error`` (one
            line before the study, naming the pattern), or ``derive``: when not every group
            matches, precision groups are derived from the model's own structure instead
            (:mod:`search.compress.quantize.derive_groups`; the default space's groups are the
            digits ResNet's, so any other model gets its own).
        derived_groups: How many groups to derive (stem and classifier apart, the rest
            balanced by MACs).
        ungrouped: What happens to nodes no group matches when anything is quantized.
        calibration_samples: Calibration inputs taken from the task's calibration split.
        sensitivity: Run the one-off per-group sensitivity pass that seeds the search.
        tolerance: Accuracy drop a group may show in the sensitivity pass and still be quantized
            in the seeded trial.
        encoding: ``categorical`` or ``ordinal`` plan parameters (:mod:`.encoding`).
    """

    groups: dict[str, list[str]] = {"all": ["*"]}
    precisions: list[Precision] = Field(["float", "int8"], min_length=1)
    calibration: list[CalibMethod] = Field(["minmax"], min_length=1)
    activations: list[Activations] = Field(["uint8"], min_length=1)
    weights: list[Signedness] = Field(["signed"], min_length=1)
    unmatched_groups: Literal["error", "derive"] = "error"
    derived_groups: int = Field(5, ge=1, le=32)
    ungrouped: Literal["quantize", "float"] = "quantize"
    calibration_samples: int = Field(128, ge=1)
    sensitivity: bool = True
    tolerance: float = Field(0.01, ge=0.0, le=1.0)
    encoding: Encoding = "categorical"

    @model_validator(mode="after")
    def _check(self) -> QuantizeSpace:
        if not self.groups:
            raise ValueError(
                "groups is empty, so no layer would ever be quantized; name at least one group "
                "(all: ['*'] is one choice for every layer), or search precisions: [float]"
            )
        for group, patterns in self.groups.items():
            if not patterns:
                raise ValueError(f"group {group!r} needs at least one layer name pattern")
        if not all(any(pair_supported(a, w) for w in self.weights) for a in self.activations):
            raise ValueError(f"{PAIR_RULE}; add signed to weights")
        return self

    def hand_pipeline(self, choices: Mapping[str, list[str]] | None) -> dict[str, str]:
        """The warm start's calibration and activations: MinMax and unsigned 8-bit, where the
        profile leaves them among several ``choices`` (the plan itself is the sensitivity
        pass's seed)."""
        if choices is None:
            return {}
        out: dict[str, str] = {}
        for name, value in (("calibration", "minmax"), ("activations", "uint8")):
            if len(choices.get(name, [])) > 1 and value in choices[name]:
                out[name] = value
        return out

    def choices(self, support: PrecisionSupport | None) -> dict[str, list[str]]:
        """Optuna parameter name -> the choices left after dropping what the profile cannot run.

        Raises:
            ConfigError: when nothing the space asks for is supported for some parameter.
        """
        support = support or PrecisionSupport(
            layer=list(get_args(Precision)),
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
        # An activation type no weight choice pairs with is off the menu (a profile that
        # allows int8 activations but only unsigned weights).
        out["activations"] = [
            a for a in out["activations"] if any(pair_supported(a, w) for w in out["weights"])
        ]
        if not out["activations"]:
            raise ConfigError(
                f"quantize: {PAIR_RULE}, but the space and the hardware profile leave only "
                "unsigned ones; add uint8 to activations or signed to weights"
            )
        return out

    def sample(
        self,
        trial: optuna.trial.BaseTrial,  # plans samples it with a FixedTrial
        support: PrecisionSupport | None = None,
        *,
        order: Sequence[str] | None = None,
    ) -> QuantizeConfig:
        """This trial's plan over what ``support`` (the profile's) runs: Optuna parameters
        ``calibration``, ``activations``, ``weights``, and ``precision_<group>`` (categorical)
        or ``quantized_groups`` (ordinal; ``order``: the sensitivity order, most sensitive
        first); a single choice is no parameter.

        Raises:
            ConfigError: when nothing the space asks for is supported for some parameter.
        """
        ordinal = self.encoding == "ordinal"
        picked: dict[str, str] = {}
        for name, choices in self.choices(support).items():
            if name == "weights":
                choices = [w for w in choices if pair_supported(picked["activations"], w)]
            if ordinal and name.startswith("precision_"):
                picked[name] = lowest_precision(choices) or "float"
                continue
            picked[name] = (
                choices[0] if len(choices) == 1 else trial.suggest_categorical(name, choices)
            )
        precision = {g: picked[f"precision_{g}"] for g in self.groups}
        low = next((p for p in precision.values() if p != "float"), None)
        if ordinal and low is not None:
            k = trial.suggest_int(ORDINAL_PARAM, 0, len(self.groups))
            precision = ordinal_plan(k, groups=list(self.groups), order=order, precision=low)
        return QuantizeConfig(
            precision=precision,
            calibration=picked["calibration"],
            activations=picked["activations"],
            weights=picked["weights"],
        )


@dataclass(frozen=True)
class QuantizeConfig:
    """One trial's plan: group -> precision (an empty or all-float plan quantizes nothing),
    the calibration method and the activation/weight types of its integer groups."""

    precision: dict[str, str] = field(default_factory=dict)
    calibration: str = "minmax"
    activations: str = "uint8"
    weights: str = "signed"

    def __post_init__(self) -> None:
        bad = {g: p for g, p in self.precision.items() if p not in get_args(Precision)}
        if bad:
            raise ConfigError(f"precision must be one of {get_args(Precision)}, but got {bad}")
        for key, value, allowed in (
            ("calibration", self.calibration, tuple(METHODS)),
            ("activations", self.activations, get_args(Activations)),
            ("weights", self.weights, get_args(Signedness)),
        ):
            if value not in allowed:
                raise ConfigError(f"{key} must be one of {allowed}, but got {value!r}")
        if not pair_supported(self.activations, self.weights):
            raise ConfigError(f"{PAIR_RULE}: use uint8 activations or signed weights")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def active(self) -> dict[str, Any]:
        """The Optuna parameters that acted: each group's precision (``precision_<group>``, and
        ``quantized_groups`` for the ordinal encoding), and calibration and the activation and
        weight types only when some group is quantized to integers."""
        out: dict[str, Any] = {f"precision_{g}": p for g, p in self.precision.items()}
        out[ORDINAL_PARAM] = sum(p != "float" for p in self.precision.values())
        if needs_calibration(self.precision):
            out.update(calibration=self.calibration, activations=self.activations,
                       weights=self.weights)  # fmt: skip
        return out


# ------------------------------------------------------------------------------- quantization
@dataclass(frozen=True)
class QuantizeResult:
    """The quantized file and the type each weighted layer really carries in it."""

    path: Path
    layer_types: dict[str, str]  # weight name -> float / int8 / uint8 / int4 / int16 ...
    groups: dict[str, str | None]  # node name -> group
    excluded: list[str]
    kept_float: dict[str, str] = field(default_factory=dict)  # group -> why it stayed float
    weight_groups: dict[str, str | None] = field(default_factory=dict)  # weight -> group

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "layer_types": self.layer_types,
            "excluded_nodes": len(self.excluded),
            "kept_float": dict(self.kept_float),
        }


def is_quantized(plan: Mapping[str, str]) -> bool:
    """Whether any group of ``plan`` asks for a precision other than float (fp16 included)."""
    return any(p != "float" for p in plan.values())


def needs_calibration(plan: Mapping[str, str]) -> bool:
    """Whether any group of ``plan`` is quantized to integers (fp16 alone needs no ranges)."""
    return any(p in INTEGER_PRECISIONS for p in plan.values())


def _check_plan(plan: Mapping[str, str], groups: Mapping[str, list[str]]) -> None:
    unknown = set(plan) - set(groups)
    if unknown:
        raise ConfigError(f"precision plan names unknown groups {sorted(unknown)}")


def _half(
    model: onnx.ModelProto,
    out_path: Path | str,
    owner: Mapping[str, str | None],
    plan: Mapping[str, str],
) -> onnx.ModelProto:
    """Save ``model`` with the nodes of the plan's fp16 groups in float16; returns it."""
    import onnx

    from search.compress.quantize.fp16 import half_nodes

    half = {name for name, group in owner.items() if group and plan.get(group) == "fp16"}
    if half:
        model = half_nodes(model, half)
    onnx.save(model, str(out_path))
    return model


def half_only(
    onnx_path: Path | str,
    out_path: Path | str,
    *,
    plan: Mapping[str, str],
    groups: Mapping[str, list[str]],
) -> QuantizeResult:
    """Write ``onnx_path`` with the plan's fp16 groups in float16 and the rest float.

    For plans without integer precisions: nothing is calibrated or quantized.
    """
    import onnx

    _check_plan(plan, groups)
    if needs_calibration(plan):
        raise ValueError("half_only() takes plans without integer precisions; use quantize()")
    model = onnx.load(str(onnx_path))
    name_nodes(model)
    owner = assign_groups(model, groups)
    weights = weight_groups(model, owner)
    model = _half(model, out_path, owner, plan)
    return QuantizeResult(
        path=Path(out_path),
        layer_types=layer_types(model),
        groups=owner,
        excluded=[],
        weight_groups=weights,
    )


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
    uses the default 8-bit weights; ``fp16`` nodes are excluded too and then converted to float16
    in the quantized graph (:mod:`search.compress.quantize.fp16`). Nodes outside every group are
    int8 under ``ungrouped="quantize"`` when the plan has an integer precision. Calibration ranges
    come from ``calibration``; this call never runs calibration itself (it passes no reader).
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, quantize_static

    _check_plan(plan, groups)
    if not needs_calibration(plan):
        return half_only(calibration.model, out_path, plan=plan, groups=groups)
    signed = weights == "signed"
    model = onnx.load(str(calibration.model))
    owner = assign_groups(model, groups)
    excluded, overrides = node_plan(model, owner, plan, ungrouped=ungrouped, signed=signed)
    with quiet_logging():  # the quantizer warns on the root logger for each LayerNorm
        quantize_static(
            str(calibration.model),
            str(out_path),
            calibration_data_reader=None,
            calibration_cache_path=str(calibration.ranges),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=qtype(
                activations.lstrip("u").removeprefix("int"), not activations.startswith("u")
            ),
            weight_type=qtype("8", signed),
            calibrate_method=calib_enum(calibration.method),
            nodes_to_exclude=excluded,
            extra_options={"TensorQuantOverrides": overrides} if overrides else {},
        )
    q = _half(onnx.load(str(out_path)), out_path, owner, plan)
    return QuantizeResult(
        path=Path(out_path),
        layer_types=layer_types(q),
        groups=owner,
        excluded=excluded,
        weight_groups=weight_groups(model, owner),
    )
