"""``reproduce.py`` of a study on the user's own task reruns the trial from any folder, and a
rerun whose inputs are gone is one line and creates nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import DATA, REPO

TASK = """
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from search.tasks import Task


def net():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 2))


def make_task(*, seed, cache_dir, data, weights):
    arrays = np.load(data)
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    model = net()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    split = TensorDataset(x, y)
    return Task(name="mine", model=model.eval(), train=split, val=split, test=split,
                calibration=split, example_input=x[:1].clone(), ignored_layers=["4"],
                key="mine")
"""


def _project(tmp_path: Path) -> tuple[Path, list[str]]:
    """A user's project folder: their task file, data and weights, given by relative paths."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "my_task.py").write_text(TASK)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 1, 8, 8)).astype("f4")
    np.savez(proj / "data.npz", x=x, y=(x.mean((1, 2, 3)) > 0).astype("i8"))
    sys.path.insert(0, str(proj))
    try:
        import my_task  # the user's own file, to save initial weights

        torch.manual_seed(0)
        torch.save(my_task.net().state_dict(), proj / "w.pt")
    finally:
        sys.path.remove(str(proj))
        sys.modules.pop("my_task", None)
    args = ["--task", "my_task.py:make_task", "--data", "data.npz", "--weights", "w.pt"]
    return proj, args


def _search(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_reproduce_runs_from_anywhere_and_refuses_missing_inputs(tmp_path):
    proj, task_args = _project(tmp_path)
    space, profile = DATA / "tiny_space.yaml", DATA / "tiny_cpu.yaml"
    run = ["-m", "search", "run", *task_args, "--space", str(space), "--hw", str(profile),
           "--trials", "1", "--study", "mine", "--no-progress"]  # fmt: skip
    done = _search(*run, cwd=proj)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "export"
    done = _search("-m", "search", "export", "--study", "mine", "--trial", "0", "--out",
                   str(out), "--results-dir", str(proj / "results"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    info = json.loads((out / "trial.json").read_text())
    read = info["reproduce"]["inputs"]
    assert read["data"]["path"] == str(proj / "data.npz") and read["weights"]["sha256"]
    assert (out / "task" / "my_task.py").read_text() == TASK
    assert "-rerun" in info["reproduce"]["study_command"]  # a new study, not a resume

    for where in (proj, tmp_path / "elsewhere"):  # the project's folder, and another one
        where.mkdir(exist_ok=True)
        done = _search(str(out / "reproduce.py"), cwd=where)
        assert done.returncode == 0, done.stderr[-2000:]
        assert (where / "results" / "mine-trial0" / "study.db").is_file()

    (proj / "data.npz").rename(proj / "moved.npz")
    gone = tmp_path / "gone"
    gone.mkdir()
    done = _search(str(out / "reproduce.py"), cwd=gone)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "data.npz is gone" in lines[0]
    assert list(gone.iterdir()) == []  # no study, no results folder
