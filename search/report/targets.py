"""Several targets side by side: each target's front, and each target's chosen model measured
on the others (:mod:`search.study.crosstarget` measures; this module only computes tables and
words from what was stored or measured, and renders Markdown).

Example:
    >>> rows = [{"seed": 0, "measured_on": "cpu", "winner_of": "openvino", "relative": 1.25,
    ...          "ci": [1.2, 1.3], "speedup": 3.0, "speedup_ci": None, "accuracy": 0.9}]
    >>> summary_lines(rows)[0].split(" (")[0]
    "on cpu, openvino's winner takes 1.25x the time of cpu's own winner"
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from search.core.formatting import fmt
from search.core.hashing import sha256_file
from search.record import PAIRED, TrialRecord, baseline_of

FRONT_COLUMNS = ["trial", "accuracy", PAIRED, "speedup", "size_mb", "precision"]


def front_table(study: optuna.Study) -> pd.DataFrame:
    """The study's Pareto trials, fastest first: trial, accuracy, paired p50, speedup over the
    baseline, size and what the layers ran at."""
    from search.report import collect

    data = collect(study)
    if data.empty or "pareto" not in data:
        return pd.DataFrame(columns=FRONT_COLUMNS)
    front = data[data.pareto.astype(bool)]
    return front[[c for c in FRONT_COLUMNS if c in front]].sort_values(PAIRED)


def winners_differ(studies: dict[str, optuna.Study], winners: dict[str, int]) -> dict[str, Any]:
    """Whether the targets' winners are different models: ``{"configs": {target: config},
    "params": {target: parameter count}, "same_config": bool, "same_size": bool,
    "same_file": bool}``. The search parameters (prune ratio, low-rank, precision plan,
    distillation) may agree while the models differ: each profile prunes to its own channel
    multiple (``round_to``), and each study distilled its own student."""
    configs, params, digests = {}, {}, set()
    for target, number in winners.items():
        rec = TrialRecord.of(studies[target].trials[number])
        configs[target] = rec.config if rec else {}
        sizes = list((rec.sizes if rec else {}).values())
        params[target] = sizes[-1].get("params") if sizes and isinstance(sizes[-1], dict) else None
        path = Path(rec.measured_file) if rec else None
        digests.add(sha256_file(path) if path is not None and path.is_file() else None)
    values, counts = list(configs.values()), list(params.values())
    return {
        "configs": configs,
        "params": params,
        "same_config": all(v == values[0] for v in values[1:]),
        "same_size": all(c == counts[0] for c in counts[1:]),
        "same_file": len(digests) == 1 and None not in digests,
    }


def differ_words(differ: dict[str, Any]) -> str:
    """:func:`winners_differ` in words."""
    if differ["same_file"]:
        return "identical files"
    sizes = ", ".join(f"{t}: {n} parameters" for t, n in differ["params"].items())
    if differ["same_config"] and not differ["same_size"]:
        return (
            "the same search parameters but different models: the profiles prune to "
            f"different channel multiples (round_to) ({sizes})"
        )
    if differ["same_config"]:
        return f"the same search parameters and sizes, distilled separately ({sizes})"
    return f"different configurations ({sizes})"


def summary_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One sentence per (target, other target's winner): the median over seeds of how many
    times as slow the other winner is there as the target's own, with each seed's interval."""
    by_pair: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["measured_on"] != r["winner_of"]:
            by_pair[(r["measured_on"], r["winner_of"])].append(r)
    lines = []
    for (here, other), found in sorted(by_pair.items()):
        median = statistics.median(r["relative"] for r in found)
        seeds = "; ".join(
            f"seed {r['seed']}: {r['relative']:.2f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]"
            for r in sorted(found, key=lambda r: r["seed"])
        )
        slower = sum(r["ci"][0] > 1.0 for r in found)
        faster = sum(r["ci"][1] < 1.0 for r in found)
        verdict = f"slower in {slower}, faster in {faster}, not distinguishable in "
        verdict += f"{len(found) - slower - faster} of {len(found)} seed(s)"
        lines.append(
            f"on {here}, {other}'s winner takes {median:.2f}x the time of {here}'s own winner "
            f"(median over seeds; {verdict}; {seeds})"
        )
    return lines


def _ci(values: list[float] | None) -> str:
    return f"[{values[0]:.2f}, {values[1]:.2f}]" if values else ""


def render_markdown(
    *,
    title: str,
    studies: dict[str, optuna.Study],
    winners: dict[str, dict[str, Any]],
    rows: list[dict[str, Any]],
    notes: list[str],
) -> str:
    """The comparison as Markdown: the studies, each target's front, the cross-target table,
    the summary sentences and notes. ``studies`` and ``winners`` are keyed ``target/seed``."""
    out = [f"# {title}", ""]
    out += [
        "| study | target | seed | baseline p50 ms | winner (rule) | device |",
        "|---" * 6 + "|",
    ]
    for key, study in studies.items():
        base = baseline_of(study)
        w = winners[key]
        device = (base.measurement.get("device") or "") if base else ""
        out.append(
            f"| {study.study_name} | {key.split('/')[0]} | {key.split('/')[1]} | "
            f"{fmt(base.latency_paired_ms if base else None, '.3f')} | trial {w['trial']} "
            f"({w['reason']}) | {device} |"
        )
    out += ["", "## Each target's front", ""]
    for key, study in studies.items():
        front = front_table(study)
        out += [f"### {key} ({study.study_name})", ""]
        out += ["| trial | accuracy | p50 ms (paired) | speedup | size MB | ran as |"]
        out += ["|---" * 6 + "|"]
        for r in front.itertuples():
            out.append(
                f"| {r.trial} | {r.accuracy:.4f} | {fmt(getattr(r, PAIRED), '.3f')} | "
                f"{fmt(r.speedup, '.2f')}x | {fmt(r.size_mb, '.3f')} | {r.precision} |"
            )
        out.append("")
    if rows:
        out += ["## Each winner measured on each target", ""]
        out += [
            "Latency relative to the target's own winner, timed interleaved with it and the "
            "baseline (paired rounds; 95 % interval of the median ratio). Speedup over the "
            "baseline on that target; accuracy: the winner's validation metric there.",
            "",
            "| seed | measured on | winner of (trial) | latency vs own winner [95% CI] | "
            "speedup over baseline [95% CI] | accuracy there | rounds | busy |",
            "|---" * 8 + "|",
        ]
        for r in sorted(rows, key=lambda r: (r["seed"], r["measured_on"], r["winner_of"])):
            out.append(
                f"| {r['seed']} | {r['measured_on']} | {r['winner_of']} ({r['trial']}) | "
                f"{r['relative']:.3f} {_ci(r['ci'])} | {r['speedup']:.2f}x "
                f"{_ci(r['speedup_ci'])} | {fmt(r['accuracy'], '.4f')} | {r['rounds']} | "
                f"{'yes' if r['busy'] else 'no'} |"
            )
        out += ["", "## Summary", ""] + [f"- {line}" for line in summary_lines(rows)]
    out += [""] + [f"- note: {n}" for n in notes]
    return "\n".join(out).rstrip() + "\n"
