"""A failed trial says which step failed and where: the failure reason in trials.csv."""

from __future__ import annotations

import optuna
import pytest

from search.errors import ProviderError, TaskError
from search.tasks import task_and_options
from search.trial.pipeline import StepError, _Timer, failure_reason


def _raise_in(step: str, error: BaseException) -> BaseException:
    timer = _Timer()
    with pytest.raises(BaseException) as caught, timer.step(step):
        raise error
    assert step in timer.seconds  # timed even when it fails
    return caught.value


def test_a_failing_step_names_itself_and_the_file_and_line():
    error = _raise_in("calibrate", ValueError("inhomogeneous shape\nmore"))
    assert isinstance(error, StepError) and error.step == "calibrate"
    reason = failure_reason(error)
    assert reason.startswith("calibrate: ValueError: inhomogeneous shape at test_pipeline.py:")
    assert "\n" not in reason and isinstance(error.__cause__, ValueError)


def test_an_error_inside_a_library_also_names_the_callers_line():
    import torch

    def forward():
        return torch.ones(2, 3) @ torch.ones(2, 3)

    timer = _Timer()
    with pytest.raises(StepError) as caught, timer.step("distill"):
        forward()
    assert "RuntimeError" in str(caught.value) and "test_pipeline.py:" in str(caught.value)


@pytest.mark.parametrize(
    "error", [optuna.TrialPruned("hopeless"), ProviderError("fell back"), KeyboardInterrupt()]
)
def test_stops_and_target_failures_pass_through_unchanged(error):
    assert _raise_in("measure", error) is error


def test_failure_reason_of_an_error_outside_the_steps_is_one_line():
    assert failure_reason(RuntimeError("boom\nmore")) == "RuntimeError: boom"


def test_image_size_reaches_the_image_tasks_and_nothing_else():
    spec, options = task_and_options(
        "imagefolder", model="resnet18", weights=None, data="photos", image_size=64
    )
    assert spec == "imagefolder" and options["image_size"] == 64
    with pytest.raises(TaskError, match="takes no option"):
        task_and_options("digits", model=None, weights=None, data=None, image_size=64)
    with pytest.raises(TaskError, match="--image-size must be a positive"):
        task_and_options("imagefolder", model=None, weights=None, data="x", image_size=0)
