"""report.html of a real tiny study: its sections, the registry's words, the metric's name."""

from __future__ import annotations

import html
import re
from pathlib import Path

import optuna
import pytest

from search.report import build_report, write_report
from search.report.page import page
from search.report.plots import FIGURES, figures
from tests.report.conftest import copy_study
from tests.report.tiny_study import METRIC


@pytest.fixture(scope="module")
def report_html(real: optuna.Study, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("page")
    paths, notes = write_report(build_report(real, picks=["knee"]), out, png=False)
    assert notes == []
    return paths["html"].read_text(encoding="utf-8")


def _headings(text: str) -> dict[str, str]:
    return {k: html.unescape(t) for k, t in re.findall(r"<h2 id='(\w+)'>([^<]*)</h2>", text)}


def test_every_registered_figure_has_its_section_title_and_caption(
    real: optuna.Study, report_html: str
) -> None:
    data = build_report(real)
    headings = _headings(report_html)
    for f in FIGURES:
        title, caption = f.words(data)
        assert headings[f.key] == title, f.key
        assert html.escape(caption) in report_html
        assert f"<a href='#{f.key}'>{html.escape(title)}</a>" in report_html  # in the nav
    assert list(headings)[: len(FIGURES) + 1] == ["quantization"] + [f.key for f in FIGURES]
    assert "failed" in headings


def test_sections_and_tables(real: optuna.Study, report_html: str) -> None:
    assert "<h2>Pareto trials</h2>" in report_html and "Files and tools" in report_html
    assert f"<th>{METRIC}</th>" in report_html  # front and quantization tables
    assert f"baseline: {METRIC} " in report_html
    assert "uniform int8" in report_html and "float baseline" in report_html
    assert "None: every trial completed." in report_html
    assert "knee" in report_html and "Not shown" not in report_html
    # The sensitivity figure is drawn: one bar a group of the real pass.
    assert all(f'"{g}"' in report_html for g in real.user_attrs["sensitivity"]["order"])


def test_the_page_works_offline_with_plotly_inlined_once(report_html: str) -> None:
    assert report_html.count("plotly.js v") <= 2 and "Plotly.newPlot" in report_html
    assert 'src="http' not in report_html


def test_missing_figures_say_why_and_optional_ones_are_left_out(real: optuna.Study) -> None:
    study = copy_study(real)
    study.set_user_attr("sensitivity", None)
    data = build_report(study)
    figs = figures(data)
    figs["kernels"] = None
    text = page(data, figs)
    assert "id='sensitivity'" not in text and "#sensitivity" not in text
    kernels = next(f for f in FIGURES if f.key == "kernels")
    assert f"Not shown: {html.escape(kernels.missing)}." in text


def test_written_report_of_an_empty_study(tmp_path: Path) -> None:
    data = build_report(optuna.create_study(directions=["maximize", "minimize"]))
    paths, _ = write_report(data, tmp_path)
    text = paths["html"].read_text(encoding="utf-8")
    assert "No completed trials yet." in text and "Not shown" in text
