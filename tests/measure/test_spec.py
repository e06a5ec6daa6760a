"""MeasureSpec: a profile's measurement part, validated where it is built and carried as JSON."""

from __future__ import annotations

import dataclasses

import pytest

from search.config import load_profile
from search.measure import MeasureSettings, MeasureSpec, ProviderSpec, Threads


@pytest.mark.parametrize("name", ["cpu", "cuda", "jetson", "tensorrt", "arm"])
def test_every_profile_gives_a_spec_that_survives_json(name):
    profile = load_profile(name)
    spec = profile.measure_spec()
    assert spec.provider_names == profile.provider_names and spec.name == name
    assert spec.threads == profile.threads and spec.measure == profile.measure
    assert MeasureSpec.from_json(spec.to_json()) == spec


BAD = [
    ("a list", "must be a JSON object"),
    ({"providers": []}, "at least one execution provider"),
    ({"providers": [{"name": "Cpu"}]}, "unknown provider"),
    ({"providers": [{"name": "CPUExecutionProvider", "optional": True}]}, "must be required"),
    ({"providers": [{"name": "CPUExecutionProvider", "options": {"a": [1]}}]}, "scalars"),
    ({"providers": [{"name": "CPUExecutionProvider"}], "batch_sizes": [0]}, "batch size"),
    ({"providers": [{"name": "CPUExecutionProvider"}], "batch_sizes": [True]}, "number"),
    ({"providers": [{"name": "CPUExecutionProvider"}], "threads": {"intra_op": 1.5}}, "integer"),
    ({"providers": [{"name": "CPUExecutionProvider"}], "measure": {"min_runs": 0}}, "min_runs"),
    ({"providers": [{"name": "CPUExecutionProvider"}], "measure": {"runs": 3}}, "unknown key"),
    ({"providers": [{"name": "CPUExecutionProvider"}], "exec": "rm -rf /"}, "unknown key"),
    ({"providers": [{"name": "CPUExecutionProvider"}], "arch": "sparc"}, "arch"),
]


@pytest.mark.parametrize(("data", "needle"), BAD)
def test_json_from_a_client_is_validated_in_one_line(data, needle):
    with pytest.raises(ValueError, match=needle) as err:
        MeasureSpec.from_json(data)
    assert "\n" not in str(err.value)


def test_the_same_checks_run_where_a_spec_is_built_in_python():
    cpu = (ProviderSpec("CPUExecutionProvider"),)
    with pytest.raises(ValueError, match="max_runs >= min_runs"):
        MeasureSettings(min_runs=10, max_runs=5)
    with pytest.raises(ValueError, match="intra_op"):
        Threads(intra_op=-1)
    spec = MeasureSpec(providers=cpu, batch_sizes=(1, 8))
    assert spec.required == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="batch size"):
        dataclasses.replace(spec, batch_sizes=(5000,))


def test_free_dimensions_fix_the_batch_and_round_trip(tmp_path):
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from search.measure.measurement import run_batches
    from search.measure.runtime import session_options

    cpu = (ProviderSpec("CPUExecutionProvider"),)
    spec = MeasureSpec(providers=cpu, free_dimensions={"batch": 1})
    assert MeasureSpec.from_json(spec.to_json()) == spec
    assert "free_dimensions" not in MeasureSpec(providers=cpu).to_json()  # earlier agents
    with pytest.raises(ValueError, match="free dimension"):
        MeasureSpec(providers=cpu, free_dimensions={"batch": 0})
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "r",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "r.onnx")
    options = session_options(spec.threads, free_dimensions=spec.free_dimensions)
    session = ort.InferenceSession(
        str(tmp_path / "r.onnx"), options, providers=["CPUExecutionProvider"]
    )
    assert session.get_inputs()[0].shape == [1, 3]
    x = np.arange(-6, 6, dtype=np.float32).reshape(4, 3)
    assert np.array_equal(run_batches(session, x), np.maximum(x, 0))  # one row at a time
