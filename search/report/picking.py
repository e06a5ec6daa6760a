"""Pick rules: plain functions that choose one trial from the collected report data.

A rule is a string, as on the command line:

- ``fastest-within:1%``: the lowest p50 latency among trials whose metric (accuracy, or what
  the task scores) is at most 1 percentage point below the baseline's (``0.01`` means the same
  as ``1%``).
- ``accurate-within:5ms``: the highest metric among trials whose p50 latency is at most 5 ms.
- ``knee``: the Pareto trial farthest from the straight line between the front's two ends, in
  objective space scaled to [0, 1]; the point where giving up a little accuracy stops buying
  much speed.

Only completed trials that meet the profile's budgets (Optuna constraints <= 0) are candidates.

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"trial": [0, 1], "state": ["COMPLETE"] * 2, "feasible": [True] * 2,
    ...                    "pareto": [True] * 2, "accuracy": [0.99, 0.97],
    ...                    PAIRED: [2.0, 1.0]})
    >>> pick(df, "fastest-within:1%", baseline_accuracy=0.995).trial
    0
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd

from search.errors import SearchError
from search.record import PAIRED

RULES = ("fastest-within:<drop>%", "accurate-within:<budget>ms", "knee")


class PickError(SearchError):
    """A pick rule is malformed or cannot be applied to this study."""


@dataclass(frozen=True)
class Rule:
    """A parsed pick rule: its kind and bound (metric drop as a fraction, or milliseconds)."""

    text: str
    kind: str
    bound: float | None = None


@dataclass(frozen=True)
class Pick:
    """The trial a rule chose (``None`` when no trial qualifies) and why, in words: ``reason``
    states the rule's test in one phrase; ``detail`` explains it with the chosen trial's
    figures (its metric and change from the baseline, its p50 and speedup, and what it beat)."""

    rule: str
    trial: int | None
    reason: str
    detail: str = ""


_NUMBER = r"([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)"


def parse_rule(text: str) -> Rule:
    """Parse ``fastest-within:1%``, ``accurate-within:5ms`` or ``knee`` into a :class:`Rule`."""
    rule = text.strip().lower()
    if rule == "knee":
        return Rule(text=text, kind="knee")
    if m := re.fullmatch(rf"fastest-within:{_NUMBER}\s*(%?)", rule):
        drop = float(m.group(1)) / (100.0 if m.group(2) else 1.0)
        if not 0.0 <= drop <= 1.0:
            raise PickError(f"pick rule {text!r}: the drop must lie in [0%, 100%]")
        return Rule(text=text, kind="fastest-within", bound=drop)
    if m := re.fullmatch(rf"accurate-within:{_NUMBER}\s*(ms)?", rule):
        return Rule(text=text, kind="accurate-within", bound=float(m.group(1)))
    raise PickError(
        f"unknown pick rule {text!r}: use one of {', '.join(RULES)} "
        "(e.g. fastest-within:1% or accurate-within:5ms)"
    )


def candidates(data: pd.DataFrame) -> pd.DataFrame:
    """Completed, within-budget trials that have both objectives."""
    if data.empty:
        return data
    ok = (data["state"] == "COMPLETE") & data["feasible"].astype(bool)
    ok &= data["accuracy"].notna() & data[PAIRED].notna()
    return data[ok]


def pick(
    data: pd.DataFrame,
    rule: str | Rule,
    *,
    baseline_accuracy: float | None,
    metric: str = "accuracy",
) -> Pick:
    """Apply one pick rule to :func:`search.report.collect`'s data; ties go to the lower number.

    Args:
        data: One row a trial with ``trial``, ``state``, ``feasible``, ``pareto``, ``accuracy``
            (the task's metric) and the paired latency (:data:`search.record.PAIRED`) columns.
        rule: A rule string or a parsed :class:`Rule`.
        baseline_accuracy: The study's baseline metric; ``fastest-within`` needs it.
        metric: What the task's metric is called, for the reason in words.

    Raises:
        PickError: for a malformed rule, or ``fastest-within`` without a baseline.
    """
    rule = parse_rule(rule) if isinstance(rule, str) else rule
    pool = candidates(data)
    if pool.empty:
        return Pick(rule.text, None, "no completed trial within the budgets")
    if rule.kind == "fastest-within":
        if baseline_accuracy is None:
            raise PickError(f"pick rule {rule.text!r} needs the study's baseline {metric}")
        return _fastest_within(pool, rule, base=baseline_accuracy, metric=metric)
    if rule.kind == "accurate-within":
        return _accurate_within(pool, rule, metric=metric)
    front = pool[pool.pareto.astype(bool)] if "pareto" in pool else pool
    return _knee(front if not front.empty else pool, rule, metric=metric)


def figures(row: pd.Series, metric: str) -> str:
    """``accuracy 0.9450 (-0.50% vs baseline), p50 5.000 ms (2.00x)``: one trial's figures."""
    change = row.get("accuracy_change")
    speedup = row.get("speedup")
    vs = f" ({change:+.2%} vs baseline)" if _number(change) else ""
    fast = f" ({speedup:.2f}x the baseline's speed)" if _number(speedup) else ""
    return f"{metric} {row.accuracy:.4f}{vs}, p50 {row[PAIRED]:.3f} ms{fast}"


def _number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _fastest_within(pool: pd.DataFrame, rule: Rule, *, base: float, metric: str) -> Pick:
    floor = base - (rule.bound or 0.0)
    ok = pool[pool.accuracy >= floor - 1e-12]
    if ok.empty:
        closest = pool.accuracy.max() - base
        why = (
            f"no trial within {rule.bound:.2%} of the baseline {metric} (closest: {closest:+.2%})"
        )
        return Pick(rule.text, None, why)
    order = ok.sort_values([PAIRED, "accuracy", "trial"], ascending=[True, False, True])
    why = f"fastest trial with {metric} >= {floor:.4f} (baseline - {rule.bound:.2%})"
    best = order.iloc[0]
    detail = (
        f"{figures(best, metric)}; the fastest of the {len(ok)} of {len(pool)} completed "
        f"within-budget trials whose {metric} is at least {floor:.4f} (the baseline's "
        f"{base:.4f} minus {rule.bound:.2%})"
    )
    return Pick(rule.text, int(best.trial), why, _next(detail, order, metric, "faster"))


def _accurate_within(pool: pd.DataFrame, rule: Rule, *, metric: str) -> Pick:
    ok = pool[pool[PAIRED] <= (rule.bound or 0.0)]
    if ok.empty:
        fastest = pool[PAIRED].min()
        why = f"no trial at or under {rule.bound:g} ms p50 (fastest: {fastest:.3f} ms)"
        return Pick(rule.text, None, why)
    order = ok.sort_values(["accuracy", PAIRED, "trial"], ascending=[False, True, True])
    best = order.iloc[0]
    detail = (
        f"{figures(best, metric)}; the highest {metric} of the {len(ok)} of {len(pool)} "
        f"completed within-budget trials with a p50 of at most {rule.bound:g} ms"
    )
    return Pick(
        rule.text,
        int(best.trial),
        f"highest {metric} at <= {rule.bound:g} ms p50",
        _next(detail, order, metric, "more accurate"),
    )


def _next(detail: str, order: pd.DataFrame, metric: str, better: str) -> str:
    """``detail`` and the runner-up it beat, when there is one."""
    if len(order) < 2:
        return detail
    second = order.iloc[1]
    return f"{detail}; {better} than the runner-up, trial {int(second.trial)}: " + figures(
        second, metric
    )


def _knee(front: pd.DataFrame, rule: Rule, *, metric: str) -> Pick:
    found = knee_of(front)
    row = front[front.trial == found.trial].iloc[0]
    corner = (
        f"the one nearest the ideal corner (the front's best {metric} and lowest p50), both "
        "objectives scaled to [0, 1]"
    )
    if found.points == 1:
        why = "the front's only trial"
    elif found.distance is None and found.points == 2:
        why = f"of the front's 2 trials, {corner}"
    elif found.distance is None:
        why = (
            f"no trial of the front's {found.points} lies above the straight line from its "
            f"fastest end (trial {found.fastest}) to its most accurate end (trial "
            f"{found.accurate}), so {corner}"
        )
    else:
        why = (
            f"of the front's {found.points} trials, the farthest above the straight line from "
            f"its fastest end (trial {found.fastest}) to its most accurate end (trial "
            f"{found.accurate}): {found.distance:.3f} with both objectives scaled to [0, 1]; "
            "on either side of it a step along the front trades much of one objective for "
            "little of the other"
        )
    detail = f"{figures(row, metric)}; {why}"
    return Pick(rule.text, found.trial, "knee of the Pareto front", detail)


@dataclass(frozen=True)
class Knee:
    """The knee of a front: the trial, the front's size and ends, and the knee's distance above
    the line between the ends (``None`` when the nearest-to-the-ideal-corner fallback chose)."""

    trial: int
    points: int
    fastest: int
    accurate: int
    distance: float | None


def knee(front: pd.DataFrame) -> int:
    """The knee of a front given as rows with ``trial``, ``accuracy`` and the paired latency
    (:func:`knee_of`'s trial)."""
    return knee_of(front).trial


def knee_of(front: pd.DataFrame) -> Knee:
    """The knee of a front given as rows with ``trial``, ``accuracy`` and the paired latency.

    Both objectives are scaled to [0, 1] (1 = best). The knee is the point farthest above the
    line between the front's fastest and most accurate ends; with fewer than three points, or
    when the front is a straight line, the point nearest the ideal corner (1, 1) wins.
    """
    rows = front.sort_values([PAIRED, "trial"])
    trials = [int(t) for t in rows.trial]
    acc, lat = list(rows.accuracy.astype(float)), list(rows[PAIRED].astype(float))
    if len(trials) == 1:
        return Knee(trials[0], 1, trials[0], trials[0], None)
    span_a = (max(acc) - min(acc)) or 1.0
    span_l = (max(lat) - min(lat)) or 1.0
    # Scaled so that larger is better on both axes.
    pts = [
        ((a - min(acc)) / span_a, (max(lat) - t) / span_l) for a, t in zip(acc, lat, strict=True)
    ]
    (x0, y0), (x1, y1) = pts[0], pts[-1]
    length = math.hypot(x1 - x0, y1 - y0)
    dist = [
        ((x1 - x0) * (y - y0) - (y1 - y0) * (x - x0)) / length if length else 0.0 for x, y in pts
    ]
    best = max(range(len(pts)), key=lambda i: (round(dist[i], 12), -trials[i]))
    distance: float | None = dist[best]
    if len(pts) < 3 or dist[best] <= 1e-12:
        distance = None
        best = min(
            range(len(pts)), key=lambda i: (math.hypot(1 - pts[i][0], 1 - pts[i][1]), trials[i])
        )
    return Knee(trials[best], len(trials), trials[0], trials[-1], distance)
