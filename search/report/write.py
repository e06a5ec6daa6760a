"""Write a study's report: ``trials.csv``, ``pareto.csv``, ``report.html`` and PNG copies."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import optuna
import pandas as pd
import plotly.graph_objects as go

from search.core.errors import first_line
from search.core.paths import StudyPaths
from search.report.collect import ReportData, build_report, collect
from search.report.page import page
from search.report.plots import FIGURES, figures


def write_outputs(
    study: optuna.Study,
    out_dir: Path,
    *,
    html: bool = True,
    picks: Sequence[str] = (),
    png: bool = False,
) -> dict[str, Path]:
    """Write ``trials.csv``, ``pareto.csv`` and (with ``html``) ``report.html`` into ``out_dir``.

    study.py calls this after every trial with ``html=False`` (cheap) and once at the end.
    """
    if not html:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        return write_csv(collect(study), out_dir)
    paths, _ = write_report(build_report(study, picks=picks), out_dir, png=png)
    return paths


def write_report(
    data: ReportData, out_dir: Path, *, png: bool = False
) -> tuple[dict[str, Path], list[str]]:
    """Write the CSV files, ``report.html`` and (with ``png``) PNG copies of the main figures.

    Returns the written paths (by role: ``csv``, ``pareto_csv``, ``html``, ``png_<figure>``)
    and notes for the user (e.g. why PNGs were skipped).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = write_csv(data.trials, out_dir)
    figs = figures(data)
    paths["html"] = StudyPaths.of(out_dir).report_html
    paths["html"].write_text(page(data, figs), encoding="utf-8")
    notes: list[str] = []
    if png:
        written, note = write_pngs(figs, out_dir)
        paths.update({f"png_{p.stem}": p for p in written})
        notes += [note] if note else []
    return paths, notes


def write_csv(trials: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """``trials.csv`` (every trial) and ``pareto.csv`` (the front) of :func:`collect`'s table."""
    files = StudyPaths.of(out_dir)
    paths = {"csv": files.trials_csv, "pareto_csv": files.pareto_csv}
    trials.to_csv(paths["csv"], index=False)
    front = trials[trials.pareto.astype(bool)] if not trials.empty else trials
    front.to_csv(paths["pareto_csv"], index=False)
    return paths


def write_pngs(figs: dict[str, go.Figure | None], out_dir: Path) -> tuple[list[Path], str | None]:
    """PNG copies (``<key>.png``) of the registered figures marked ``png``, via kaleido.

    Returns the files and, when there are none, why not; a rendering failure costs only the
    PNG copies, never the report.
    """
    main = {f.key: figs[f.key] for f in FIGURES if f.png and figs.get(f.key) is not None}
    try:
        import kaleido  # noqa: F401 - only checks that it is installed
        import plotly.io as pio
    except ImportError:
        return [], (
            "PNG copies skipped: kaleido is not installed "
            "(pip install kaleido; it also needs Chrome or Chromium on PATH)"
        )
    paths = [Path(out_dir) / f"{key}.png" for key in main]
    try:
        pio.write_images(list(main.values()), paths, width=1100, height=600)
    except Exception as e:  # noqa: BLE001 - any rendering failure only costs the PNG copies
        first = first_line(e) or type(e).__name__
        return [], f"PNG copies skipped: kaleido could not render ({first[:160]})"
    return paths, None
