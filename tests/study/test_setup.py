"""Joining a study that another worker set up: the same teacher and data, or one line."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from search.config import load_profile, load_space
from search.errors import TaskError
from search.study import StudySpec, run_study
from tests.conftest import DATA

pytestmark = pytest.mark.slow

# An untrained tiny model on random data; $TASK_VARIANT changes the model's or the data's seed,
# the way another machine's data folder or teacher would differ.
TASK = """
import os
import torch
from torch.utils.data import TensorDataset
from search.tasks import Task
from search.tasks.models import ResNet

def make_task(*, seed, cache_dir):
    variant = os.environ.get("TASK_VARIANT", "")
    g = torch.Generator().manual_seed(seed + (1 if variant == "data" else 0))
    x, y = torch.randn(64, 1, 16, 16, generator=g), torch.randint(0, 4, (64,), generator=g)
    torch.manual_seed(seed + (1 if variant == "teacher" else 0))
    model = ResNet(num_classes=4, widths=(8, 8, 8)).eval()
    return Task(name="t", model=model, train=TensorDataset(x, y), val=TensorDataset(x, y),
                test=TensorDataset(x, y), calibration=TensorDataset(x[:16], y[:16]),
                example_input=x[:1].clone(), ignored_layers=["fc"], key="t")
"""


@pytest.fixture
def spec(tmp_path):
    (tmp_path / "task.py").write_text(TASK)
    return StudySpec(
        task=f"{tmp_path / 'task.py'}:make_task",
        space=load_space(str(DATA / "tiny_space.yaml")),
        profile=load_profile(str(DATA / "tiny_cpu.yaml")),
        study_name="s",
        results_dir=tmp_path / "a",
        storage=f"sqlite:///{tmp_path / 's.db'}",
    )


@pytest.mark.parametrize("variant", ["teacher", "data"])
def test_a_worker_whose_teacher_or_data_differ_is_refused(spec, variant, monkeypatch):
    study = run_study(spec, trials=1, progress=False)
    attrs = study.user_attrs
    assert len(attrs["teacher"]["state_dict_sha256"]) == 64 and len(attrs["data_sha256"]) == 64
    monkeypatch.setenv("TASK_VARIANT", variant)
    other = dataclasses.replace(spec, results_dir=spec.results_dir.parent / "b")
    what = "teacher" if variant == "teacher" else "task data"
    with pytest.raises(TaskError, match=f"this worker's {what} .* differs from study 's'"):
        run_study(other, trials=2, progress=False)
    assert len(optuna.load_study(study_name="s", storage=spec.storage_url).trials) == 1
    monkeypatch.delenv("TASK_VARIANT")
    assert len(run_study(other, trials=2, progress=False).trials) == 2  # the same task joins
