"""Per-layer mixed precision with ONNX Runtime's static QDQ quantizer, on a tiny ResNet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest
import torch

from search.compress.onnx_export import export_onnx
from search.compress.quantize.calibration import calibrate
from search.compress.quantize.encoding import lowest_precision
from search.compress.quantize.groups import assign_groups
from search.compress.quantize.qdq import (
    PrecisionSupport,
    QuantizeConfig,
    QuantizeSpace,
    half_only,
    needs_calibration,
    quantize,
)
from search.compress.quantize.sensitivity import seed_params, sensitivity_pass
from search.config import Profile, Space, TrialConfig
from search.errors import ConfigError
from search.measure import run_batches
from search.measure.kernels import count_kernels, kernel_report
from search.measure.runtime import create_session
from search.tasks.base import accuracy
from search.tasks.models import ResNet

GROUPS = {
    "stem": ["stem"],
    "b0": ["layers.0"],
    "b1": ["layers.1"],
    "b2": ["layers.2"],
    "fc": ["fc"],
}
PROFILE = Profile(providers=[{"name": "CPUExecutionProvider"}]).measure_spec()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny ResNet exported at opset 21, random calibration and evaluation data."""
    torch.manual_seed(0)
    model = ResNet(num_classes=10, widths=(8, 16, 16)).eval()
    rng = np.random.default_rng(0)
    x_cal = rng.standard_normal((32, 1, 32, 32), dtype=np.float32)
    x_eval = rng.standard_normal((64, 1, 32, 32), dtype=np.float32)
    out = tmp_path_factory.mktemp("tiny")
    path = export_onnx(model, torch.from_numpy(x_eval[:1]), out / "model.onnx")
    # Labels are the float model's own predictions: the float file scores 1.0 by construction.
    labels = run_batches(create_session(path, PROFILE), x_eval).argmax(axis=1)
    return {"path": path, "x_cal": x_cal, "x_eval": x_eval, "labels": labels, "dir": out}


def _accuracy(path: Path, tiny: dict) -> float:
    return accuracy(run_batches(create_session(path, PROFILE), tiny["x_eval"]), tiny["labels"])


def _stored_type(model: onnx.ModelProto, weight: str) -> str:
    """The element type the Conv/Gemm that owns ``weight`` reads it in, found independently."""
    inits = {i.name: i for i in model.graph.initializer}
    consumers = [n for n in model.graph.node if any(i.startswith(weight) for i in n.input)]
    for node in consumers:
        if node.op_type in ("Conv", "Gemm") and weight in node.input:
            # Read straight from the initializer: float, or float16 for an fp16 group.
            return {onnx.TensorProto.FLOAT: "float", onnx.TensorProto.FLOAT16: "float16"}[
                inits[weight].data_type
            ]
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            return onnx.TensorProto.DataType.Name(inits[node.input[0]].data_type).lower()
    raise AssertionError(f"{weight} feeds no layer")


def test_trial_config_plan_gives_each_layer_its_type(tiny: dict) -> None:
    cfg = QuantizeConfig(
        precision={"stem": "int8", "b0": "int4", "b1": "float", "b2": "int8", "fc": "int8"},
        calibration="minmax",
    )
    calib = calibrate(tiny["path"], tiny["x_cal"], method=cfg.calibration, cache_dir=tiny["dir"])
    # quant_pre_process must keep opset 21: int4 and int8 in standard Q/DQ need it.
    pre = onnx.load(str(calib.model))
    assert next(o.version for o in pre.opset_import if o.domain in ("", "ai.onnx")) == 21
    q = quantize(
        calib,
        tiny["dir"] / "model.q.onnx",
        plan=cfg.precision,
        groups=GROUPS,
        activations=cfg.activations,
        weights=cfg.weights,
    )
    model = onnx.load(str(q.path))
    onnx.checker.check_model(model, full_check=True)
    assert _stored_type(model, "stem.0.weight") == "int8"
    assert _stored_type(model, "layers.0.conv1.weight") == "int4"
    assert _stored_type(model, "layers.0.conv2.weight") == "int4"
    assert _stored_type(model, "layers.1.conv1.weight") == "float"
    assert _stored_type(model, "layers.1.shortcut.0.weight") == "float"
    assert _stored_type(model, "fc.weight") == "int8"
    assert q.layer_types["layers.0.conv1.weight"] == "int4"
    assert q.layer_types["layers.1.conv2.weight"] == "float"
    # The file runs on the CPU provider and is scored from its own outputs.
    acc = _accuracy(q.path, tiny)
    assert 0.5 <= acc <= 1.0, acc
    # The optimized graph shows what executes: the int8 stem as an integer kernel, the int4
    # convs as float convs behind DequantizeLinear.
    kernels = kernel_report(q.path, PROFILE, tiny["dir"] / "model.q.opt.onnx")
    assert kernels["integer_layers"] >= 2
    assert kernels["float_layers_after_dequantize"] >= 2


def _io_types(model: onnx.ModelProto) -> list[int]:
    return [v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)]


def test_fp16_groups_run_in_float16_beside_integer_and_float_ones(tiny: dict) -> None:
    plan = {"stem": "int8", "b0": "fp16", "b1": "int4", "b2": "float", "fc": "fp16"}
    assert needs_calibration(plan)
    calib = calibrate(tiny["path"], tiny["x_cal"], method="minmax", cache_dir=tiny["dir"])
    q = quantize(calib, tiny["dir"] / "mixed16.q.onnx", plan=plan, groups=GROUPS)
    model = onnx.load(str(q.path))
    onnx.checker.check_model(model, full_check=True)
    stored = {
        "stem.0.weight": "int8",
        "layers.0.conv1.weight": "float16",
        "layers.0.conv2.weight": "float16",
        "layers.1.conv1.weight": "int4",
        "layers.2.conv1.weight": "float",
        "fc.weight": "float16",
    }
    assert {w: _stored_type(model, w) for w in stored} == stored
    reported = {w: t.replace("float16", "fp16") for w, t in stored.items()}
    assert {w: q.layer_types[w] for w in stored} == reported
    # The graph's interface stays float; each fp16 group has Casts at its edges only: one in and
    # one out for block 0 (its shortcut input is shared with conv1), one in and one out for fc.
    assert _io_types(model) == [onnx.TensorProto.FLOAT] * 2
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    assert len(casts) == 4, [n.name for n in casts]
    # It runs on the CPU provider and is scored from its own outputs; the CPU provider has no
    # float16 conv kernels, so its optimized graph says no layer kept float16 weights.
    assert _accuracy(q.path, tiny) >= 0.5
    kernels = kernel_report(q.path, PROFILE, tiny["dir"] / "mixed16.opt.onnx")
    assert kernels["fp16_layers"] == 0 and kernels["integer_layers"] >= 1


def test_fp16_only_plan_needs_no_calibration_and_keeps_the_outputs(
    tiny: dict, tmp_path: Path
) -> None:
    plan = {"stem": "fp16", "b0": "fp16", "b1": "fp16", "b2": "fp16", "fc": "fp16"}
    assert not needs_calibration(plan)
    q = half_only(tiny["path"], tmp_path / "half.onnx", plan=plan, groups=GROUPS)
    model = onnx.load(str(q.path))
    onnx.checker.check_model(model, full_check=True)
    assert set(q.layer_types.values()) == {"fp16"} and len(q.layer_types) == 10
    # The kernel count sees all ten layers with float16 weights in the file itself (the CPU
    # provider's optimized graph has none left: the trial test checks that side).
    assert count_kernels(model)["fp16_layers"] == 10
    assert _io_types(model) == [onnx.TensorProto.FLOAT] * 2

    # Weights take half the bytes (the tiny file is mostly metadata, so compare the weights).
    def weight_bytes(m: onnx.ModelProto, dtype: int) -> int:
        return sum(len(i.raw_data) for i in m.graph.initializer if i.data_type == dtype)

    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert weight_bytes(model, f32) == 0
    assert weight_bytes(onnx.load(str(tiny["path"])), f32) == 2 * weight_bytes(model, f16)
    x = tiny["x_eval"]
    ref = run_batches(create_session(tiny["path"], PROFILE), x)
    out = run_batches(create_session(q.path, PROFILE), x)
    assert np.abs(out - ref).max() < 2e-2 * np.abs(ref).max()
    assert _accuracy(q.path, tiny) >= 0.95
    with pytest.raises(ValueError, match="integer"):
        half_only(tiny["path"], tmp_path / "x.onnx", plan={"stem": "int8"}, groups=GROUPS)


def test_precision_variants_reuse_one_calibration(tiny: dict, tmp_path: Path) -> None:
    first = calibrate(tiny["path"], tiny["x_cal"], method="minmax", cache_dir=tmp_path)
    assert first.computed
    a = quantize(first, tmp_path / "a.onnx", plan={"all": "int8"}, groups={"all": ["*"]})
    again = calibrate(tiny["path"], tiny["x_cal"], method="minmax", cache_dir=tmp_path)
    assert not again.computed and again.ranges == first.ranges and again.key == first.key
    stamp = first.ranges.stat().st_mtime_ns
    b = quantize(again, tmp_path / "b.onnx", plan={"all": "int4"}, groups={"all": ["*"]})
    assert first.ranges.stat().st_mtime_ns == stamp  # quantize read the ranges, did not rewrite
    assert set(a.layer_types.values()) == {"int8"} and set(b.layer_types.values()) == {"int4"}
    # Another method or other inputs are another calibration.
    other = calibrate(tiny["path"], tiny["x_cal"], method="percentile", cache_dir=tmp_path)
    assert other.computed and other.key != first.key
    fewer = calibrate(tiny["path"], tiny["x_cal"][:16], method="minmax", cache_dir=tmp_path)
    assert fewer.computed and fewer.key != first.key


def test_uniform_uint8_runs_every_layer_as_integer_kernel(tiny: dict, tmp_path: Path) -> None:
    calib = calibrate(tiny["path"], tiny["x_cal"], method="minmax", cache_dir=tiny["dir"])
    q = quantize(calib, tmp_path / "q.onnx", plan={"all": "int8"}, groups={"all": ["*"]})
    kernels = kernel_report(q.path, PROFILE, tmp_path / "opt.onnx")
    float_kernels = kernel_report(tiny["path"], PROFILE, tmp_path / "float.opt.onnx")
    assert float_kernels["integer_layers"] == 0 and float_kernels["float_layers"] == 10
    assert kernels["integer_layers"] == 10 and kernels["float_layers"] == 0
    assert _accuracy(q.path, tiny) >= 0.5


def test_groups_follow_module_names(tiny: dict) -> None:
    owner = assign_groups(onnx.load(str(tiny["path"])), GROUPS)
    model = onnx.load(str(tiny["path"]))
    by_weight = {n.input[1]: owner[n.name] for n in model.graph.node if n.op_type == "Conv"}
    assert by_weight["stem.0.weight"] == "stem"
    assert by_weight["layers.1.shortcut.0.weight"] == "b1"
    adds = [owner[n.name] for n in model.graph.node if n.op_type == "Add"]
    assert adds == ["b0", "b1", "b2"]  # weightless nodes follow their module's group


def test_sampling_offers_only_what_the_profile_runs() -> None:
    space = Space(
        quantize=QuantizeSpace(
            groups=GROUPS,
            precisions=["float", "int8", "int4"],
            calibration=["minmax", "entropy"],
            activations=["uint8", "int8"],
        )
    )
    profile = Profile(
        providers=[{"name": "CPUExecutionProvider"}],
        precisions=PrecisionSupport(layer=["float", "int8"], activations=["uint8"]),
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        cfg = space.sample(study.ask(), profile).quantize
        assert set(cfg.precision) == set(GROUPS)
        seen |= set(cfg.precision.values())
        assert cfg.activations == "uint8"
    assert seen == {"float", "int8"}
    none_left = PrecisionSupport(layer=["int16"])
    with pytest.raises(ConfigError, match="unsupported by the hardware profile"):
        space.quantize.choices(none_left)
    with pytest.raises(ValueError, match="signed weights"):
        QuantizeSpace(activations=["int8"], weights=["unsigned"])
    # A profile that leaves only unsigned weights takes int8 activations off the menu too.
    both = QuantizeSpace(activations=["uint8", "int8"], weights=["signed", "unsigned"])
    unsigned = PrecisionSupport(activations=["uint8", "int8"], weights=["unsigned"])
    assert both.choices(unsigned)["activations"] == ["uint8"]
    only_int8 = PrecisionSupport(activations=["int8"], weights=["unsigned"])
    with pytest.raises(ConfigError, match="need signed weights"):
        both.choices(only_int8)


def test_sensitivity_pass_and_seed(tiny: dict, tmp_path: Path) -> None:
    calib = calibrate(tiny["path"], tiny["x_cal"], method="minmax", cache_dir=tiny["dir"])
    space = QuantizeSpace(groups=GROUPS, precisions=["float", "int8", "int4"])
    sens = sensitivity_pass(
        calib,
        space=space,
        precision="int4",
        activations="uint8",
        weights="signed",
        evaluate=lambda p: _accuracy(p, tiny),
        out_dir=tmp_path,
    )
    assert sens["float_accuracy"] == 1.0
    assert list(sens["groups"]) == list(GROUPS)
    drops = [sens["groups"][g]["drop"] for g in sens["order"]]
    assert drops == sorted(drops, reverse=True)
    # Only the one group is quantized in each variant.
    assert set(sens["groups"]["stem"]["layer_types"]) == {"stem.0.weight"}
    assert set(sens["groups"]["stem"]["layer_types"].values()) == {"int4"}
    # At fp16 (a GPU profile's lowest) each variant has just that group in float16.
    half = sensitivity_pass(
        calib,
        space=QuantizeSpace(groups=GROUPS, precisions=["float", "fp16"]),
        precision="fp16",
        activations="uint8",
        weights="signed",
        evaluate=lambda p: _accuracy(p, tiny),
        out_dir=tmp_path / "fp16",
    )
    assert half["groups"]["b1"]["layer_types"] == {
        f"layers.1.{c}.weight": "fp16" for c in ("conv1", "conv2", "shortcut.0")
    }
    assert max(g["drop"] for g in half["groups"].values()) <= 0.05
    choices = space.choices(None)
    fake = {"precision": "int4", "groups": {"stem": {"drop": 0.0}, "fc": {"drop": 0.2}}}
    assert seed_params(fake, choices=choices, tolerance=0.01) == {
        "precision_stem": "int4",
        "precision_fc": "int8",
    }
    assert lowest_precision(["float", "int8", "int16"]) == "int8"
    assert lowest_precision(["float", "fp16"]) == "fp16"
    assert lowest_precision(["float"]) is None
    # On a GPU profile (float, fp16, int8) a group int8 hurts starts at fp16, not float.
    gpu = QuantizeSpace(groups=GROUPS, precisions=["float", "fp16", "int8"]).choices(None)
    fake = {"precision": "int8", "groups": {"stem": {"drop": 0.0}, "fc": {"drop": 0.2}}}
    assert seed_params(fake, choices=gpu, tolerance=0.01) == {
        "precision_stem": "int8",
        "precision_fc": "fp16",
    }


def _tiny_trial(
    precision: dict[str, str], out_dir: Path, layer: tuple[str, ...] = ("float", "int8")
) -> dict:
    """Run one trial of a tiny ResNet task with ``precision`` on a CPU profile that offers
    ``layer`` precisions; returns its record."""
    from torch.utils.data import TensorDataset

    from search.compress.distill import DistillConfig
    from search.compress.prune.step import PruneConfig
    from search.measure import MeasureSettings
    from search.tasks import Task
    from search.trial.context import Context
    from search.trial.pipeline import run_trial
    from tests.conftest import local_measure

    torch.manual_seed(0)
    x = torch.randn(48, 1, 32, 32)
    y = torch.randint(0, 10, (48,))
    data = TensorDataset(x, y)
    task = Task(
        name="tiny",
        model=ResNet(num_classes=10, widths=(8, 16, 16)).eval(),
        train=data,
        val=data,
        test=data,
        calibration=data,
        example_input=x[:1].clone(),
        ignored_layers=["fc"],
    )
    profile = Profile(
        providers=[{"name": "CPUExecutionProvider"}],
        measure=MeasureSettings(warmup_runs=1, warmup_seconds=0, min_runs=5, min_seconds=0),
        precisions=PrecisionSupport(layer=list(layer)),
    )
    space = Space(quantize=QuantizeSpace(groups=GROUPS, calibration_samples=16))
    measure = local_measure(profile, x.numpy())
    ctx = Context.build(task=task, space=space, profile=profile, seed=0, measure=measure)
    cfg = TrialConfig(
        prune=PruneConfig(ratio=0.25),
        distill=DistillConfig(epochs=1, batch_size=16),
        quantize=QuantizeConfig(precision=precision),
    )
    return run_trial(cfg, ctx=ctx, out_dir=out_dir).to_json()


def test_trial_measures_the_quantized_file(tmp_path: Path) -> None:
    plan = {"stem": "int8", "b0": "int8", "b1": "float", "b2": "int8", "fc": "int8"}
    rec = _tiny_trial(plan, tmp_path)
    assert rec["measured_onnx"] == str(tmp_path / "model.q.onnx")
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "model.opt.onnx").is_file()
    assert rec["quantize"]["layer_types"]["layers.1.conv1.weight"] == "float"
    assert rec["quantize"]["layer_types"]["layers.2.conv1.weight"] == "int8"
    assert rec["kernels"]["integer_layers"] >= 1 and rec["kernels"]["float_layers"] >= 1
    assert rec["size_mb"] == pytest.approx((tmp_path / "model.q.onnx").stat().st_size / 1e6)
    assert {"calibrate", "quantize", "kernels"} <= set(rec["timings_s"])


def test_trial_with_fp16_groups_only_measures_the_float16_file(tmp_path: Path) -> None:
    plan = {"stem": "float", "b0": "fp16", "b1": "fp16", "b2": "fp16", "fc": "fp16"}
    rec = _tiny_trial(plan, tmp_path)
    assert rec["measured_onnx"] == str(tmp_path / "model.q.onnx")
    types = rec["quantize"]["layer_types"]
    assert types["stem.0.weight"] == "float" and types["layers.2.conv1.weight"] == "fp16"
    assert rec["quantize"]["calibration"] is None
    assert "fp16" in rec["timings_s"] and "calibrate" not in rec["timings_s"]
    assert not (tmp_path / "calib").exists()
    # Measured on the CPU provider, which runs these layers in float: the record says so.
    assert rec["kernels"]["fp16_layers"] == 0 and rec["kernels"]["float_layers"] >= 8
    assert rec["size_mb"] == pytest.approx((tmp_path / "model.q.onnx").stat().st_size / 1e6)


def test_report_renders_the_sensitivity_pass() -> None:
    from search.report import sensitivity_table

    study = optuna.create_study(directions=["maximize", "minimize"])
    assert sensitivity_table(study).empty
    study.set_user_attr(
        "sensitivity",
        {
            "precision": "int8",
            "order": ["fc", "stem"],
            "groups": {
                "stem": {"accuracy": 0.99, "drop": 0.0, "layers": 1},
                "fc": {"accuracy": 0.9, "drop": 0.09, "layers": 1},
            },
        },
    )
    table = sensitivity_table(study)
    assert list(table["group"]) == ["fc", "stem"] and list(table["drop"]) == [0.09, 0.0]


def test_report_compares_float_int8_and_best_mixed() -> None:
    from optuna.distributions import FloatDistribution

    from search.report import quantization_summary

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("baseline", {"accuracy": 0.99, "latency_p50_ms": 1.0, "size_mb": 2.8})
    study.set_user_attr(
        "baseline_int8",
        {
            "accuracy": 0.98,
            "latency_p50_ms": 0.4,
            "size_mb": 0.8,
            "kernels": {"integer_layers": 9},
        },
    )
    for number, (acc, plan) in enumerate(
        [(0.97, {"a": "int8", "b": "float"}), (0.99, {"a": "int8", "b": "int8"})]
    ):
        rec = {"config": {"precision": plan}, "kernels": {"integer_layers": number}, "size_mb": 1}
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": 0.5},
                distributions={"x": FloatDistribution(0, 1)},
                values=[acc, 0.3],
                user_attrs={"record": {**rec, "accuracy": acc, "latency_p50_ms": 0.3}},
            )
        )
    table = quantization_summary(study)
    assert list(table["model"]) == ["float baseline", "uniform int8", "best mixed precision"]
    assert table["trial"].iloc[2] == 0  # trial 1 is uniform int8, not mixed
    assert table["integer_layers"].iloc[1] == 9


def test_seeded_trial_is_enqueued_again_after_an_interruption(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    from search.study.references import ensure_quantization

    study = optuna.create_study(directions=["maximize", "minimize"])
    seed = {"precision_stem": "int8"}
    study.set_user_attr("quantize_seed", seed)
    study.enqueue_trial(seed)
    ensure_quantization(study, None, tmp_path)  # still waiting: nothing added
    assert len(study.trials) == 1
    trial = study.ask()
    trial.set_user_attr("interrupted", True)
    study.tell(trial, state=TrialState.FAIL)
    ensure_quantization(study, None, tmp_path)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].system_attrs["fixed_params"] == seed


def test_groups_survive_pre_processing_of_a_transformer(tmp_path: Path) -> None:
    """MatMul weights of an exported ViT have no module name (``val_8``): groups come from the
    node scopes, which ONNX Runtime's pre-processing drops and calibrate() restores."""
    from search.tasks.transformer import TinyViT

    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    path = export_onnx(TinyViT(num_classes=10).eval(), x[:1], tmp_path / "vit.onnx")
    groups = {"blocks": ["blocks"], "head": ["head"], "rest": ["*"]}
    calib = calibrate(path, x.numpy(), method="minmax", cache_dir=tmp_path / "calib")
    pre = onnx.load(str(calib.model))
    owner = assign_groups(pre, groups)
    matmuls = [owner[n.name] for n in pre.graph.node if n.op_type == "MatMul"]
    assert matmuls and set(matmuls) == {"blocks"}, matmuls
    plan = {"blocks": "fp16", "head": "int8", "rest": "int8"}
    q = quantize(calib, tmp_path / "vit.q.onnx", plan=plan, groups=groups)
    types = q.layer_types
    assert types["head.weight"] == "int8" and types["patch.weight"] == "int8"
    assert [t for w, t in types.items() if w not in ("head.weight", "patch.weight")] == [
        "fp16"
    ] * 8
    out = run_batches(create_session(q.path, PROFILE), x.numpy())
    ref = run_batches(create_session(path, PROFILE), x.numpy())
    assert np.abs(out - ref).max() < 0.1 * np.abs(ref).max()


def test_ungrouped_nodes_stay_float_where_the_profile_has_no_int8(tmp_path: Path) -> None:
    plan = {"stem": "int4", "b0": "float", "b1": "float", "b2": "float", "fc": "float"}
    with_int8 = _tiny_trial(plan, tmp_path / "a")["quantize"]
    without = _tiny_trial(plan, tmp_path / "b", layer=("float", "int4"))["quantize"]
    # Pooling and reshape nodes outside every group: int8 in the first, float in the second.
    assert without["excluded_nodes"] > with_int8["excluded_nodes"]
    assert with_int8["layer_types"] == without["layer_types"]
