"""A confirmation in several fresh processes: the pooled figure, its interval over the
processes, the contended flag, and the wait for a quiet machine."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
import torch

from search.measure.load import wait_for_quiet
from search.measure.paired import PairedLatency
from search.measure.pooled import pool_paired, pool_timings, prediction_interval, t975
from tests.conftest import cores_loaded


def _paired(rel: float, low: float, high: float) -> dict:
    p = PairedLatency(
        relative=rel,
        clock="cpu",
        ci_low=low,
        ci_high=high,
        rounds=20,
        runs_per_round=5,
        candidate_p50_ms=rel,
        reference_p50_ms=1.0,
    )
    return p.to_dict()


def test_student_t_quantiles():
    assert t975(1) == pytest.approx(12.706) and t975(2) == pytest.approx(4.303)
    assert t975(30) == pytest.approx(2.042) and 1.96 < t975(200) < 1.98
    with pytest.raises(ValueError):
        t975(0)


def test_prediction_interval_is_on_a_log_scale_and_widens_with_the_spread():
    low, high = prediction_interval([0.5, 0.5, 0.5])
    assert low == pytest.approx(0.5) and high == pytest.approx(0.5)  # no spread seen
    low, high = prediction_interval([0.45, 0.5, 0.55])
    logs = np.log([0.45, 0.5, 0.55])
    half = 4.303 * np.std(logs, ddof=1) * math.sqrt(1 + 1 / 3)
    assert (low, high) == pytest.approx(
        (math.exp(logs.mean() - half), math.exp(logs.mean() + half))
    )
    wide = prediction_interval([0.4, 0.5, 0.6])
    assert wide[0] < low and wide[1] > high
    assert prediction_interval([0.7]) == (0.7, 0.7)
    with pytest.raises(ValueError):
        prediction_interval([0.5, -1.0])


def test_pooled_interval_covers_every_process_and_a_new_one():
    procs = [_paired(0.50, 0.49, 0.51), _paired(0.52, 0.515, 0.53), _paired(0.51, 0.50, 0.52)]
    pooled = pool_paired(procs)
    assert pooled["relative"] == pytest.approx(0.51)  # the median process
    assert pooled["processes"] == 3 and pooled["process_relatives"] == [0.50, 0.52, 0.51]
    for p in procs:  # every process's own interval lies inside
        assert pooled["ci_low"] <= p["ci_low"] and p["ci_high"] <= pooled["ci_high"]
    pi = prediction_interval([0.50, 0.52, 0.51])
    assert pooled["ci_low"] <= pi[0] and pi[1] <= pooled["ci_high"]
    assert pooled["rounds"] == 60
    assert PairedLatency.from_dict(pooled).processes == 3  # read back as the study reads it


def _process(paired: dict, *, busy: bool = False) -> dict:
    """One fresh process's :func:`~search.measure.confirmation.time_files` result."""
    return {
        "clock": "cpu",
        "rounds": 20,
        "runs_per_round": 5,
        "load": {
            "loadavg": [1, 1, 1],
            "cores": 2,
            "seconds": 1.0,
            "other_cpu": 0.6 if busy else 0.0,
            "busy": busy,
            "threshold": 0.1,
        },  # fmt: skip
        "reference_p50_ms": 1.0,
        "device": "cpu",
        "paired": paired,
    }


def test_pool_timings_flags_a_busy_window_and_refuses_mismatched_processes():
    def result(busy: bool, names=("a",)) -> dict:
        return _process({n: _paired(0.5, 0.49, 0.51) for n in names}, busy=busy)

    quiet = pool_timings([result(False), result(False), result(False)])
    assert quiet["processes"] == 3 and quiet["contended"] is False
    assert len(quiet["per_process"]) == 3 and quiet["rounds"] == 60
    loaded = pool_timings([result(False), result(True), result(False)])
    assert loaded["contended"] is True and loaded["load"]["other_cpu"] == 0.6
    with pytest.raises(ValueError, match="different models"):
        pool_timings([result(False), result(False, names=("b",))])
    with pytest.raises(ValueError):
        pool_timings([])


def test_a_model_whose_processes_agree_by_chance_gets_the_spread_of_the_models_beside_it():
    """Three processes can agree by chance (stop 32's CI: +-3 %, and the next confirmation
    landed outside); the models timed in the same processes show the spread a new process
    brings, so a model's interval assumes at least their median spread."""
    relatives = {
        "a": [0.50, 0.55, 0.46],
        "b": [0.70, 0.76, 0.66],
        "c": [0.60, 0.62, 0.57],
        "lucky": [0.80, 0.801, 0.799],
    }

    def result(i: int) -> dict:
        return _process(
            {n: _paired(r[i], r[i] * 0.995, r[i] * 1.005) for n, r in relatives.items()}
        )

    pooled = pool_timings([result(i) for i in range(3)])
    floor = float(
        np.median([np.std(np.log(relatives[n]), ddof=1) for n in ("a", "b", "c", "lucky")])
    )
    assert pooled["min_spread"] == pytest.approx(floor)
    lucky = pooled["paired"]["lucky"]
    alone = prediction_interval(relatives["lucky"])
    assert alone[1] / alone[0] < 1.02  # on its own, +-0.6 %
    assert (lucky["ci_low"], lucky["ci_high"]) == pytest.approx(
        prediction_interval(relatives["lucky"], min_spread=floor)
    )
    assert lucky["ci_high"] / lucky["ci_low"] > 1.3  # the spread of the models beside it
    # A model noisier than the median keeps its own, wider interval.
    a = pooled["paired"]["a"]
    assert (a["ci_low"], a["ci_high"]) == pytest.approx(prediction_interval(relatives["a"]))


def test_wait_for_quiet_returns_at_once_on_a_quiet_enough_machine_and_gives_up_on_a_busy_one():
    t0 = time.perf_counter()
    calm = wait_for_quiet(threshold=1.0, max_wait_s=30, window_s=0.3)  # nothing exceeds all
    assert calm.quiet is True and time.perf_counter() - t0 < 5
    with cores_loaded(2):
        busy = wait_for_quiet(threshold=0.2, max_wait_s=1.0, window_s=0.3)
    assert busy.quiet is False and busy.waited_s >= 1.0 and busy.other_cpu > 0.2


def _onnx(path, widths):
    from search.compress.onnx_export import export_onnx
    from search.tasks.models import ResNet

    torch.manual_seed(0)
    model = ResNet(num_classes=10, widths=widths, blocks_per_stage=1).eval()
    return export_onnx(model, torch.randn(1, 1, 16, 16), path)


def test_confirmation_runs_in_fresh_processes_and_pools_them(tmp_path):
    from search.measure import MeasureSettings, MeasureSpec, ProviderSpec
    from search.measure.confirmation import time_files

    small = _onnx(tmp_path / "small.onnx", (8, 16))
    large = _onnx(tmp_path / "large.onnx", (16, 32))
    settings = MeasureSettings(warmup_runs=1, paired_rounds=4, paired_runs=2, confirm_rounds=4,
                               confirm_processes=2, max_repeats=0)  # fmt: skip
    spec = MeasureSpec(providers=(ProviderSpec("CPUExecutionProvider"),), measure=settings)
    x = np.zeros((1, 1, 16, 16), np.float32)
    out = time_files({"small": small}, reference=large, spec=spec, latency_input=x)
    assert out["processes"] == 2 and len(out["per_process"]) == 2
    p = out["paired"]["small"]
    assert p["processes"] == 2 and len(p["process_relatives"]) == 2
    assert p["ci_low"] <= p["relative"] <= p["ci_high"] and 0 < p["relative"] < 1.5
    assert out["rounds"] == 8 and out["quiet_wait"] is None
    assert isinstance(out["contended"], bool)
    here = dataclasses.replace(spec, measure=dataclasses.replace(settings, confirm_processes=0))
    one = time_files({"small": small}, reference=large, spec=here, latency_input=x)
    assert one["processes"] == 0 and one["paired"]["small"]["processes"] == 1
