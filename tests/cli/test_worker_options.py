"""The worker options of ``run``: checked in one line, and what ``--workers N`` starts: a
complete command line built from what the leader parsed (``shared/cases/workers-abbrev-fork-bomb``:
a filtered copy of the leader's words let ``--wo 2`` start workers without end)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from search.cli.base import OneLineParser
from search.cli.main import COMMANDS, Run, build_parser, main
from search.cli.workers import WORKER_ENV, child_command, run_workers, worker_settings
from search.core.threads import cores
from search.distributed.worker import MIN_GRACE_S, MIN_HEARTBEAT_S
from search.errors import SearchError


def _args(*argv: str):
    return build_parser().parse_args(["run", *argv])


def _run_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="search run")
    Run().add_arguments(parser)
    return parser


def test_defaults_and_flags_become_worker_settings():
    settings = worker_settings(_args())
    assert (settings.threads, settings.artifacts) == (None, None)
    assert (settings.heartbeat_s, settings.grace_s) == (10, 60)
    flags = ("--threads", "1", "--artifacts", "s3://b", "--heartbeat", "2", "--grace", "30")
    settings = worker_settings(_args(*flags))
    assert (settings.threads, settings.artifacts, settings.heartbeat_s, settings.grace_s) == (
        1, "s3://b", 2, 30,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--threads", "0"], "argument --threads: must be at least 1"),
        (["--threads", str(4 * cores() + 1)], "argument --threads: must be at most"),
        (["--workers", "0"], "argument --workers: must be at least 1"),
        (["--workers", "-2"], "argument --workers: must be at least 1"),
        (["--workers", str(2 * cores() + 1)], "argument --workers: must be at most"),
        (["--workers", "two"], "argument --workers: must be a whole number"),
        (["--heartbeat", "1"], f"--heartbeat: must be at least {MIN_HEARTBEAT_S}"),
        (["--heartbeat", "0"], "--heartbeat: must be at least"),
        (["--heartbeat", "100000"], "--heartbeat: must be at most"),
        (["--grace", "15"], f"--grace: must be at least {MIN_GRACE_S}"),
        (["--heartbeat", "5", "--grace", "15"], "--grace: must be at least"),  # the case's
        (["--heartbeat", "20", "--grace", "30"], "--grace must lie in [60,"),
        (["--grace", "10000000"], "--grace: must be at most"),
        (["--grace", "1.5"], "--grace: must be a whole number"),
    ],
)
def test_bad_worker_options_are_one_line_and_exit_2(argv, needle, tmp_path, capfd):
    code = main(["run", "--results-dir", str(tmp_path), *argv])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert list(tmp_path.iterdir()) == []


REQUIRED = {  # so the shortened option is what fails
    "export": ["--out", "o", "--trial", "0"],
    "compare": ["--study", "a"],
}


def test_no_command_takes_an_abbreviated_option(capfd):
    """Every long option of every command, shortened by one letter and to its first three:
    refused, never taken for the option (``--wo 2`` was ``--workers 2``)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    tried = 0
    for name, command_parser in sub.choices.items():
        for action in command_parser._actions:
            for flag in action.option_strings:
                if not flag.startswith("--") or len(flag) < 5:
                    continue
                for short in {flag[:-1], flag[:4]}:
                    if short in command_parser._option_string_actions:
                        continue  # another option's full name
                    argv = [name, *REQUIRED.get(name, []), short, "1"]
                    with pytest.raises(SearchError, match=f"unrecognized arguments: {short} 1"):
                        parser.parse_args(argv)
                    tried += 1
    assert tried > 60 and set(sub.choices) == set(COMMANDS)


def test_the_fork_bomb_case_is_refused_before_any_worker_starts(tmp_path, capfd):
    for words in (["--wo", "2"], ["--work", "2"], ["--worker", "2"], ["--wo=2"]):
        code = main(["run", *words, "--task", "nope_mod:make", "--results-dir", str(tmp_path)])
        out, err = capfd.readouterr()
        assert code == 2 and err.count("\n") == 1 and "unrecognized arguments" in err, err
        assert "started" not in out + err
    assert list(tmp_path.iterdir()) == []


CHILD_CASES = [
    [],
    ["--hw", "cpu", "--space", "default", "--trials", "8", "--seed", "3"],
    ["--task", "tests.tiny_task:make_random_task", "--study", "s", "--storage=-weird"],
    [
        "--task",
        "cifar10",
        "--model",
        "resnet18",
        "--data",
        "d",
        "--weights",
        "w.pt",
        "--image-size",
        "64",
        "--train-device",
        "cpu",
        "--agent",
        "local",
    ],  # fmt: skip
    ["--artifacts", "s3://bucket", "--heartbeat", "5", "--grace", "90", "--threads", "1"],
    ["--results-dir=-r", "--no-progress", "--workers", "2"],
]


@pytest.mark.parametrize("argv", CHILD_CASES)
def test_a_workers_command_line_means_what_the_leader_parsed(argv, monkeypatch):
    """Parsed again, the child's command line gives the leader's arguments, less --workers,
    with the study and trial count the leader resolved, no progress bars, its threads."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    parser = _run_parser()
    args = parser.parse_args([*argv, "--workers", "2"])
    fixed = {"study": "resolved-name", "trials": 7}
    cmd = child_command(parser, args, workers=2, fixed=fixed)
    assert cmd[:4] == [sys.executable, "-m", "search", "run"]
    assert not [w for w in cmd if w.startswith("--workers")]
    again = parser.parse_args(cmd[4:])
    expected = {**vars(args), **fixed, "workers": 1, "no_progress": True}
    expected["threads"] = args.threads or max(1, cores() // 2)
    assert vars(again) == expected


def test_omp_num_threads_leaves_the_threads_to_the_environment(monkeypatch):
    parser = _run_parser()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cmd = child_command(parser, parser.parse_args([]), workers=2)
    assert not [w for w in cmd if w.startswith("--threads")]


def test_a_worker_cannot_start_workers(monkeypatch):
    monkeypatch.setenv(WORKER_ENV, "1234")
    with pytest.raises(SearchError, match="cannot start workers"):
        run_workers([sys.executable, "-c", "pass"], workers=2)


def test_workers_are_started_from_the_arguments_given_to_main(tmp_path, monkeypatch, capfd):
    """``main(argv)`` from Python: the workers run ``argv``, not this process's sys.argv."""
    monkeypatch.setattr(sys, "argv", ["pytest", "--bogus"])
    started: list[list[str]] = []
    monkeypatch.setattr(
        "search.cli.main.run_workers", lambda cmd, workers: started.append(cmd) or 0
    )
    data = Path(__file__).parent.parent / "data"
    argv = ["run", "--task", "tests.tiny_task:make_random_task", "--hw",
            str(data / "tiny_cpu.yaml"), "--space", str(data / "tiny_space.yaml"),
            "--results-dir", str(tmp_path), "--workers", "2", "--trials", "3"]  # fmt: skip
    assert main(argv) == 0
    (cmd,) = started
    assert (
        "--bogus" not in cmd
        and "--trials=3" in cmd
        and "--study=tests-tiny_task-" in " ".join(cmd)
    )
    assert list(tmp_path.iterdir()) == []  # the leader checked, and created nothing


@pytest.mark.slow
def test_an_error_every_worker_meets_is_said_once_on_stderr(tmp_path):
    """A task that imports but fails to load passes the leader's checks; both workers then
    fail alike, and the leader says it once, on stderr (``workers-bad-task-error-twice``)."""
    import subprocess

    from tests.conftest import DATA, REPO

    task = tmp_path / "t_raises.py"
    task.write_text("def make_task(*, seed, cache_dir):\n    raise ValueError('no data')\n")
    cmd = [sys.executable, "-m", "search", "run", "--task", f"{task}:make_task",
           "--hw", str(DATA / "tiny_cpu.yaml"), "--space", str(DATA / "tiny_space.yaml"),
           "--results-dir", str(tmp_path / "res"), "--workers", "2"]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: task ") and line.endswith("ValueError: no data"), line
    assert done.stdout.startswith("started 2 workers: ") and "error: " not in done.stdout
