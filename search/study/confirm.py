"""Confirmation of the front: the Pareto trials and the baseline re-measured side by side.

A trial reaches the front on one measurement; a lucky one (a quiet second, a preempted
baseline) can put it there. :func:`confirm_front` times every Pareto trial's measured file and
the baseline interleaved over ``confirm_rounds`` rounds (the profile's measure settings; the
same loop and pairing as a trial's, :func:`~search.measure.paired.time_paired`), then asks
which trials are still non-dominated on (validation metric, confirmed latency). The result is
kept as the study user attribute ``confirmed``; the report, ``pareto.csv`` and the export's
``trial.json`` show it. Only trials on the front are re-measured: one that the confirmation
would have promoted from behind it is not found this way.

The confirmation measures where the study measured: on this machine, or on the profile's
agent (``POST /v1/confirm`` runs the same timing there, :mod:`search.measure.confirmation`). It
refuses, with one line, a study measured on another device than the target it reaches now.
"""

from __future__ import annotations

import contextlib
import datetime
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from search.core.paths import MODEL_ONNX, StudyPaths
from search.errors import SearchError
from search.measure.confirmation import MAX_FILES
from search.measure.paired import PairedLatency
from search.measure.pooled import session_spread, widened
from search.measure.target import Target, close_target, open_target
from search.record import PAIRED, TrialRecord, baseline_of

if TYPE_CHECKING:
    from search.config import Profile

LATENCY_INPUT = "latency_input.npy"


def save_latency_input(references: Path, array: np.ndarray) -> None:
    """Keep the study's fixed latency input beside the baseline, for later confirmations."""
    references.mkdir(parents=True, exist_ok=True)
    path = references / LATENCY_INPUT
    if not path.is_file():
        np.save(path, np.asarray(array), allow_pickle=False)  # its dtype: int64 ids stay ids


def _latency_input(references: Path) -> np.ndarray | None:
    """The study's latency input (no pickle: plain array), or None for a study that kept none
    (the target then times a seeded normal array of the model's input shape)."""
    path = references / LATENCY_INPUT
    return np.load(path, allow_pickle=False)[:1] if path.is_file() else None


def _measured_file(t: FrozenTrial, study_dir: Path) -> Path | None:
    rec = TrialRecord.of(t)
    name = Path(rec.measured_file if rec and rec.measured_file else MODEL_ONNX)
    for cand in (name, StudyPaths.of(study_dir).trial_dir(t.number) / name.name):
        if cand.is_file():
            return cand
    return None


def _check_target(study: optuna.Study, target: Target) -> None:
    """Refuse a study whose numbers the target's cannot be compared with."""
    baseline = baseline_of(study)
    before = baseline.measurement.get("device") if baseline else None
    if before and before != target.device:
        raise SearchError(
            f"study {study.study_name!r} was measured on '{before}', not {target.where} "
            f"('{target.device}'): confirm it where it was measured"
        )
    if baseline is None or baseline.latency_scale_ms is None:
        raise SearchError(
            f"study {study.study_name!r} was measured before paired latency: it has no baseline "
            "scale to confirm against; start a new study to get confirmed figures"
        )


def _time_front(target: Target, found: list[tuple[str, Path]], references: Path) -> dict:
    """The front's files timed with the baseline on ``target``, at most ``MAX_FILES`` at once."""
    feed = _latency_input(references)
    timed: dict[str, Any] = {}
    for i in range(0, len(found), MAX_FILES):
        part = target.confirm(
            dict(found[i : i + MAX_FILES]), reference=references / MODEL_ONNX, latency_input=feed
        )
        timed = {**part, "paired": {**timed.get("paired", {}), **part["paired"]}}
    return timed


def confirm_front(study: optuna.Study, *, target: Target, study_dir: Path) -> dict[str, Any]:
    """Re-measure the Pareto trials and the baseline interleaved on ``target`` (this machine or
    the agent); keep and return the result.

    Returns:
        The ``confirmed`` study attribute: ``rounds``, ``runs_per_round``, ``clock``, ``load``,
        ``baseline_measured_p50_ms``, ``device``, ``measured_by``, ``at`` (UTC) and ``trials``:
        trial number (as text) -> ``latency_paired_ms`` (relative x the baseline's scale, as
        the objective), ``latency_ci_ms``, ``latency_relative``, ``relative_ci``, ``spread``,
        ``noisy`` (these two over the processes alone), ``measured_p50_ms``, ``study_p50_ms``
        (the trial's figure before), ``on_front`` and, where the intervals were widened by the
        variation between sessions (``sessions``: :mod:`search.measure.pooled`), ``process_ci``.

    Raises:
        SearchError: the study was measured elsewhere or before paired latency, or the
            baseline's file is missing.
        AgentError: the agent could not be reached or refused.
    """
    _check_target(study, target)
    baseline = baseline_of(study)
    assert baseline is not None and baseline.latency_scale_ms is not None  # _check_target
    references = StudyPaths.of(study_dir).baseline_dir
    if not (references / MODEL_ONNX).is_file():
        raise SearchError(f"no baseline file at {references / MODEL_ONNX}; pass --results-dir")
    front = {str(t.number): t for t in study.best_trials}
    paths = {n: _measured_file(t, Path(study_dir)) for n, t in front.items()}
    missing = sorted(n for n, p in paths.items() if p is None)
    found = sorted((n, p) for n, p in paths.items() if p is not None)
    if not found:
        raise SearchError(
            f"none of the {len(paths)} Pareto trials' files is under {study_dir}/artifacts; "
            "pass the --results-dir the study wrote to"
        )
    timed = _time_front(target, found, references)
    paired = {n: PairedLatency.from_dict(d) for n, d in timed["paired"].items()}
    scale = float(baseline.latency_scale_ms)
    threshold = target.spec.measure.noise_threshold
    confirmed = {
        "rounds": timed["rounds"],
        "runs_per_round": timed["runs_per_round"],
        "clock": timed["clock"],
        "load": timed["load"],
        "baseline_measured_p50_ms": timed["reference_p50_ms"],
        "device": timed.get("device", target.device),
        "measured_by": timed.get("measured_by", "here"),
        # Fresh processes pooled (0: the measuring process itself), and whether other processes
        # used the cores meanwhile (a co-runner that trains moves a ratio: measure.pooled).
        "processes": timed.get("processes", 0),
        "contended": bool(timed.get("contended", (timed["load"] or {}).get("busy"))),
        "quiet_wait": timed.get("quiet_wait"),
        "missing": missing,
        "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "trials": _rows(paired, front, scale=scale, threshold=threshold),
    }
    confirmed["sessions"] = _widen(confirmed["trials"], front, scale=scale)
    before = study.user_attrs.get("confirmed")
    if before:
        confirmed["previous"] = against_previous(confirmed, before)
    study.set_user_attr("confirmed", confirmed)
    return confirmed


def against_previous(now: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """Whether each trial confirmed again lands inside the interval the previous confirmation
    gave it: ``{"at", "contended", "trials": {n: {"interval", "now", "inside"}}, "inside", "of"}``
    (only trials both confirmed; ``now``: the new figure relative to the baseline)."""
    rows = {}
    for n, row in now["trials"].items():
        old = (before.get("trials") or {}).get(n)
        if not old or not old.get("relative_ci"):
            continue
        low, high = old["relative_ci"]
        rel = row["latency_relative"]
        rows[n] = {"interval": [low, high], "now": rel, "inside": bool(low <= rel <= high)}
    return {
        "at": before.get("at"),
        "contended": before.get("contended"),
        "trials": rows,
        "inside": sum(r["inside"] for r in rows.values()),
        "of": len(rows),
    }


def _rows(
    paired: dict[str, PairedLatency],
    front: dict[str, FrozenTrial],
    *,
    scale: float,
    threshold: float,
) -> dict[str, dict[str, Any]]:
    """Each confirmed trial's figures, and whether it is still on the front among them."""
    trials = {
        n: {
            PAIRED: p.relative * scale,
            "latency_ci_ms": [p.ci_low * scale, p.ci_high * scale],
            "latency_relative": p.relative,
            "relative_ci": [p.ci_low, p.ci_high],
            "spread": p.spread,
            "noisy": p.spread > threshold,
            "processes": p.processes,
            "process_relatives": list(p.process_relatives),
            "measured_p50_ms": p.candidate_p50_ms,
            "study_p50_ms": front[n].values[1],
            "accuracy": front[n].values[0],
        }
        for n, p in paired.items()
    }
    for n, row in trials.items():
        row["on_front"] = not any(_dominates(other, row) for m, other in trials.items() if m != n)
    return trials


def _widen(
    trials: dict[str, dict[str, Any]], front: dict[str, FrozenTrial], *, scale: float
) -> dict:
    """Widen each trial's interval by the spread between sessions: the trial's own measurement
    against this confirmation, over the front (:func:`search.measure.pooled.session_spread`);
    ``process_ci`` keeps the interval over the processes alone."""
    pairs = []
    for n, row in trials.items():
        rec = TrialRecord.of(front[n])
        if (
            rec is not None
            and rec.latency_relative
            and row["relative_ci"][0] < row["relative_ci"][1]
        ):
            pairs.append((row["latency_relative"], rec.latency_relative, bool(rec.busy)))
    info = session_spread(pairs)
    for row in trials.values() if info["spread"] is not None else ():
        low, high = row["relative_ci"]
        if low < high:
            row["process_ci"] = [low, high]
            low, high = widened(row["latency_relative"], low, high, info["spread"])
            row["relative_ci"], row["latency_ci_ms"] = [low, high], [low * scale, high * scale]
    return info


def _dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """``a`` is at least as accurate and as fast as ``b``, and better in one."""
    acc_a, acc_b = a["accuracy"], b["accuracy"]
    lat_a, lat_b = a[PAIRED], b[PAIRED]
    return acc_a >= acc_b and lat_a <= lat_b and (acc_a > acc_b or lat_a < lat_b)


def summary_lines(confirmed: dict[str, Any]) -> list[str]:
    """What the confirmation found, one line a trial, for the console."""
    from search.measure.load import describe_load

    processes = confirmed.get("processes", 0)
    where = f" in {processes} fresh processes" if processes else ""
    lines = [
        f"confirmed the front{where}: {len(confirmed['trials'])} trial(s) and the baseline over "
        f"{confirmed['rounds']} interleaved rounds; {describe_load(confirmed['load'])}"
    ]
    previous = (confirmed.get("previous") or {}).get("trials") or {}
    for n, row in sorted(confirmed["trials"].items(), key=lambda kv: kv[1][PAIRED]):
        low, high = row["latency_ci_ms"]
        flags = "" if row["on_front"] else "  off the front after confirmation"
        flags += "  noisy" if row["noisy"] else ""
        if n in previous:
            where = "inside" if previous[n]["inside"] else "OUTSIDE"
            flags += f"  {where} the previous confirmation's interval"
        lines.append(
            f"  trial {n}: p50 {row[PAIRED]:.3f} ms [{low:.3f}, {high:.3f}] "
            f"(study {row['study_p50_ms']:.3f} ms){flags}"
        )
    sessions = confirmed.get("sessions") or {}
    if sessions.get("spread") is not None:
        lines.append(
            f"  intervals widened by the variation between sessions: the ratios moved "
            f"{100 * math.expm1(sessions['spread']):.0f} % (root mean square over "
            f"{sessions['pairs']} trials) between the trials' own measurements and this "
            "confirmation"
        )
    prev = confirmed.get("previous")
    if prev and prev["of"]:
        lines.append(
            f"  {prev['inside']} of {prev['of']} trial(s) landed inside the interval the "
            f"confirmation of {prev['at']} gave"
        )
    if confirmed.get("missing"):
        lines.append(
            f"  not re-measured (files missing): trials {', '.join(confirmed['missing'])}"
        )
    if confirmed.get("contended", confirmed["load"].get("busy")):
        lines.append(
            "warning: other processes used the cores during the confirmation (contended): a "
            "co-runner that trains or streams memory moves these ratios; run `report --confirm` "
            "again when the machine is quiet"
        )
    return lines


def confirm_after_run(
    study: optuna.Study,
    *,
    profile: Profile,
    study_dir: Path,
    target: Target | None = None,
    timing: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> None:
    """At the end of ``run``: confirm the front on the study's ``target`` (this machine, under
    ``timing()``, the host's lock, when None), print what changed, rewrite the report."""
    from search.core.progress import Ticker, console
    from search.report import write_outputs

    if not study.best_trials:
        return
    if target is None:
        target = open_target(profile.measure_spec(), runtime=profile.runtime, timing=timing)
    try:
        with Ticker(f"confirming the front {target.where}: Pareto trials, baseline"):
            confirmed = confirm_front(study, target=target, study_dir=study_dir)
    except SearchError as e:  # AgentError included; the trials are done: say so, keep the study
        console.print(f"front not confirmed: {e}", markup=False)
        return
    for line in summary_lines(confirmed):
        console.print(line, markup=False)
    write_outputs(study, study_dir, html=True)


def study_profile(study: optuna.Study, *, agent: str | None = None) -> Profile:
    """The profile a study was run with: the file it was created from where it still exists,
    else the built-in profile of that name; ``agent`` (a URL, or ``local``) replaces its agent.

    Raises:
        SearchError: neither can be found, or the study's profile digest no longer matches.
    """
    from search.config import load_profile
    from search.study.resume import content_digests

    settings = study.user_attrs.get("settings") or {}
    source = (study.user_attrs.get("sources") or {}).get("profile")
    name = source if source and Path(source).is_file() else settings.get("profile")
    if not name:
        raise SearchError(f"study {study.study_name!r} records no profile to measure with")
    profile = load_profile(name)
    recorded = settings.get("profile_digest")
    if settings.get("digest_version") == 2 and recorded:
        from search.config import Space

        if content_digests(Space(), profile)["profile_digest"] != recorded:
            raise SearchError(
                f"profile {name} has changed since study {study.study_name!r} was run: "
                "confirming with other measure settings would not compare"
            )
    if agent is not None:
        profile = profile.with_agent(None if agent == "local" else agent)
    return profile


def confirm_study(study: optuna.Study, *, study_dir: Path, agent: str | None = None) -> str:
    """``report --confirm``: confirm the front with the study's own profile, where it measures
    (its agent, or ``agent``); what it found.

    Raises:
        SearchError, AgentError, ProviderError: one line each (no study, another device, the
            agent unreachable or without the profile's providers).
    """
    profile = study_profile(study, agent=agent)
    spec = profile.measure_spec()
    target = open_target(
        spec, agent=profile.agent, runtime=profile.runtime, token_env=profile.agent_token_env
    )
    try:
        confirmed = confirm_front(study, target=target, study_dir=study_dir)
    finally:
        close_target(target)
    return "\n".join(summary_lines(confirmed))
