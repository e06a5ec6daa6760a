"""Targets beyond the CPU provider: a study on OpenVINO end to end (its runtime made by
./setup.sh --target openvino, its agent started and stopped by the study), and the bad inputs of
targets whose runtime is missing: one line naming the fix, exit 2, nothing created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from search.cli.main import main
from tests.bad_inputs import TINY, snapshot
from tests.conftest import REPO

RUN = ["run", "--task", "tests.tiny_task:make_random_task", "--space", TINY[1]]


def _run_refused(argv: list[str], work: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """``main(argv)`` must exit 2 with one line on stderr and leave ``work`` as it was."""
    before = snapshot(work)
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert snapshot(work) == before  # no study, no results folder
    return err


@pytest.mark.parametrize(("hw", "fix"), [("openvino", "openvino"), ("qnn-sim", "qnn")])
def test_a_target_without_its_runtime_names_the_setup_step(hw, fix, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEARCH_RUNTIMES", str(tmp_path / "no-runtimes"))
    err = _run_refused(
        [*RUN, "--hw", hw, "--results-dir", str(tmp_path / "res")], tmp_path, capsys
    )
    assert f"./setup.sh --target {fix}" in err


def test_an_agent_without_the_profiles_provider_is_refused(tmp_path, monkeypatch, capsys):
    token = "a-long-enough-test-token"
    env = {**os.environ, "SEARCH_AGENT_TOKEN": token}
    agent = subprocess.Popen(  # this environment's onnxruntime: the CPU provider only
        [sys.executable, "-m", "search", "agent", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert agent.stdout is not None
        url = agent.stdout.readline().split()[3]
        monkeypatch.setenv("SEARCH_AGENT_TOKEN", token)
        argv = [*RUN, "--hw", "openvino", "--agent", url, "--results-dir", str(tmp_path / "r")]
        err = _run_refused(argv, tmp_path, capsys)
        assert "needs OpenVINOExecutionProvider" in err and "--target openvino" in err
    finally:
        agent.terminate()
        agent.wait(timeout=30)


@pytest.fixture(scope="module")
def openvino_runtime() -> Path:
    """./setup.sh --target openvino: the runtime is made once and reused (the step is
    idempotent; pip's cache keeps a fresh CI clone's install at about 30 s)."""
    proc = subprocess.run(
        ["bash", "setup.sh", "--target", "openvino"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
    assert "target openvino ok" in proc.stdout
    return REPO / ".runtimes" / "openvino"


@pytest.mark.slow
def test_a_study_on_openvino_end_to_end(openvino_runtime, teacher_cache, tiny_space):
    from search.config import load_profile, load_space
    from search.record import TrialRecord, baseline_of
    from search.study import StudySpec, run_study

    spec = StudySpec(
        task="tests.tiny_task:make_task",
        space=load_space(str(tiny_space)),
        profile=load_profile("openvino"),
        study_name="openvino",
        results_dir=teacher_cache,
    )
    study = run_study(spec, trials=2, progress=False)
    baseline = baseline_of(study)
    assert baseline is not None
    measured = baseline.measurement
    assert measured["providers"][0] == "OpenVINOExecutionProvider"
    assert measured["runtime"]["build"] == "onnxruntime-openvino"
    assert measured["runtime"]["openvino"] and measured["timing"] == "device"
    first = measured["latency"][0]
    assert first["steady"] is True and first["warmup_runs"] > 0  # settled before timing
    for t in study.trials:
        rec = TrialRecord.of(t)
        assert rec is not None and rec.providers[0] == "OpenVINOExecutionProvider"
        kernels = rec.kernels
        assert "OpenVINO runtime model" in kernels["method"], kernels
        assert isinstance(kernels["integer_layers"], int) and isinstance(
            kernels["float_layers"], int
        )
        assert (
            kernels["integer_layers"] + kernels["float_layers"] > 0 and kernels["partitions"] == 1
        )
        assert kernels["cpu_ep_layers"] == 0  # nothing left to the CPU provider
    csv = pd.read_csv(teacher_cache / "openvino" / "trials.csv")
    assert csv.providers.str.startswith("OpenVINOExecutionProvider").all()
    assert csv.integer_layers.notna().all()
    # The agent the study started from the runtime is gone.
    out = subprocess.run(["ps", "-eo", "ppid,args"], capture_output=True, text=True).stdout
    assert not [ln for ln in out.splitlines() if ln.split()[0] == str(os.getpid())
                and "search agent" in ln]  # fmt: skip


@pytest.mark.slow
def test_the_bench_measures_on_openvino_through_its_runtime(openvino_runtime, tmp_path, capsys):
    """``bench --hw openvino`` times every file in the runtime's agent (this onnxruntime has no
    OpenVINO provider): the sensitivity pass scores there, the confirmation runs in three fresh
    processes there, the report names the runtime's build, and no agent outlives the bench;
    ``--reconfirm`` starts its own agent the same way."""
    import json

    import onnxruntime as ort

    assert "OpenVINOExecutionProvider" not in ort.get_available_providers()
    out = tmp_path / "bench"
    argv = ["bench", "--hw", "openvino", "--task", "tests.tiny_task:make_task", "--space",
            TINY[1], "--trials", "1", "--seeds", "1", "--ratios", "0.5", "--rounds", "5",
            "--quiet-wait", "0", "--samplers", "", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    data = json.loads((out / "bench.json").read_text())
    ask = "import onnxruntime; print(onnxruntime.__version__)"
    version = subprocess.run(
        [str(openvino_runtime / "bin" / "python"), "-c", ask],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert data["onnxruntime"] == version != ort.__version__
    assert "openvino runtime" in data["measured_where"]
    assert data["confirmation"]["processes"] >= 3
    assert all(v["processes"] >= 3 for v in data["interleaved"].values())
    assert "openvino runtime" in (out / "bench.md").read_text()
    assert main(["bench", "--reconfirm", str(out), "--quiet-wait", "0"]) == 0
    (again,) = json.loads((out / "reconfirm.json").read_text())
    assert again["of"] == len(data["interleaved"]) - 1
    out_ps = subprocess.run(["ps", "-eo", "ppid,args"], capture_output=True, text=True).stdout
    assert not [ln for ln in out_ps.splitlines() if ln.split()[0] == str(os.getpid())
                and "search agent" in ln]  # fmt: skip


@pytest.mark.parametrize(
    ("studies", "needle"),
    [(["a"], "at least two different --study"), (["a", "a"], "at least two different"),
     (["a", "b"], "no study at")],
)  # fmt: skip
def test_compare_refuses_what_it_cannot_compare(studies, needle, tmp_path, capsys):
    argv = ["compare", "--results-dir", str(tmp_path / "res"), "--out", str(tmp_path / "out")]
    for name in studies:
        argv += ["--study", name]
    assert needle in _run_refused(argv, tmp_path, capsys)
