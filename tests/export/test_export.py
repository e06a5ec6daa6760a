"""Export a real trial of a tiny study and load its checkpoint where no search code exists;
rebuild the study a trial came from (command and reproduce.py) from what the study stored."""

from __future__ import annotations

import hashlib
import json
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pytest
from optuna.trial import TrialState, create_trial

from search.cli.main import build_parser, main
from search.config import load_profile, load_space
from search.errors import SearchError
from search.export.readme import readme
from search.export.reproduce import reproduce_script, run_arguments
from search.export.trial import export_trial
from search.record import BaselineRecord, TrialRecord
from search.study import StudySpec, run_study
from search.tasks import load_task, stack

TASK = "tests.tiny_task:make_random_task"
SPACE = """
search: {sampler: random, trials: 2, startup_trials: 1}
prune: {ratio: {low: 0.2, high: 0.5}}
distill: {epochs: 1, batch_size: 16}
"""
PROFILE = """
providers: [{name: CPUExecutionProvider}]
round_to: 2
measure: {warmup_runs: 1, warmup_seconds: 0, min_runs: 5, min_seconds: 0, memory_runs: 1}
"""
# Run in a fresh interpreter where importing search fails: the checkpoint must need torch only.
LOAD = """
import sys
sys.modules["search"] = None
import numpy as np, torch
model = torch.export.load(sys.argv[1]).module()
with torch.no_grad():
    out = model(torch.from_numpy(np.load(sys.argv[2])))
np.save(sys.argv[3], out.numpy())
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[optuna.Study, Path]:
    root = tmp_path_factory.mktemp("export")
    (root / "space.yaml").write_text(SPACE)
    (root / "hw.yaml").write_text(PROFILE)
    spec = StudySpec(
        task=TASK,
        space=load_space(str(root / "space.yaml")),
        profile=load_profile(str(root / "hw.yaml")),
        study_name="tiny",
        results_dir=root / "results",
    )
    study = run_study(spec, trials=2, progress=False)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    return study, root


def _test_inputs(root: Path) -> np.ndarray:
    x, _ = stack(load_task(TASK, seed=0, cache_dir=root).test)
    return x.numpy()


def _torch_outputs(program: Path, x: np.ndarray, tmp: Path) -> np.ndarray:
    np.save(tmp / "x.npy", x)
    subprocess.run(
        [sys.executable, "-c", LOAD, str(program), str(tmp / "x.npy"), str(tmp / "y.npy")],
        check=True,
        cwd=tmp,
        timeout=120,
    )
    return np.load(tmp / "y.npy")


def _onnx_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.slow
def test_export_float_trial(tiny: tuple[optuna.Study, Path], tmp_path: Path) -> None:
    study, root = tiny
    out = tmp_path / "out"
    code = main(
        [
            "export",
            "--study",
            "tiny",
            "--results-dir",
            str(root / "results"),
            "--storage",
            f"sqlite:///{root / 'results' / 'tiny' / 'study.db'}",
            "--trial",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    measured = root / "results" / "tiny" / "artifacts" / "1" / "model.onnx"
    assert (out / "model.onnx").read_bytes() == measured.read_bytes()
    info = json.loads((out / "trial.json").read_text())
    rec = study.trials[1].user_attrs["record"]
    assert info["trial"] == 1 and info["config"] == rec["config"]
    assert info["measurements"]["accuracy"] == rec["accuracy"]
    assert (
        info["files"]["model.onnx"]["sha256"] == hashlib.sha256(measured.read_bytes()).hexdigest()
    )
    assert info["versions"]["torch"] and info["versions"]["onnxruntime"]
    assert (
        info["profile"]["name"] == "hw"
        and "run --task tests.tiny_task:make_random_task" in (info["reproduce"]["study_command"])
    )
    assert "torch.export.load" in (out / "README.md").read_text()
    compile((out / "reproduce.py").read_text(), "reproduce.py", "exec")

    x = _test_inputs(root)
    got = _torch_outputs(out / "model.pt2", x, tmp_path)
    np.testing.assert_allclose(got, _onnx_outputs(out / "model.onnx", x), atol=1e-4, rtol=1e-4)
    # The recorded test figure is what the exported file gives on the test split (the
    # objective, ``accuracy``, is on the validation split).
    _, y = stack(load_task(TASK, seed=0, cache_dir=root).test)
    assert float((got.argmax(1) == y.numpy()).mean()) == pytest.approx(rec["test_accuracy"])


@pytest.mark.slow
def test_export_quantized_trial_ships_both_files(
    tiny: tuple[optuna.Study, Path], tmp_path: Path
) -> None:
    """A trial measured from model.q.onnx: that file is shipped exactly, the float ONNX beside
    it, and the checkpoint matches the float file."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    study, root = tiny
    src = root / "results" / "tiny" / "artifacts" / "0"
    x = _test_inputs(root)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": x[i : i + 1]} for i in range(8)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(
        str(src / "model.onnx"),
        str(src / "model.q.onnx"),
        Reader(),
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    t = study.trials[0]
    rec = dict(t.user_attrs["record"])
    rec["measured_onnx"] = str(src / "model.q.onnx")
    rec["measurement"] = {
        **rec["measurement"],
        "size_bytes": (src / "model.q.onnx").stat().st_size,
    }
    rec["kernels"] = {"integer_layers": 5, "float_layers_after_dequantize": 2}
    copy = optuna.create_study(directions=["maximize", "minimize"], study_name="q")
    copy.add_trial(
        create_trial(
            state=TrialState.COMPLETE,
            values=t.values,
            params=t.params,
            distributions=t.distributions,
            user_attrs={"record": rec},
        )
    )

    paths = export_trial(copy, number=0, out_dir=tmp_path / "q", study_dir=tmp_path)
    assert paths["measured"].name == "model.q.onnx"
    assert paths["measured"].read_bytes() == (src / "model.q.onnx").read_bytes()
    assert paths["float_onnx"].read_bytes() == (src / "model.onnx").read_bytes()
    got = _torch_outputs(paths["checkpoint"], x, tmp_path)
    np.testing.assert_allclose(got, _onnx_outputs(paths["float_onnx"], x), atol=1e-4, rtol=1e-4)
    assert "quantized file that was measured" in paths["readme"].read_text()


@pytest.mark.slow
def test_export_refuses_unfinished_or_changed_trials(
    tiny: tuple[optuna.Study, Path], tmp_path: Path
) -> None:
    study, root = tiny
    with pytest.raises(SearchError, match="no trial 9"):
        export_trial(study, number=9, out_dir=tmp_path, study_dir=root / "results" / "tiny")
    failed = optuna.create_study(directions=["maximize", "minimize"])
    failed.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "boom"}))
    with pytest.raises(SearchError, match="did not complete \\(boom\\)"):
        export_trial(failed, number=0, out_dir=tmp_path / "out", study_dir=tmp_path / "s")
    t = study.trials[1]
    rec = {**t.user_attrs["record"]}
    rec["measurement"] = {**rec["measurement"], "size_bytes": 1}
    changed = optuna.create_study(directions=["maximize", "minimize"])
    changed.add_trial(
        create_trial(state=TrialState.COMPLETE, values=t.values, user_attrs={"record": rec})
    )
    with pytest.raises(SearchError, match="changed after measurement"):
        export_trial(changed, number=0, out_dir=tmp_path / "out", study_dir=tmp_path / "s")


def test_study_command_names_files_and_task_options():
    settings = {
        "task": "vision",
        "space": "mine",
        "profile": "cpu",
        "seed": 3,
        "task_options": {"model": "resnet18", "weights": "w.pt", "limit": "50"},
    }
    sources = {"space": "/home/u/mine.yaml", "profile": "/repo/hw_profiles/cpu.yaml"}
    cmd = run_arguments(settings, "s1", sources).command()
    assert "--space /home/u/mine.yaml" in cmd and "--hw cpu " in cmd and "--seed 3" in cmd
    assert "--model resnet18 --weights w.pt" in cmd and "limit=50" in cmd


def _vision_study(tmp_path: Path) -> optuna.Study:
    """A study as `run --task vision --model resnet18 ...` with files given by path stores it."""
    (tmp_path / "mine.yaml").write_text(SPACE)
    (tmp_path / "edge").mkdir()
    (tmp_path / "edge" / "edge.yaml").write_text(PROFILE)
    study = optuna.create_study(directions=["maximize", "minimize"], study_name="vis")
    options = {"data": "/data/flowers", "limit": "50", "mean": "[0.5, 0.4, 0.3]"}
    study.set_user_attr(
        "settings",
        {
            "task": "vision",
            "space": "mine",
            "profile": "edge",
            "seed": 3,
            "task_options": {"model": "resnet18", "weights": "/w/r18.pt", **options},
        },
    )
    study.set_user_attr(
        "sources",
        {"space": str(tmp_path / "mine.yaml"), "profile": str(tmp_path / "edge" / "edge.yaml")},
    )
    study.add_trial(
        create_trial(
            state=TrialState.COMPLETE,
            values=[0.9, 1.0],
            params={"prune_ratio": 0.3},
            distributions={"prune_ratio": optuna.distributions.FloatDistribution(0.2, 0.5)},
        )
    )
    return study


def test_reproduce_script_rebuilds_vision_tasks_and_files_given_by_path(tmp_path: Path) -> None:
    study = _vision_study(tmp_path)
    script = tmp_path / "reproduce.py"
    script.write_text(reproduce_script(study, study.trials[0]))
    # Imported (not run as __main__), the script builds its spec and runs nothing.
    ns = runpy.run_path(str(script), run_name="reproduce")
    spec = ns["SPEC"]
    assert spec.task == "vision" and spec.seed == 3 and spec.study_name == "vis-trial0"
    assert spec.task_options == {
        "model": "resnet18",
        "weights": "/w/r18.pt",
        "data": "/data/flowers",
        "limit": 50,
        "mean": [0.5, 0.4, 0.3],
    }
    assert spec.space.path == str(tmp_path / "mine.yaml")
    assert spec.profile.path == str(tmp_path / "edge" / "edge.yaml")
    assert ns["PARAMS"] == {"prune_ratio": 0.3}
    assert not (tmp_path / "results").exists()


def test_the_command_and_the_script_rebuild_the_same_study(tmp_path: Path) -> None:
    study = _vision_study(tmp_path)
    settings, sources = study.user_attrs["settings"], study.user_attrs["sources"]
    words = shlex.split(run_arguments(settings, "vis", sources).command(), comments=True)
    args = build_parser().parse_args(words[3:])
    script = tmp_path / "reproduce.py"
    script.write_text(reproduce_script(study, study.trials[0]))
    spec = runpy.run_path(str(script), run_name="reproduce")["SPEC"]
    assert (args.task, args.seed, args.space, args.hw) == (
        spec.task,
        spec.seed,
        spec.space.path,
        spec.profile.path,
    )
    assert {k: getattr(args, k) for k in ("model", "weights", "data")} == {
        k: spec.task_options[k] for k in ("model", "weights", "data")
    }


def test_readme_names_the_tasks_metric() -> None:
    info = {
        "trial": 1,
        "study": "s",
        "metric": "top-5 accuracy",
        "measurements": {"accuracy": 0.91, "latency_p50_ms": 2.0, "latency_p90_ms": None},
        "baseline": {"accuracy": 0.93},
        "input": {"name": "input", "shape": ["batch", 3, 8, 8], "dtype": "float32"},
        "measured_file": "model.onnx",
        "reproduce": {"study_command": "python -m search run", "note": "latency varies"},
    }
    record = TrialRecord.from_json(info["measurements"])
    baseline = BaselineRecord.from_json({**info["baseline"], "latency_p50_ms": 4.0})
    text = readme(info, record, baseline)
    assert "| top-5 accuracy (test split, ONNX Runtime) | 0.9100 | 0.9300 |" in text
    assert "2.000 / - |" in text  # a missing number reads as -


class _Marker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.path}",))


def _shared_copy(root: Path, dest: Path) -> Path:
    """The tiny study as someone else's folder, copied to ``dest``."""
    import shutil

    shutil.copytree(root / "results" / "tiny", dest / "tiny")
    return dest


@pytest.mark.slow
def test_export_never_runs_code_from_a_study_folder(
    tiny: tuple[optuna.Study, Path], tmp_path: Path, monkeypatch, capfd
) -> None:
    """rel-export-unpickles-artifacts: a study folder from elsewhere, whose recorded artifact
    paths do not exist here. A replaced model.pt2 is refused and a pickled model.pt (the old
    layout) is never loaded; nothing but the export folders is written."""
    import pickle

    import torch

    from tests.bad_inputs import snapshot

    _, root = tiny
    marker = tmp_path / "PWNED_export"
    changed = _shared_copy(root, tmp_path / "changed")
    (changed / "tiny" / "artifacts" / "1" / "model.pt2").write_bytes(pickle.dumps(_Marker(marker)))
    old = _shared_copy(root, tmp_path / "old")
    (old / "tiny" / "artifacts" / "1" / "model.pt2").unlink()
    (old / "tiny" / "artifacts" / "1" / "model.pt").write_bytes(pickle.dumps(_Marker(marker)))

    def never(*args, **kwargs):
        raise AssertionError("export loaded a file that could run code")

    for owner, name in ((torch, "load"), (torch.export, "load"), (pickle, "load")):
        monkeypatch.setattr(owner, name, never)
    monkeypatch.setattr(pickle, "loads", never)
    monkeypatch.chdir(tmp_path)
    recorded = root / "results" / "tiny" / "artifacts"
    recorded.rename(root / "results" / "tiny" / "elsewhere")  # as on another machine
    before = snapshot(tmp_path)
    try:
        codes = []
        for folder, out in ((changed, "o_changed"), (old, "o_old")):
            storage = f"sqlite:///{folder / 'tiny' / 'study.db'}"
            argv = ["export", "--study", "tiny", "--results-dir", str(folder)]
            argv += ["--storage", storage, "--trial", "1", "--out", str(tmp_path / out)]
            codes.append(main(argv))
    finally:
        (root / "results" / "tiny" / "elsewhere").rename(recorded)
    err = capfd.readouterr().err
    assert codes == [2, 0], err
    assert "not the file the trial wrote" in err and "does not load pickles" in err
    assert not marker.exists()
    assert not (tmp_path / "o_changed").exists()
    assert not (tmp_path / "o_old" / "model.pt2").exists()
    assert "No PyTorch program" in (tmp_path / "o_old" / "README.md").read_text()
    after = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("o_old")}
    assert after == before


@pytest.mark.slow
def test_export_refuses_a_folder_with_files_unless_forced(
    tiny: tuple[optuna.Study, Path], tmp_path: Path, capfd
) -> None:
    """rel-export-overwrites-user-files."""
    _, root = tiny
    out = tmp_path / "userdir"
    out.mkdir()
    (out / "README.md").write_text("my own notes - do not lose\n")
    (out / "trial.json").write_text('{"mine": true}\n')
    common = ["export", "--study", "tiny", "--results-dir", str(root / "results")]
    common += ["--storage", f"sqlite:///{root / 'results' / 'tiny' / 'study.db'}", "--trial", "1"]
    assert main([*common, "--out", str(out)]) == 2
    assert "--force" in capfd.readouterr().err
    assert (out / "README.md").read_text() == "my own notes - do not lose\n"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "trial.json"]
    assert main([*common, "--out", str(out), "--force"]) == 0
    assert json.loads((out / "trial.json").read_text())["trial"] == 1
