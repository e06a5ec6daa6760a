"""The cases of issue 17 that need more than one bad command line: Ctrl-C at awkward moments,
study names through the API, a disk too small or filling up during a run, crafted data files."""

from __future__ import annotations

import errno
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from search.cli.main import main
from search.errors import SearchError
from tests.conftest import DATA, REPO

HINT = "interrupted; rerun the same command to resume the study"
TINY = ["--space", str(DATA / "tiny_space.yaml"), "--hw", str(DATA / "tiny_cpu.yaml")]
SLEEPY = """\
import sys, time
def make_task(*, seed, cache_dir):
    print("ready", file=sys.stderr, flush=True)
    time.sleep(60)
"""
# A KeyboardInterrupt that ends code run from a string (as dataclasses and torch.fx do) makes
# CPython exit by SIGINT under `python -m` unless that flag is cleared again.
IN_EXEC = """\
def make_task(*, seed, cache_dir):
    exec("raise KeyboardInterrupt")
"""


# A Ctrl-C that something swallows (a __del__, a library's broad except) or turns into another
# error (a C extension being imported) must still end the run.
SWALLOWS = """\
import sys, time
def make_task(*, seed, cache_dir):
    print("ready", file=sys.stderr, flush=True)
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        pass
    time.sleep(60)
"""
CONVERTS = """\
import sys, time
def make_task(*, seed, cache_dir):
    print("ready", file=sys.stderr, flush=True)
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        raise ImportError("initialization failed")
"""


def _finish(proc: subprocess.Popen, timeout: float = 60) -> str:
    """The process's stderr once it ended; on a timeout, kill it and fail showing its stderr."""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"still running {timeout} s after Ctrl-C: {proc.communicate()[1][-3000:]}")


def _start(task: Path, results: Path, *, ignore_sigint: bool = False) -> subprocess.Popen:
    args = [sys.executable, "-m", "search", "run", "--task", f"{task}:make_task", *TINY]
    return subprocess.Popen(
        [*args, "--results-dir", str(results), "--no-progress"],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        if ignore_sigint
        else None,
    )


@pytest.mark.parametrize("ignore_sigint", [False, True], ids=["default", "started-ignoring"])
def test_ctrl_c_during_start_up_ends_the_run_with_the_resume_hint(tmp_path, ignore_sigint):
    """A process started with SIGINT ignored (a background job of a shell script) used to
    ignore Ctrl-C for good: Python leaves an inherited SIG_IGN alone."""
    (tmp_path / "sleepy.py").write_text(SLEEPY)
    proc = _start(tmp_path / "sleepy.py", tmp_path / "res", ignore_sigint=ignore_sigint)
    assert proc.stderr.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    err = _finish(proc)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [HINT]
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("task", [SWALLOWS, CONVERTS], ids=["swallowed", "converted"])
def test_a_swallowed_or_converted_ctrl_c_still_ends_the_run(tmp_path, task):
    (tmp_path / "task.py").write_text(task)
    proc = _start(tmp_path / "task.py", tmp_path / "res")
    assert proc.stderr.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    err = _finish(proc)  # re-delivered within REDELIVER_S (10 s)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [HINT]


def test_ctrl_c_caught_inside_string_code_still_exits_130(tmp_path):
    (tmp_path / "in_exec.py").write_text(IN_EXEC)
    proc = _start(tmp_path / "in_exec.py", tmp_path / "res")
    err = _finish(proc)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [HINT]


def _before_the_handler(err: str) -> bool:
    """Whether a traceback shows no frame of ours past the line installing the early handler."""
    init = REPO / "search" / "__init__.py"
    installs = next(
        n for n, line in enumerate(init.read_text().splitlines(), 1) if "_signal.signal(" in line
    )
    ours = re.findall(rf'File "{re.escape(str(REPO / "search"))}/([^"]+)", line (\d+)', err)
    return all(path == "__init__.py" and int(line) <= installs for path, line in ours)


def test_the_early_handler_is_installed_before_any_file_is_read():
    """The statements before the handler must not import anything that reads a file: the
    interrupt that failed CI landed in `import signal` (a .py read, slow under load)."""
    init = (REPO / "search" / "__init__.py").read_text()
    head = init[: init.index("_signal.signal(")]
    imports = re.findall(r"^(?:import|from) (\w+)", head, flags=re.M)
    assert set(imports) <= {"sys", "_signal"}, imports


@pytest.mark.parametrize("delay", [0.02, 0.05, 0.15, 0.4])
def test_ctrl_c_in_the_first_moments_is_one_line(tmp_path, delay):
    """From the handler's installation in search/__init__.py on (its first statements only bind
    names and read nothing from disk), Ctrl-C is one line and exit 130. Before it, while the
    interpreter starts (site, .pth files) and runpy reads the package (a few tens of ms, more
    under load), CPython answers on its own: none of our code that could answer ran yet."""
    (tmp_path / "sleepy.py").write_text(SLEEPY)
    proc = _start(tmp_path / "sleepy.py", tmp_path / "res")
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    err = _finish(proc)
    if "KeyboardInterrupt" in err and _before_the_handler(err):
        return  # the interrupt came before the handler was installed: Python's own answer
    if proc.returncode == -signal.SIGINT and not err.strip():
        return  # earlier still: before CPython installed its own handler (SIG_DFL killed it)
    lines = [line for line in err.strip().splitlines() if line != "ready"]
    assert proc.returncode == 130 and lines == [HINT], err
    assert "Traceback" not in err


def test_study_names_are_names_in_the_api_too(tmp_path):
    from search.config import load_profile, load_space
    from search.study import StudySpec

    for name in ("../escaped", "/tmp/escaped", "a/b", "..", ""):
        with pytest.raises(SearchError, match="not a study name"):
            StudySpec(
                task="digits",
                space=load_space("default"),
                profile=load_profile("cpu"),
                study_name=name,
                results_dir=tmp_path,
            )


def test_a_disk_without_room_is_refused_before_any_work(tmp_path, monkeypatch, capfd):
    import shutil

    from search.core import checks

    real = shutil.disk_usage
    monkeypatch.setattr(checks.shutil, "disk_usage", lambda p: real(p)._replace(free=3 * 2**20))
    code = main(["run", "--task", "tests.tiny_task:make_random_task", *TINY, "--study", "x",
                 "--results-dir", str(tmp_path / "res")])  # fmt: skip
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "only 3.0 MB free" in err[0]
    assert not (tmp_path / "res").exists()


@pytest.mark.slow
def test_a_disk_that_fills_during_a_run_stops_it_and_the_study_resumes(
    tmp_path, monkeypatch, capfd
):
    import optuna
    from optuna.trial import TrialState

    from search.trial import pipeline as trial

    real, calls = trial.export_onnx, []

    def fills_up(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second trial's export meets a full disk
            raise OSError(errno.ENOSPC, "No space left on device", str(args[2]))
        return real(*args, **kwargs)

    argv = ["run", "--task", "tests.tiny_task:make_random_task", *TINY, "--trials", "2",
            "--study", "full", "--results-dir", str(tmp_path), "--no-progress"]  # fmt: skip
    monkeypatch.setattr(trial, "export_onnx", fills_up)
    assert main(argv) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: no space left on device")
    storage = f"sqlite:///{tmp_path / 'full' / 'study.db'}"
    study = optuna.load_study(study_name="full", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert study.trials[1].user_attrs["interrupted"]

    monkeypatch.setattr(trial, "export_onnx", real)
    assert main(argv) == 0
    study = optuna.load_study(study_name="full", storage=storage)
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 2


class _Marker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("protocol", [2, 5])
def test_data_pickles_never_call_what_they_name(tmp_path, protocol):
    from search.core.safeload import UnsafePickle, load_data_pickle

    marker = tmp_path / "PWNED"
    crafted = [
        _Marker(marker),
        {b"data": _Marker(marker)},
        {b"data": np.array([1, None], dtype=object)},
    ]
    for i, obj in enumerate(crafted):
        (tmp_path / f"b{i}").write_bytes(pickle.dumps(obj, protocol=protocol))
        with pytest.raises(UnsafePickle):
            load_data_pickle(tmp_path / f"b{i}")
    assert not marker.exists()
    good = {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"labels": [3, 4]}
    (tmp_path / "good").write_bytes(pickle.dumps(good, protocol=protocol))
    got = load_data_pickle(tmp_path / "good")
    assert got[b"labels"] == [3, 4] and np.array_equal(got[b"data"], good[b"data"])
