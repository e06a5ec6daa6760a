"""The steady-state rule before timing: it waits out slow first runs, looks longer when bursts
move short windows, stops at its bound and says so; the timed runs check their own drift."""

from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from search.measure.latency import drift, measure_latency, warm_up
from search.measure.spec import MeasureSettings

QUIET = MeasureSettings(warmup_runs=2, warmup_seconds=0.0, steady_window=5)


def _sleeper(durations_ms):
    """A run whose i-th call takes ``durations_ms(i)`` of wall time."""
    calls = []

    def run():
        calls.append(None)
        time.sleep(durations_ms(len(calls) - 1) / 1000)

    return run, calls


def test_a_constant_run_settles_after_two_windows():
    run, calls = _sleeper(lambda i: 2.0)
    loose = MeasureSettings(
        warmup_runs=2, warmup_seconds=0.0, steady_window=5, steady_tolerance=1.0
    )  # fmt: skip - a loaded machine's sleeps vary
    warm = warm_up(run, loose, clock="wall")
    assert warm.steady and warm.runs == len(calls) == 2 + 5 + 5  # throw-away runs, two windows


def test_slow_first_runs_are_waited_out():
    # A first-inference compile: 4 runs at 10 ms, then 1 ms (OpenVINO's first runs cost 4-19x).
    run, calls = _sleeper(lambda i: 10.0 if i < 4 else 1.0)
    no_throw_away = MeasureSettings(warmup_runs=0, warmup_seconds=0.0, steady_window=5)
    warm = warm_up(run, no_throw_away, clock="wall")
    # The first window's median is slow, the second's fast: not steady there; a third (longer)
    # window of fast runs agrees with the second.
    assert warm.steady and len(calls) >= 5 + 5 + 10


def test_a_run_that_never_settles_stops_at_the_bound_and_says_so():
    run, calls = _sleeper(lambda i: 0.2 * 1.05**i)  # 5 % slower every run: never steady
    bounded = MeasureSettings(warmup_runs=0, warmup_seconds=0.0, steady_window=5,
                              warmup_max_runs=40)  # fmt: skip
    warm = warm_up(run, bounded, clock="wall")
    assert not warm.steady and warm.change is not None and warm.change > 0.05
    assert len(calls) <= 40 + 40  # the bound, plus at most the window that crossed it


def test_windows_grow_while_bursts_move_their_medians():
    # Bursts of slow runs in blocks: a window of 5 can land in one; longer windows cannot.
    pattern = [3.0] * 4 + [0.5] * 6
    run, calls = _sleeper(lambda i: pattern[i % len(pattern)])
    warm = warm_up(run, MeasureSettings(warmup_runs=0, steady_window=5), clock="wall")
    assert warm.steady and warm.runs > 10  # not settled on the first pair of 5-run windows


def test_drift_compares_the_halves():
    assert drift(np.array([1.0] * 10 + [1.3] * 10)) == pytest.approx(0.3)
    assert drift(np.ones(20)) == 0.0 and drift(np.ones(3)) == 0.0


@pytest.fixture
def conv_session(tmp_path):
    w = helper.make_tensor("W", TensorProto.FLOAT, [8, 3, 3, 3], np.ones(216, np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])],
        "c",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 32, 32])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "c.onnx")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(tmp_path / "c.onnx"), so, providers=["CPUExecutionProvider"])


def test_measured_latency_records_its_warm_up_and_drift(conv_session):
    feed = {"x": np.ones((1, 3, 32, 32), np.float32)}
    settings = MeasureSettings(warmup_runs=3, warmup_seconds=0.0, min_runs=40, min_seconds=0.0)
    stats = measure_latency(conv_session, feed, settings, cpu=True)
    assert stats.warmup_runs >= 3 + 2 * settings.steady_window
    assert stats.steady is not None and stats.drift is not None and stats.drift >= 0
    assert stats.to_dict()["steady"] == stats.steady  # stored with the record


def test_steady_settings_are_validated():
    with pytest.raises(ValueError, match="steady_window"):
        MeasureSettings(steady_window=0)
    with pytest.raises(ValueError, match="warmup_max_seconds"):
        MeasureSettings(warmup_max_seconds=-1.0)
