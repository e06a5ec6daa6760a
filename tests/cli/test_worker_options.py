"""The worker options of ``run``: checked in one line, and what ``--workers N`` starts."""

from __future__ import annotations

import sys

import pytest

from search.cli.main import build_parser, main
from search.cli.workers import child_command, worker_settings
from search.core.threads import cores


def _args(*argv: str):
    return build_parser().parse_args(["run", *argv])


def test_defaults_and_flags_become_worker_settings():
    settings = worker_settings(_args())
    assert (settings.threads, settings.artifacts) == (None, None)
    assert (settings.heartbeat_s, settings.grace_s) == (10, 60)
    flags = ("--threads", "2", "--artifacts", "s3://b", "--heartbeat", "1", "--grace", "4")
    settings = worker_settings(_args(*flags))
    assert (settings.threads, settings.artifacts, settings.heartbeat_s, settings.grace_s) == (
        2, "s3://b", 1, 4,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--threads", "0"], "--threads must be at least 1"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--heartbeat", "5", "--grace", "6"], "--grace at least twice --heartbeat"),
    ],
)
def test_bad_worker_options_are_one_line_and_exit_2(argv, needle, tmp_path, capfd):
    code = main(["run", "--results-dir", str(tmp_path), *argv])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_each_local_worker_runs_the_same_command_with_its_share_of_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    argv = ["run", "--trials", "8", "--workers", "2", "--study", "s", "--workers=2"]
    cmd = child_command(argv, workers=2, threads=None)
    assert cmd[:3] == [sys.executable, "-m", "search"]
    assert cmd[3:] == ["run", "--trials", "8", "--study", "s", "--no-progress",
                       "--threads", str(max(1, cores() // 2))]  # fmt: skip
    # Given threads (the flag stays in argv) or OMP_NUM_THREADS, nothing is added.
    assert "--threads" not in child_command(["run"], workers=2, threads=3)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert "--threads" not in child_command(["run"], workers=2, threads=None)
