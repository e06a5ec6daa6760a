"""Each failing input users found (``../shared/cases/<name>/CASE.md``, files copied to
``tests/cases/``) run as its case says, with the behaviour it expected.

The cases that run whole studies are marked ``slow`` and measure with the test profile's short
repeats (``tests/data/tiny_cpu.yaml``, the CPU provider like the cases' ``cpu``) where the
profile is not what the case is about; the ones that must stop before a study exists run the
command line in this process.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.cli.main import main
from tests.conftest import DATA, REPO

CASES = Path(__file__).parent / "cases"


def _cli(*args: str, results: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """The case's command, as a user runs it: ``python -m search run ...``."""
    import os

    args = tuple(str(DATA / "tiny_cpu.yaml") if a == "cpu" else a for a in args)
    if "--hw" not in args:
        args = ("--hw", str(DATA / "tiny_cpu.yaml"), *args)
    cmd = [sys.executable, "-m", "search", "run", *args, "--results-dir", str(results)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)


def _study(results: Path, name: str) -> optuna.Study:
    storage = f"sqlite:///{results / name / 'study.db'}"
    return optuna.load_study(study_name=name, storage=storage)


def _one_line_exit_2(capsys, argv: list[str], results: Path) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert not results.exists() or not any(results.iterdir())  # no study, nothing on disk
    return err[0]


def _records(study: optuna.Study) -> list[dict]:
    # Trials still queued when --trials ran out (the warm start, a student's other plans) wait
    # for a later run; every trial that ran completed.
    trials = [t for t in study.trials if t.state != TrialState.WAITING]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * len(trials), [
        t.user_attrs.get("fail_reason") for t in trials
    ]
    return [t.user_attrs["record"] for t in trials]


# ----------------------------------------------------------- stop before a study, one line


def test_nan_metric_is_one_line_exit_2_before_a_study(capsys, tmp_path):
    case = CASES / "nan-metric"
    results = tmp_path / "results"
    argv = ["run", "--hw", "cpu", "--task", f"{case}/nan_metric_task.py:make_task", "--space",
            f"{case}/tiny_space.yaml", "--trials", "2", "--study", "nan_metric", "--results-dir",
            str(results), "--no-progress"]  # fmt: skip
    line = _one_line_exit_2(capsys, argv, results)
    assert "'mean_recall' returned nan" in line


@pytest.mark.parametrize(
    ("space", "says"),
    [
        ("sp_emptygroups.yaml", "groups is empty, so no layer would ever be quantized"),
        ("sp_nomatch.yaml", "group 'ghost' ['no_such_layer.*'] matches no layer of the model"),
        ("sp_lr_nomatch.yaml", "lowrank.layers: pattern 'no_such_layer.*' matches no Linear"),
    ],
)
def test_space_groups_and_patterns_that_match_nothing_are_one_line(space, says, capsys, tmp_path):
    results = tmp_path / "results"
    argv = ["run", "--task", "tests.tiny_task:make_random_task", "--space",
            str(DATA / "tiny_space.yaml"), "--hw", str(DATA / "tiny_cpu.yaml"), "--trials", "1",
            "--no-progress", "--space", str(CASES / "rel-space-groups-unchecked" / space),
            "--study", "a", "--results-dir", str(results)]  # fmt: skip
    line = _one_line_exit_2(capsys, argv, results)
    assert says in line
    if space != "sp_emptygroups.yaml":
        assert "top-level modules are: stem, layers, pool, fc" in line


@pytest.mark.parametrize(
    ("factory", "says"),
    [
        ("t_model_str.py", "Task.model is a str, not a torch nn.Module"),
        ("t_shape.py", "accuracy needs (N, classes) logits and (N,) labels, not (32, 4, 3)"),
        ("t_tuple_out.py", "the model returns a tuple of 2 ((2, 4), (2, 8)): say how to read"),
        ("t_empty_train.py", "the train split is empty"),
    ],
)
def test_a_task_with_an_unusable_model_or_data_is_one_line(factory, says, capsys, tmp_path):
    """task-bad-model-tracebacks: each factory's Task, refused before any study."""
    case = CASES / "task-bad-model-tracebacks"
    results = tmp_path / "results"
    argv = ["run", "--task", f"{case}/{factory}:make_task", "--hw", str(DATA / "tiny_cpu.yaml"),
            "--space", str(DATA / "tiny_space.yaml"), "--trials", "1", "--study", "bad",
            "--results-dir", str(results), "--no-progress"]  # fmt: skip
    assert says in _one_line_exit_2(capsys, argv, results)


# ----------------------------------------------------------- whole studies (slow)


@pytest.mark.slow
def test_glu_channel_halving_trials_complete(tmp_path):
    case = CASES / "glu-channel-halving"
    proc = _cli("--hw", "cpu", "--task", f"{case}/glu1d_task.py:make_task", "--space",
                f"{case}/tiny_space.yaml", "--trials", "2", "--study", "glu1d", "--no-progress",
                results=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for rec in _records(_study(tmp_path, "glu1d")):
        # Both GLU halves were cut alike: only the head was left alone.
        assert set(rec["steps"]["prune"]["left_alone"]) == {"head"}
        assert rec["sizes"]["prune"]["params"] < rec["sizes"]["base"]["params"]


@pytest.mark.slow
def test_shufflenet_prune_zerodiv_trials_complete_with_the_shuffle_left_alone(tmp_path):
    case = tmp_path / "case"
    shutil.copytree(CASES / "shufflenet-prune-zerodiv", case)
    subprocess.run([sys.executable, str(case / "make_data.py")], check=True, timeout=300)
    proc = _cli("--hw", "cpu", "--task", str(case / "task.yaml"), "--space",
                str(case / "tiny_space.yaml"), "--trials", "2", "--study", "shuffle",
                "--no-progress", results=tmp_path / "results")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "pruning leaves" in proc.stderr and "channel shuffle" in proc.stderr
    for rec in _records(_study(tmp_path / "results", "shuffle")):
        alone = rec["steps"]["prune"]["left_alone"]
        assert any("channel shuffle" in why for why in alone.values())
        assert rec["sizes"]["prune"]["params"] < rec["sizes"]["base"]["params"]


@pytest.mark.slow
def test_lstm_export_keeps_a_dynamic_batch_and_trials_complete(tmp_path):
    case = CASES / "lstm-export-fixed-batch"
    proc = _cli("--hw", "cpu", "--task", f"{case}/lstm_task.py:make_task", "--space",
                f"{case}/tiny_space.yaml", "--trials", "2", "--study", "lstm", "--no-progress",
                results=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    study = _study(tmp_path, "lstm")
    assert study.user_attrs["model"]["export"]["trace_batch"] == 2
    assert study.user_attrs["baseline"]["accuracy"] >= 0
    for rec in _records(study):
        assert "rnn" not in rec["steps"]["prune"]["left_alone"]  # the LSTM's hidden units are cut


@pytest.mark.slow
@pytest.mark.parametrize(
    ("hw", "space"), [("cpu", "tiny_space.yaml"), ("cpu_fp16_only.yaml", "fp16_space.yaml")]
)
def test_resize_quantizes_without_symbolic_shape_inference(hw, space, tmp_path):
    case = CASES / "resize-symbolic-shape-crash"
    hw = hw if hw == "cpu" else str(case / hw)  # "cpu": the test profile (see _cli)
    proc = _cli("--hw", hw, "--task", f"{case}/upsample_task.py:make_task", "--space",
                str(case / space), "--trials", "2", "--study", "up", "--no-progress",
                results=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    records = _records(_study(tmp_path, "up"))
    if hw == "cpu":
        assert "without symbolic shape inference" in proc.stderr  # said once, at the start
        assert all(rec["kernels"]["integer_layers"] >= 1 for rec in records)
    else:
        assert all(rec["quantize"]["calibration"] is None for rec in records)  # never calibrated
        assert not (tmp_path / "up" / "artifacts" / "baseline" / "calibration").exists()
    assert not list(REPO.glob("sym_shape_infer_temp*"))


# ----------------------------------------------------------- torchvision models (tv-* cases)


def stripes(folder: Path, per_class: int = 20, size: int = 64) -> Path:
    """The tv-* cases' images: 3 classes of stripes and checks (tv-shufflenet_v2_x0_5/CASE.md)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for c, name in enumerate(["red_hstripes", "green_vstripes", "blue_checks"]):
        d = folder / name
        d.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            p = int(rng.integers(6, 14))
            ph, h = int(rng.integers(0, p)), p // 2
            pats = [((yy + ph) // h) % 2, ((xx + ph) // h) % 2]
            pat = [*pats, (((xx + ph) // h) + ((yy + ph) // h)) % 2][c]
            img = np.zeros((size, size, 3), np.float32)
            img[..., c] = 160 + 90 * pat
            img += rng.normal(0, 20, img.shape)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{k:03d}.png")
    return folder


def checkpoint(arch: str, path: Path) -> Path:
    import torch

    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None, num_classes=3)
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.slow
def test_tv_shufflenet_prunes_around_the_shuffle_with_the_default_space(tmp_path):
    """The case's command, with ``--image-size 64`` instead of a task file for the size."""
    weights = checkpoint("shufflenet_v2_x0_5", tmp_path / "shufflenet.pt")
    imgs = stripes(tmp_path / "imgs")
    args = ["--task", "imagefolder", "--model", "shufflenet_v2_x0_5", "--weights", str(weights),
            "--data", str(imgs), "--image-size", "64", "--trials", "2", "--study", "tv-shuffle",
            "--no-progress"]  # fmt: skip
    proc = _cli(*args, results=tmp_path / "results")
    assert proc.returncode == 0, proc.stderr
    study = _study(tmp_path / "results", "tv-shuffle")
    assert study.user_attrs["model"]["groups_source"] == "derived"
    assert study.user_attrs["settings"]["task_options"]["image_size"] == "64"
    for rec in _records(study):
        assert any(
            "channel shuffle" in why for why in rec["steps"]["prune"]["left_alone"].values()
        )
        assert rec["kernels"]["integer_layers"] >= 1 or not rec["quantize"]["quantized"]


def _vision_task(arch: str, tmp_path: Path):
    from search.tasks.vision import make_vision_task

    weights = checkpoint(arch, tmp_path / f"{arch}.pt")
    data = stripes(tmp_path / "imgs")
    return make_vision_task(model=arch, data=data, seed=0, weights=weights, image_size=64)


@pytest.mark.slow
def test_tv_convnext_tiny_exports_with_a_dynamic_batch_before_any_study(tmp_path):
    """What failed was the baseline's export, traced at batch 1; the checks before the study
    export the same model the same way the baseline is exported."""
    from search.config import load_space
    from search.study.model_checks import check_model

    checks = check_model(_vision_task("convnext_tiny", tmp_path), load_space("default"))
    assert checks.export["exporter"] == "dynamo" and checks.export["trace_batch"] == 2
    assert max(checks.export["verified"].values()) < 1e-3
    assert not checks.prune_plan.error


@pytest.mark.slow
def test_tv_mobilenet_v2_calibrates_48_images_with_every_method(tmp_path):
    """The README's command on a 60-image folder: 48 training images calibrate (32 + 16 broke
    the histogram calibrators)."""
    from search.compress.onnx_export import export_onnx
    from search.compress.quantize.calibration import calibrate
    from search.tasks import stack

    task = _vision_task("mobilenet_v2", tmp_path)
    inputs = stack(task.calibration)[0].numpy()
    assert len(inputs) == 48
    path = export_onnx(task.model, task.example_input, tmp_path / "m.onnx")
    for method in ("entropy", "percentile", "minmax"):
        calibrate(path, inputs, method=method, cache_dir=tmp_path / "calib")
