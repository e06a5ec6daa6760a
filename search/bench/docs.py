"""The benchmark's summary page (``docs/bench.md``): one table per task and target, from the
``bench.json`` files of finished benchmarks.

Each table lists every method with its budget (trials, distillations, wall time) and its mean
and 95 % confidence interval over sampler seeds of the hypervolume and of the best speedup
within the accuracy drop, taken from the benchmark's confirmation in fresh processes; below it,
issue 29's bars and whether the confirmation ran on a quiet machine. Re-confirmations
(``reconfirm.json`` beside ``bench.json``) are summarized too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from search.bench.measure import sessions_line


def _num(v: object, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, int | float) and math.isfinite(v) else "–"


def _ci(s: dict[str, Any], fmt: str, unit: str = "") -> str:
    if s["of"] <= 1:
        return _num(s["mean"], fmt) + unit
    return f"{_num(s['mean'], fmt)}{unit} [{_num(s['ci_low'], fmt)}, {_num(s['ci_high'], fmt)}]"


def table(data: dict[str, Any], reconfirmed: list[dict[str, Any]] | None = None) -> list[str]:
    """One benchmark (a task on a target) as a markdown section."""
    seq = next((m for m in data["methods"] if m["method"] == "sequential"), None)
    seq_speed = seq["best_speedup"]["mean"] if seq else math.nan
    c = data.get("confirmation") or {}
    state = "contended (speedups may be off)" if c.get("contended") else "quiet"
    lines = [
        f"## {data['task']} on {data['profile']}",
        "",
        f"{data['created']}, {data['device']}, onnxruntime {data['onnxruntime']}; N = "
        f"{data['trials']}, random search {data['random_trials']}, sampler seeds "
        f"{', '.join(map(str, data['sampler_seeds']))}; whole run "
        f"{data.get('total_wall_s', 0) / 60:.0f} min. Float baseline: accuracy "
        f"{data['baseline']['accuracy']:.4f}, {data['baseline']['latency_ms']:.3f} ms. "
        f"Speedups confirmed in {c.get('processes', '?')} fresh processes, machine {state}."
        + (f" Intervals: {sessions_line(c['sessions'])}." if c.get("sessions") else ""),
        "",
        "| method | trials | distillations | wall (min) | hypervolume | best speedup (≤1 point) "
        "| / sequential's |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in data["methods"]:
        speed = m["best_speedup"]
        ratio = speed["mean"] / seq_speed if seq_speed else math.nan
        distilled = (m.get("distillations") or {}).get("mean")
        lines.append(
            f"| {m['title']} | {m['trials']} | {_num(distilled, '.1f')} | "
            f"{_num(m['wall_s']['mean'] / 60, '.1f')} | {_ci(m['hypervolume'], '.3f')} | "
            f"{_ci(speed, '.2f', 'x')} | {_num(ratio, '.2f')} |"
        )
    lines += ["", "| bar (means over seeds) | value | bar | met |", "|---|---:|---:|---|"]
    lines += [
        f"| {t['target']} | {_num(t['value'], '.3f')} | {t['bar']:g} | "
        f"{'yes' if t['met'] else 'NO'} |"
        for t in data["targets"]
    ]
    for r in reconfirmed or []:
        state = "contended" if r["confirmation"].get("contended") else "quiet"
        lines += [
            "",
            f"Re-confirmed {r['hours_after']} h later ({r['at']}, {state}): {r['inside']} of "
            f"{r['of']} candidates inside the intervals the benchmark gave"
            + (
                f" ({r['inside_processes']} of {r.get('of_processes', r['of'])} inside the "
                "intervals over the processes alone)."
                if r.get("inside_processes") is not None
                else "."
            ),
        ]
    return lines + [""]


def summary(folders: Iterable[Path]) -> str:
    """``docs/bench.md``: a section per benchmark folder (one holding ``bench.json``)."""
    lines = [
        "# Benchmark results",
        "",
        "Written by `python benchmarks/bench_docs.py` from the benchmarks' `bench.json` files "
        "(commands and wall times: README, 'Benchmark'). Mean [95 % confidence interval of "
        "the mean, Student's t] over sampler seeds; methods without a sampler ran once. Best "
        "speedup: the fastest model at most 1 accuracy point below the float baseline, its "
        "latency confirmed with the baseline in fresh processes.",
        "",
    ]
    for folder in folders:
        path = Path(folder) / "bench.json"
        if not path.is_file():
            continue
        again = Path(folder) / "reconfirm.json"
        reconfirmed = json.loads(again.read_text()) if again.is_file() else []
        lines += table(json.loads(path.read_text()), reconfirmed)
    return "\n".join(lines)
