"""A user's task factory that fails: one line naming the user's line, the flag to pass, or
every line of the message that matters; exit 2 and nothing created."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.cli.main import main
from search.errors import TaskError
from search.tasks import load_task, task_and_options
from tests.conftest import REPO

MISSING = "def make_task(*, seed, cache_dir, data, classes=3):\n    raise AssertionError\n"
NO_FLAG = "def make_task(*, seed, cache_dir, classes):\n    raise AssertionError\n"
STATE_DICT = """\
import torch
from torch import nn


def make_task(*, seed, cache_dir):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))
    model.load_state_dict({f"head.{i}.weight": torch.zeros(1) for i in range(9)})
"""
NUMPY = "import numpy as np\n\n\ndef make_task(*, seed, cache_dir):\n    np.load('gone.npy')\n"
HELPER = "def load(path):\n    return open(path).read()\n"
USES_HELPER = (
    "from t_helper import load\n\n\ndef make_task(*, seed, cache_dir, data):\n"
    "    return load(data)\n"
)


def _cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(
        ["run", "--space", str(REPO / "tests/data/tiny_space.yaml")]
        + ["--hw", str(REPO / "tests/data/tiny_cpu.yaml"), "--trials", "1", "--no-progress"]
        + ["--results-dir", str(tmp_path / "results"), *extra]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "results").exists()
    return code, err


def test_a_missing_option_names_the_flag_to_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "t_data.py").write_text(MISSING)
    _, err = _cli(tmp_path, capsys, "--task", f"{tmp_path / 't_data.py'}:make_task")
    assert "needs option 'data': pass --data" in err and "__init__.py" not in err


def test_an_option_without_a_flag_points_at_a_task_yaml(tmp_path: Path) -> None:
    (tmp_path / "t_classes.py").write_text(NO_FLAG)
    spec = f"{tmp_path / 't_classes.py'}:make_task"
    with pytest.raises(TaskError, match="needs option 'classes', which has no flag: .*YAML"):
        task_and_options(spec, model=None, weights=None, data=None)
    with pytest.raises(TaskError, match="needs option 'classes'"):
        load_task(spec, seed=0, cache_dir=tmp_path)  # the API path says the same


def test_a_factory_that_cannot_take_seed_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "t_pos.py").write_text("def make_task(data, /):\n    raise AssertionError\n")
    with pytest.raises(TaskError, match=r"cannot be called as make_task\(seed=..."):
        load_task(f"{tmp_path / 't_pos.py'}:make_task", seed=0, cache_dir=tmp_path)


def test_a_state_dict_mismatch_keeps_its_keys_at_the_users_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "t_sd.py").write_text(STATE_DICT)
    _, err = _cli(tmp_path, capsys, "--task", f"{tmp_path / 't_sd.py'}:make_task")
    assert "at t_sd.py:7: RuntimeError: Error(s) in loading state_dict" in err
    assert 'Missing key(s) in state_dict: "0.weight", "0.bias", "2.weight", "2.bias"' in err
    assert 'Unexpected key(s) in state_dict: "head.0.weight"' in err and "and 4 more" in err
    assert "module.py" not in err


@pytest.mark.parametrize("case", ["numpy", "helper"])
def test_the_deepest_frame_of_the_users_code_is_named(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))  # t_case.py imports t_helper.py next to it
    (tmp_path / "t_helper.py").write_text(HELPER)
    (tmp_path / "t_case.py").write_text(NUMPY if case == "numpy" else USES_HELPER)
    options = {"data": str(tmp_path / "gone")} if case == "helper" else {}
    with pytest.raises(TaskError) as info:
        load_task(
            f"{tmp_path / 't_case.py'}:make_task", seed=0, cache_dir=tmp_path, options=options
        )
    at = "t_helper.py:2" if case == "helper" else "t_case.py:5"
    assert f"failed to load at {at}: FileNotFoundError" in str(info.value)
