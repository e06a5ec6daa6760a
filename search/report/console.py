"""The Pareto trials as a table for the terminal (rich), the same words as the page's table."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from search.record import Measured
from search.report.collect import TEXT_COLUMNS, ReportData, front_table


def pareto_table(data: ReportData) -> Table:
    """The Pareto trials as a rich table, fastest first, with the picks named."""
    columns, rows = front_table(data)
    table = Table(title=f"{data.study_name}: Pareto front ({len(data.pareto)} trials)")
    for col in columns:
        table.add_column(col, justify="left" if col in TEXT_COLUMNS else "right")
    for i, row in enumerate(rows):
        table.add_row(*row, style="dim" if i == 0 and data.baseline else None)
    return table


def test_note(rec: Measured) -> str:
    """`` (test 0.9500)`` for a trial's console line; nothing without a test figure."""
    test = rec.test_accuracy
    return f" (test {test:.4f})" if test is not None else ""


def load_note(rec: Measured) -> str:
    """`` [busy: ...]`` / `` [noisy: ...]`` / `` [emulated: ...]`` / `` [simulated: ...]`` for a
    trial's console line when its latency was measured under load, stayed noisy after its
    repeats, or is not the device's latency (:func:`search.measure.machine.timing_of`);
    nothing otherwise."""
    from search.measure.load import describe_load

    measurement = rec.measurement
    notes = []
    if rec.busy:
        notes.append(f"busy: {describe_load(measurement.get('load') or {})}")
    if rec.noisy:
        paired = measurement.get("paired") or {}
        notes.append(
            f"noisy: +-{paired.get('spread', 0.0):.1%} after {paired.get('attempts')} tries"
        )
    timing = measurement.get("timing")
    if timing and timing != "device":
        notes.append(f"{timing.split(':')[0]} timing, not the device's latency")
    # Escaped: rich would read "[busy: ...]" as a markup tag and drop it.
    return "".join(escape(f" [{n}]") for n in notes)
