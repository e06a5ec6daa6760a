"""The Pareto trials as a table for the terminal (rich), the same words as the page's table."""

from __future__ import annotations

from rich.table import Table

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
