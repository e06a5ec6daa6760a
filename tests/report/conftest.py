"""Studies the report tests share: a hand-built one whose answers are worked out by hand, and
a real tiny one (real trials, real sensitivity pass) run once per session."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from tests.report import tiny_study

BASE = {
    "accuracy": 0.95,
    "latency_p50_ms": 10.0,
    "latency_p90_ms": 11.0,
    "latency_cv": 0.05,
    "peak_memory_mb": 12.0,
    "size_mb": 2.0,
}
LATENCY_BUDGET, MEMORY_BUDGET = 9.0, 20.0
# (accuracy, p50 ms, peak MB): 0-3 form the front, 4 is dominated by 1, 5 is the best of all
# but over the memory budget, so it is infeasible and on no front.
POINTS = [
    (0.96, 8.0, 10.0),
    (0.945, 5.0, 9.0),
    (0.935, 3.0, 8.0),
    (0.90, 2.0, 7.0),
    (0.94, 6.0, 9.5),
    (0.99, 1.0, 30.0),
]
DISTS = {"prune_ratio": FloatDistribution(0.0, 0.9), "epochs": IntDistribution(1, 3)}


def record(acc: float, lat: float, mem: float, ratio: float, **extra: object) -> dict:
    """A record shaped like search.trial.pipeline.run_trial's (today's flat config)."""
    cfg = {"prune_ratio": ratio, "epochs": 2, "temperature": 4.0, "alpha": 0.5, "lr": 1e-3}
    return {
        "config": cfg,
        "accuracy": acc,
        "latency_p50_ms": lat,
        "latency_p90_ms": lat * 1.1,
        "latency_cv": 0.03,
        "peak_memory_mb": mem,
        "size_mb": 2.0 * (1 - ratio),
        "measurement": {
            "latency": [{"batch_size": 1, "runs": 100, "p50_ms": lat, "p90_ms": lat * 1.1}],
            "memory": {"inference_mb": mem},
            "size_bytes": 1000,
            "providers": ["CPUExecutionProvider"],
            "onnxruntime": "1.31.1",
            "device": "test CPU",
        },
        "sizes": {
            "base": {"params": 1000, "macs": 9000},
            "prune": {"params": int(1000 * (1 - ratio)), "macs": int(9000 * (1 - ratio))},
        },
        "timings_s": {"prune": 0.1},
        "artifacts": "nowhere",
        "onnx": "nowhere/model.onnx",
        **extra,
    }


def hand_built(storage: str | None = None, name: str = "hand") -> optuna.Study:
    """Six completed trials at :data:`POINTS` under both budgets, one failed, one pruned."""
    study = optuna.create_study(
        study_name=name, storage=storage, directions=["maximize", "minimize"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # set_metric_names is marked experimental
        study.set_metric_names(["accuracy", "latency_p50_ms"])
    study.set_user_attr("baseline", BASE)
    study.set_user_attr(
        "settings", {"task": "digits", "space": "default", "profile": "cpu", "seed": 0}
    )
    for i, (acc, lat, mem) in enumerate(POINTS):
        ratio = 0.1 * (i + 1)
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                values=[acc, lat],
                params={"prune_ratio": ratio, "epochs": 1 + i % 3},
                distributions=DISTS,
                user_attrs={"record": record(acc, lat, mem, ratio), "duration_s": 1.0},
                system_attrs={
                    "constraints:latency_budget_ms": lat - LATENCY_BUDGET,
                    "constraints:memory_budget_mb": mem - MEMORY_BUDGET,
                },
            )
        )
    for state, ratio, reason in (
        (TrialState.FAIL, 0.8, "RuntimeError: boom"),
        (TrialState.PRUNED, 0.85, "stopped early: validation accuracy 0.1"),
    ):
        study.add_trial(
            create_trial(
                state=state,
                params={"prune_ratio": ratio, "epochs": 1},
                distributions=DISTS,
                user_attrs={"fail_reason": reason},
            )
        )
    return study


@pytest.fixture
def hand() -> optuna.Study:
    return hand_built()


@pytest.fixture(scope="session")
def real(teacher_cache: Path) -> optuna.Study:
    """Two real trials of the tiny task (balanced accuracy), with the sensitivity pass.

    Do not change it: tests that need another study copy it (:func:`copy_study`).
    """
    from search.config import load_profile, load_space
    from search.study import StudySpec, run_study

    root = teacher_cache / "report-real"
    root.mkdir()
    (root / "space.yaml").write_text(tiny_study.SPACE)
    (root / "hw.yaml").write_text(tiny_study.PROFILE)
    spec = StudySpec(
        task="tests.report.tiny_study:make_task",
        space=load_space(str(root / "space.yaml")),
        profile=load_profile(str(root / "hw.yaml")),
        study_name="real",
        results_dir=teacher_cache,
    )
    study = run_study(spec, trials=2, progress=False)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert study.user_attrs["metric"] == tiny_study.METRIC
    return study


def copy_study(study: optuna.Study) -> optuna.Study:
    """An in-memory copy of ``study`` (attributes and trials) that a test may change."""
    copy = optuna.create_study(study_name=study.study_name, directions=study.directions)
    if study.metric_names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # set_metric_names is marked experimental
            copy.set_metric_names(study.metric_names)
    for key, value in study.user_attrs.items():
        copy.set_user_attr(key, value)
    copy.add_trials(study.get_trials(deepcopy=True))
    return copy
