"""The CLI on bad input: one line on stderr, exit 2, no traceback, no study created."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


def run_cli(*args: str, results) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "search", *args, "--results-dir", str(results)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def _assert_clean_failure(proc, results, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr
    assert not results.exists() or not any(results.iterdir())


def test_unknown_profile(tmp_path):
    results = tmp_path / "results"
    proc = run_cli("run", "--hw", "jetsonn", results=results)
    _assert_clean_failure(proc, results, "unknown hardware profile 'jetsonn'")


def test_malformed_space_file(tmp_path):
    space = tmp_path / "bad.yaml"
    space.write_text("prune: [this is not a mapping\n")
    results = tmp_path / "results"
    proc = run_cli("run", "--space", str(space), results=results)
    _assert_clean_failure(proc, results, "not valid YAML")


@pytest.mark.parametrize("high", ["1.0", "-0.2"])
def test_prune_ratio_outside_unit_interval(tmp_path, high):
    space = tmp_path / "ratio.yaml"
    space.write_text(f"prune: {{ratio: {{low: -0.5, high: {high}}}}}\n")
    results = tmp_path / "results"
    proc = run_cli("run", "--space", str(space), results=results)
    _assert_clean_failure(proc, results, "ratio must lie in [0.0, 1.0)")


def test_unknown_task(tmp_path):
    results = tmp_path / "results"
    proc = run_cli("run", "--task", "cifar1000", results=results)
    _assert_clean_failure(proc, results, "unknown task 'cifar1000'")


def test_report_of_missing_study(tmp_path):
    results = tmp_path / "results"
    proc = run_cli("report", "--study", "nothing-here", results=results)
    _assert_clean_failure(proc, results, "no study")


def test_report_agent_without_confirm(tmp_path):
    results = tmp_path / "results"
    proc = run_cli("report", "--study", "s", "--agent", "http://127.0.0.1:1", results=results)
    _assert_clean_failure(proc, results, "--agent measures the confirmation: add --confirm")


def test_a_bad_warm_start_in_a_space_file(tmp_path):
    space = tmp_path / "warm.yaml"
    space.write_text("search: {warm_start: [0.3, 1.2]}\n")
    results = tmp_path / "results"
    proc = run_cli("run", "--space", str(space), results=results)
    _assert_clean_failure(proc, results, "warm_start prune ratios must be in [0, 1)")


def test_storage_without_its_driver(tmp_path):
    results = tmp_path / "results"
    proc = run_cli("run", "--storage", "mysql://u:p@127.0.0.1:1/db", results=results)
    _assert_clean_failure(proc, results, "database driver is not installed")


def test_report_with_a_storage_without_its_driver(tmp_path):
    results = tmp_path / "results"
    proc = run_cli(
        "report", "--study", "s", "--storage", "mysql://u:p@127.0.0.1:1/db", results=results
    )
    _assert_clean_failure(proc, results, "database driver is not installed")


def test_task_help_lists_every_built_in_task(capsys):
    from search.cli.main import main
    from search.tasks import BUILTIN

    for command in ("run", "bench"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
        missing = [name for name in BUILTIN if name not in text]
        assert not missing, f"{command} --task help omits {missing}"


def test_a_short_agent_token_is_one_line_from_the_cli_and_the_settings(tmp_path):
    from search.errors import AgentError
    from search.measure.agent.server import AgentSettings

    proc = subprocess.run(
        [sys.executable, "-m", "search", "agent", "--port", "0", "--token", "short"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    _assert_clean_failure(proc, tmp_path / "none", "token of at least 8 characters")
    with pytest.raises(AgentError, match="token of at least 8 characters"):
        AgentSettings(token="short")
