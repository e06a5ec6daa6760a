"""Help texts say what the files are."""

from __future__ import annotations

import pytest

from search.cli.main import build_parser


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_export_help_calls_model_pt2_a_torch_export_program(
    capsys: pytest.CaptureFixture[str],
) -> None:
    top = _help(capsys)
    assert "model.pt2 (a torch.export program), trial.json, a README." in top
    assert "PyTorch checkpoint" not in top
    export = _help(capsys, "export")
    assert "torch.export ExportedProgram" in export and 'torch.export.load("model.pt2")' in export


def test_every_command_summary_is_a_whole_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    top = _help(capsys)
    for command in ("run", "report", "export", "profiles", "agent", "bench", "compare"):
        summary = top.split(f" {command} ", 1)[1]
        assert "." in summary.split(" options:")[0], command
