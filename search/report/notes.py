"""What the report says about how its numbers were measured: split, pairing, load, noise,
confirmation (plain words, computed here; the page and the console only show them)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from search.core.formatting import fmt, is_number
from search.record import PAIRED, BaselineRecord


def measurement_notes(
    trials: pd.DataFrame, baseline: BaselineRecord | None, metric: str
) -> list[str]:
    """Sentences on the split the objective used, the paired latency, trials measured under
    load or noisy, and the front's confirmation."""
    if baseline is None:
        return []
    notes = [_split_note(baseline, metric)]
    scale = baseline.latency_scale_ms
    if is_number(scale):
        notes.append(
            "p50 ms is paired: each trial was timed interleaved with the baseline, and its "
            f"latency relative to the baseline ({baseline.clock}) is multiplied by the "
            f"baseline's p50 of {fmt(scale, '.3f')} ms, so trials measured under different "
            f"loads compare ({PAIRED} in trials.csv); the p50 as measured is in trials.csv "
            "(latency_measured_p50_ms)"
        )
    timing = baseline.measurement.get("timing")
    if timing and timing != "device":
        notes.append(
            f"timings are {timing}: they are not the target's latency, so they check that the "
            "plans run and how accurate they are there, and rank nothing"
        )
    first = (baseline.measurement.get("latency") or [{}])[0]
    if first.get("steady") is False:
        notes.append(
            "the baseline's latency did not reach a steady state within the warm-up's bound "
            f"(timed runs drifted {fmt(first.get('drift'), '.1%')}): the ms scale of this study "
            "is uncertain; speedups are paired and are not"
        )
    if baseline.busy:
        notes.append(
            "the baseline was measured while other processes used the cores: its absolute "
            "latency is inflated (speedups are paired and are not)"
        )
    done = trials[trials.state == "COMPLETE"] if not trials.empty else trials
    for flag, words in (
        ("busy", "measured while other processes used the cores (marked busy)"),
        ("noisy", "still noisy after their repeats (marked noisy)"),
    ):
        if flag in done and len(done):
            n = sum(_flag(v) for v in done[flag])
            if n:
                notes.append(f"{n} of {len(done)} completed trials were {words}")
    return notes


def _split_note(baseline: BaselineRecord, metric: str) -> str:
    if baseline.scored_on_test:
        return (
            f"this study was scored before validation-split selection: its {metric} is on the "
            "test split, which the search selected on, so it is optimistic"
        )
    if baseline.test_accuracy is None:
        return (
            f"this task has no separate test split: {metric} is on the validation split the "
            "search selected on, and no test figure is reported"
        )
    return (
        f"{metric} (the objective) is on the validation split; test {metric}, on the held-out "
        "test split, is the figure to quote"
    )


def output_notes(model: dict[str, Any]) -> list[str]:
    """What the measured files compute and what runs outside them (post-processing such as
    box decoding and NMS), what the metric read and how outputs were distilled, from the
    study's ``model`` record; none for a study made before it was recorded."""
    read = (model.get("export") or {}).get("outputs") or {}
    if not read:
        return []
    shapes = ", ".join(f"{n} {tuple(s)}" for n, s in (read.get("outputs") or {}).items())
    return [
        f"exported and measured: {read.get('exported')} (outputs per item: {shapes})",
        f"the metric reads {read.get('scored')}; distillation: {read.get('distillation')}",
    ]


def confirmation_note(confirmed: dict[str, Any]) -> str:
    """One sentence on the front's confirmation, or '' when there was none."""
    if not confirmed:
        return ""
    rows = confirmed.get("trials") or {}
    off = sorted((n for n, r in rows.items() if not r.get("on_front")), key=int)
    contended = confirmed.get("contended", (confirmed.get("load") or {}).get("busy"))
    busy = ""
    if contended:
        busy = (
            " while other processes used the cores (contended: the figures may be off; confirm "
            "again on a quiet machine)"
        )
    elif contended is not None:
        busy = " on a quiet machine"
    fell = f"; off the front after it: trial(s) {', '.join(off)}" if off else "; all stayed on it"
    processes = confirmed.get("processes") or 0
    sessions = " and between sessions" if (confirmed.get("sessions") or {}).get("spread") else ""
    where = (
        f" in {processes} fresh processes (the intervals cover the variation between them"
        f"{sessions})"
        if processes
        else ""
    )
    return (
        f"the front was confirmed at {confirmed.get('at', '?')}{busy}: {len(rows)} trial(s) and "
        f"the baseline re-measured interleaved over {confirmed.get('rounds')} rounds{where}{fell}"
    )


def row_notes(r: pd.Series) -> str:
    """``redo of trial N``, ``busy``, ``noisy``, ``off front (confirmed)`` for one trial row."""
    words = [f"redo of trial {redo_of(r)}"] if redo_of(r) is not None else []
    words += [w for w in ("busy", "noisy") if _flag(r.get(w))]
    front = r.get("confirmed_front")
    if front is not None and not pd.isna(front) and not bool(front):
        words.append("off front (confirmed)")
    return ", ".join(words)


def _flag(value: object) -> bool:
    """True for a set flag; False for False, None and NaN (a CSV cell or a missing key)."""
    return value is not None and not pd.isna(value) and bool(value)


def redo_of(r: pd.Series) -> int | None:
    """The interrupted trial this row's trial redoes (its ``redo_of`` column), or None."""
    value = r.get("redo_of")
    return int(value) if is_number(value) else None
