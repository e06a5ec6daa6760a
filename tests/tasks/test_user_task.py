"""A new user following docs/your-own-model.md: their own model and images through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("torchvision")

from search.cli.main import main  # noqa: E402
from search.tasks import load_task, read_task_file  # noqa: E402
from search.tasks.vision import build_model  # noqa: E402
from tests.conftest import REPO as ROOT  # noqa: E402
from tests.tasks.test_vision import SIZE, check_trials, write_configs, write_image_folder  # noqa: E402


def save_weights(path: Path, model: str = "resnet18", classes: int = 2) -> Path:
    torch.manual_seed(0)
    torch.save(build_model(model, num_classes=classes).state_dict(), path)
    return path


@pytest.mark.slow
def test_cli_study_with_a_user_task_module(tmp_path: Path) -> None:
    import optuna

    data = write_image_folder(tmp_path / "photos", per_class=8)
    weights = save_weights(tmp_path / "mnv3.pt", model="mobilenet_v3_small")
    space, profile = write_configs(tmp_path / "cfg")
    results = tmp_path / "results"
    cmd = [
        sys.executable, "-m", "search", "run",
        "--task", "examples/my_task.py:make_task",
        "--model", "mobilenet_v3_small", "--data", str(data), "--weights", str(weights),
        "--space", str(space), "--hw", str(profile),
        "--trials", "2", "--results-dir", str(results), "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trial 1:" in done.stdout + done.stderr
    study_dir = results / "my_task-mobilenet_v3_small-fastcpu"
    assert (study_dir / "trials.csv").is_file()
    study = optuna.load_study(study_name=study_dir.name, storage=f"sqlite:///{study_dir}/study.db")
    check_trials(study, results)


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    space, profile = write_configs(tmp_path / "cfg")
    code = main(
        ["run", "--space", str(space), "--hw", str(profile), "--trials", "1"]
        + ["--results-dir", str(tmp_path / "results"), "--no-progress", *extra]
    )
    return code, capsys.readouterr().err


@pytest.mark.parametrize("problem", ["corrupt", "wrong_arch", "empty_data", "missing_data"])
def test_bad_inputs_exit_2_with_one_line_and_no_study(
    problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_image_folder(tmp_path / "imgs", classes=2, per_class=3)
    weights = save_weights(tmp_path / "w.pt")
    if problem == "corrupt":
        bad = tmp_path / "corrupt.pt"
        bad.write_bytes(weights.read_bytes()[:4096])
        weights = bad
    elif problem == "wrong_arch":
        weights = save_weights(tmp_path / "mnv2.pt", model="mobilenet_v2")
    elif problem == "empty_data":
        data = tmp_path / "empty"
        data.mkdir()
    else:
        data = tmp_path / "no-such-folder"
    code, err = _run(
        tmp_path, capsys, "--task", "imagefolder", "--model", "resnet18",
        "--weights", str(weights), "--data", str(data),
    )  # fmt: skip
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    expected = {
        "corrupt": "cannot read weights",
        "wrong_arch": "do not fit resnet18",
        "empty_data": "no images",
        "missing_data": "does not exist",
    }[problem]
    assert expected in err
    assert not (tmp_path / "results").exists()  # nothing created: no study, no database


def test_task_yaml_resolves_paths_next_to_it(tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "proj" / "imgs", per_class=3)
    save_weights(tmp_path / "proj" / "w.pt")
    task_file = tmp_path / "proj" / "task.yaml"
    task_file.write_text(
        "task: imagefolder\nmodel: resnet18\nweights: w.pt\ndata: imgs\nimage_size: 32\n"
    )
    spec, options = read_task_file(task_file)
    assert spec == "imagefolder" and options["data"] == str(data)
    task = load_task(spec, seed=0, cache_dir=tmp_path, options=options)
    assert task.example_input.shape == (1, 3, SIZE, SIZE)


def test_unknown_option_and_failing_factory_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _run(tmp_path, capsys, "--task", "digits", "--model", "resnet18")
    assert code == 2 and "takes no option(s) model" in err
    (tmp_path / "broken.py").write_text(
        "def make_task(*, seed, cache_dir, data):\n    return open(data).read()\n"
    )
    code, err = _run(
        tmp_path, capsys, "--task", f"{tmp_path / 'broken.py'}:make_task", "--data", "nowhere"
    )
    assert code == 2 and "broken.py:2: FileNotFoundError" in err and err.count("\n") == 1
    assert not (tmp_path / "results").exists()
