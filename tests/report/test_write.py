"""The files a report writes, the cheap per-trial CSV update and the report command."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd

from search.cli.main import main
from search.report import build_report, write_outputs, write_report
from tests.report.conftest import hand_built


def test_written_files(hand: optuna.Study, tmp_path: Path) -> None:
    paths, notes = write_report(build_report(hand, picks=["knee"]), tmp_path, png=False)
    assert len(pd.read_csv(paths["csv"])) == 8
    assert set(pd.read_csv(paths["pareto_csv"]).trial) == {t.number for t in hand.best_trials}
    text = paths["html"].read_text()
    assert "RuntimeError: boom" in text and "<b>trial 2</b>" in text
    assert notes == []
    # The cheap per-trial call study.py makes still works and writes no HTML.
    out = write_outputs(hand, tmp_path / "cheap", html=False)
    assert "html" not in out and out["csv"].is_file()
    assert not (tmp_path / "cheap" / "report.html").exists()


def test_cli_report_prints_front_and_picks(tmp_path: Path, capsys) -> None:
    (tmp_path / "hand").mkdir()
    hand_built(f"sqlite:///{tmp_path / 'hand' / 'study.db'}")
    args = ["report", "--study", "hand", "--results-dir", str(tmp_path)]
    code = main([*args, "--pick", "knee", "--pick", "fastest-within:2%", "--no-png"])
    out = capsys.readouterr().out
    assert code == 0
    assert "knee: trial 2" in out and "fastest-within:2%: trial 2" in out
    assert "+2.00x" not in out and "2.00x" in out  # trial 1's speedup in the table
    assert (tmp_path / "hand" / "report.html").is_file()
    assert main([*args, "--pick", "fastest"]) == 2
