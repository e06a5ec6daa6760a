"""The report of a study: compute plain data (``collect``), then draw it (``plots``), render it
(``page``, ``console``) and write it (``write``). These are the names the rest uses."""

from search.report.collect import ReportData, build_report, collect
from search.report.console import pareto_table
from search.report.picking import Pick, PickError, candidates, parse_rule, pick
from search.report.quantization import precision_summary, quantization_summary, sensitivity_table
from search.report.write import write_outputs, write_report

__all__ = [
    "Pick",
    "PickError",
    "ReportData",
    "build_report",
    "candidates",
    "collect",
    "pareto_table",
    "parse_rule",
    "pick",
    "precision_summary",
    "quantization_summary",
    "sensitivity_table",
    "write_outputs",
    "write_report",
]
