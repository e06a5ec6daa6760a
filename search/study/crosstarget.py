"""Each target's chosen model measured on the other targets: does the best compressed model
depend on where it runs?

Studies of one task and space on several hardware profiles (``--hw cpu``, ``--hw openvino``) are
grouped by seed (a seed fixes the data splits and the teacher, so the studies of one seed
compress the same model). In each group every study picks its model by one rule
(:func:`search.report.pick`, the knee by default: its *winner*), and on every target of the group
the winners and the uncompressed baseline are timed interleaved, paired with that target's own
winner (:meth:`Target.confirm`, the same loop as the front's confirmation), so a ratio and its
95 % interval say how much slower another target's winner is there than the target's own. Each
winner is also scored there (the task metric of its outputs on the validation split), since a
quantized model's accuracy depends on the provider's kernels too.

Plain data out (:func:`cross_measure` returns JSON); :mod:`search.report.targets` renders it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from search.config import Profile
from search.core.progress import console
from search.errors import SearchError
from search.measure.target import Target, close_target, open_target
from search.record import TrialRecord, baseline_of


@dataclass
class Entry:
    """One study in the comparison: its target (profile), seed and chosen model."""

    study: optuna.Study
    profile: Profile
    seed: int
    winner: int
    winner_file: Path
    baseline_file: Path
    reason: str

    @property
    def target(self) -> str:
        return self.profile.name


def entries(studies: list[optuna.Study], *, pick_rule: str) -> list[Entry]:
    """The comparison's studies with their winners.

    Raises:
        SearchError: studies of different tasks or spaces, a target twice for one seed, a
            study without baseline or without a trial the rule picks, or missing files.
    """
    from search.report import collect, pick
    from search.study.confirm import study_profile

    first = studies[0].user_attrs.get("settings") or {}
    out, seen = [], set()
    for study in studies:
        settings = study.user_attrs.get("settings") or {}
        for key in ("task", "space"):
            if settings.get(key) != first.get(key):
                raise SearchError(
                    f"study {study.study_name!r} has {key} {settings.get(key)!r}, not "
                    f"{first.get(key)!r}: compare studies of one task and space"
                )
        profile = study_profile(study)
        seed = int(settings.get("seed", 0))
        if (profile.name, seed) in seen:
            raise SearchError(f"two studies on '{profile.name}' with seed {seed}: give one each")
        seen.add((profile.name, seed))
        baseline = baseline_of(study)
        if baseline is None:
            raise SearchError(f"study {study.study_name!r} has no baseline yet: run it first")
        chosen = pick(collect(study), pick_rule, baseline_accuracy=baseline.accuracy)
        if chosen.trial is None:
            raise SearchError(f"study {study.study_name!r}: --pick {pick_rule}: {chosen.reason}")
        record = TrialRecord.of(study.trials[chosen.trial])
        assert record is not None  # the rule picks completed trials only
        files = (Path(record.measured_file), Path(baseline.measured_onnx))
        for f in files:
            if not f.is_file():
                raise SearchError(f"study {study.study_name!r}: {f} is missing; re-run it here")
        out.append(Entry(study, profile, seed, chosen.trial, files[0], files[1], chosen.reason))
    return out


def cross_measure(
    group: list[Entry], *, latency_input: np.ndarray, task_inputs: Any = None
) -> list[dict[str, Any]]:
    """Every winner of ``group`` (one seed) timed and scored on every target of the group.

    Args:
        group: Entries of one seed, one per target.
        latency_input: The study's fixed latency input (one row is repeated to the batch size).
        task_inputs: ``(x_val, y_val, metric)`` to score each winner where it runs, or None.

    Returns:
        One row per (target measured on, winner's target): ``relative`` (its latency over the
        target's own winner's, 1.0 for the own winner), ``ci`` (95 %), ``speedup`` and
        ``speedup_ci`` over the baseline (the own winner's only: paired with the baseline in
        the same rounds), ``accuracy`` there, ``rounds``, ``clock``, ``device``, ``busy``.
    """
    rows = []
    for here in group:
        p = here.profile
        target = open_target(
            p.measure_spec(), agent=p.agent, runtime=p.runtime, token_env=p.agent_token_env
        )
        try:
            others = {f"winner-{o.target}": o for o in group if o is not here}
            paths = {
                "baseline": here.baseline_file,
                **{k: o.winner_file for k, o in others.items()},
            }
            with console.status(f"timing {len(group)} winner(s) and the baseline {target.where}"):
                timed = target.confirm(
                    paths, reference=here.winner_file, latency_input=latency_input
                )
                scores = {o.target: _score(target, o, latency_input, task_inputs) for o in group}
        finally:
            close_target(target)
        paired, base = timed["paired"], timed["paired"]["baseline"]
        common = {
            "seed": here.seed,
            "measured_on": here.target,
            "rounds": timed["rounds"],
            "clock": timed["clock"],
            "device": timed.get("device", ""),
            "busy": bool((timed.get("load") or {}).get("busy")),
        }
        rows.append({
            **common, "winner_of": here.target, "trial": here.winner, "relative": 1.0,
            "ci": [1.0, 1.0], "speedup": base["relative"],
            "speedup_ci": [base["ci_low"], base["ci_high"]], "accuracy": scores[here.target],
        })  # fmt: skip
        for name, other in others.items():
            got = paired[name]
            rows.append({
                **common, "winner_of": other.target, "trial": other.winner,
                "relative": got["relative"], "ci": [got["ci_low"], got["ci_high"]],
                "speedup": base["relative"] / got["relative"], "speedup_ci": None,
                "accuracy": scores[other.target],
            })  # fmt: skip
    return rows


def _score(
    target: Target, entry: Entry, latency_input: np.ndarray, task_inputs: Any
) -> float | None:
    if task_inputs is None:
        return None
    x_val, y_val, metric = task_inputs
    m = target.measure(entry.winner_file, eval_inputs=x_val, latency_input=latency_input)
    return float(metric([o[: len(y_val)] for o in m.outputs], y_val))


def by_seed(all_entries: list[Entry]) -> dict[int, list[Entry]]:
    """Entries grouped by seed, groups with fewer than two targets left out."""
    groups: dict[int, list[Entry]] = defaultdict(list)
    for e in all_entries:
        groups[e.seed].append(e)
    return {s: g for s, g in sorted(groups.items()) if len(g) > 1}
