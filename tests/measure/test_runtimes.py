"""A runtime of its own: the agent a study starts there measures like any agent (the kernel
audit and the runtime's description included) and is stopped at the end; a missing runtime or
one without the profile's provider is one line naming the fix."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from search.errors import ProviderError
from search.measure import MeasureSettings, MeasureSpec, ProviderSpec
from search.measure.runtimes import RuntimeTarget
from search.measure.target import LocalTarget, close_target, open_target

QUICK = MeasureSettings(
    warmup_runs=1, warmup_seconds=0.0, min_runs=5, min_seconds=0.0, memory_runs=1
)
CPU = MeasureSpec(
    name="cpu-here", providers=(ProviderSpec("CPUExecutionProvider"),), measure=QUICK
)
OPENVINO = MeasureSpec(
    name="openvino", providers=(ProviderSpec("OpenVINOExecutionProvider"),), measure=QUICK
)


@pytest.fixture
def fake_runtimes(tmp_path, monkeypatch):
    """``$SEARCH_RUNTIMES`` with an ``openvino`` runtime that is really this interpreter (the
    standard onnxruntime: the CPU provider only)."""
    bin_dir = tmp_path / "runtimes" / "openvino" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python").chmod(0o755)
    monkeypatch.setenv("SEARCH_RUNTIMES", str(tmp_path / "runtimes"))
    return tmp_path / "runtimes"


@pytest.fixture
def relu_onnx(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "r",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "relu.onnx")
    return tmp_path / "relu.onnx"


def test_a_missing_runtime_names_the_setup_step(tmp_path, monkeypatch):
    monkeypatch.setenv("SEARCH_RUNTIMES", str(tmp_path / "none"))
    with pytest.raises(ProviderError, match=r"run \./setup\.sh --target openvino") as e:
        open_target(OPENVINO, runtime="openvino")
    assert "\n" not in str(e.value)


def test_a_runtime_without_the_provider_is_refused_and_its_agent_stopped(fake_runtimes):
    before = _agents()
    with pytest.raises(ProviderError, match="needs OpenVINOExecutionProvider") as e:
        open_target(OPENVINO, runtime="openvino")
    assert "in the openvino runtime" in str(e.value) and "--target openvino" in str(e.value)
    assert _agents() == before  # the agent it started is gone


def test_measuring_through_a_runtimes_agent(fake_runtimes, relu_onnx):
    held = []

    class Lock:
        def __enter__(self):
            held.append(True)

        def __exit__(self, *exc):
            return False

    # The provider is here already: the profile's runtime is not needed.
    assert isinstance(open_target(CPU, runtime="openvino"), LocalTarget)
    target = RuntimeTarget(CPU, "openvino", timing=Lock)
    try:
        assert target.where.startswith("in the openvino runtime")
        assert target.info["runtime"]["build"] == "onnxruntime"
        x = np.arange(8, dtype=np.float32).reshape(2, 4) - 4
        m = target.measure(relu_onnx, eval_inputs=x, latency_input=x[:1])
        assert np.array_equal(m.outputs[0], np.maximum(x, 0)) and held  # timed under the lock
        assert m.extra["measured_by"] == "local agent of the openvino runtime"
        assert m.extra["kernels"]["method"] == "ONNX Runtime's optimized graph"  # audited there
        assert m.extra["runtime"]["onnxruntime"] and m.latency[0].steady is not None
        pid = target._proc.pid
    finally:
        close_target(target)
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def _agents() -> set[int]:
    mine = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
                parent = int((proc / "stat").read_text().split(") ")[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if b"search\0agent" in cmd and parent == os.getpid():
                mine.append(int(proc.name))
    return set(mine)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True
