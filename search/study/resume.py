"""Resuming a study: what its settings must match, and what an interrupted run left behind.

A study records what its space and profile files say as content digests. Version 2 leaves out
values equal to their defaults, so adding a defaulted field to ``Space`` or ``Profile`` keeps
every study resumable; studies recorded with version 1 (whole dumps, defaults included) are
checked the version-1 way and then upgraded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
from typing import Any, TypeVar

import optuna
from optuna.trial import TrialState
from pydantic import BaseModel

from search.config import Profile, Space
from search.distributed.budget import enqueue_redo, is_redo, retry_failed
from search.errors import SearchError
from search.measure.spec import MeasureSettings

DIGEST_VERSION = 2
_WORDS = ("name", "path", "description")  # where a file lies and what it says in words
M = TypeVar("M", bound=BaseModel)  # a space, a profile or one of their sections


def content_digests(space: Space, profile: Profile) -> dict[str, Any]:
    """Version-2 digests of what the files say: not their words, the default trial count or
    the agent's address (it may move), and no value that equals its default."""
    space = _ignoring_words(space)
    space = space.model_copy(update={"search": _default(space.search, "trials")})
    profile = _default(_ignoring_words(profile), "agent")
    return {
        "space_digest": _sha(space.model_dump_json(exclude_defaults=True)),
        "profile_digest": _sha(profile.model_dump_json(exclude_defaults=True)),
        "digest_version": DIGEST_VERSION,
    }


def legacy_digests(space: Space, profile: Profile) -> dict[str, set[str]]:
    """The version-1 digests these files may have had: whole dumps, defaults included. Profiles
    then had a ``device`` key (first in the dump; nothing read it): every value it could take
    is tried."""
    words = dict.fromkeys(_WORDS, True)
    space_json = space.model_dump_json(exclude={**words, **_later_defaults(space)})
    # prune.importance was one name then, a list of choices since (LAMP, issue 26).
    (first, *more) = space.prune.importance
    if not more:
        space_json = space_json.replace(f'"importance":["{first}"]', f'"importance":"{first}"', 1)
    # Measure settings added since (issue 15) were not in a version-1 dump; at their defaults
    # they leave it as it was, set otherwise they are other content.
    later = {k for k in _LATER_MEASURE if getattr(profile.measure, k) == _MEASURE_DEFAULTS[k]}
    top = {k: True for k, default in _LATER_PROFILE.items() if getattr(profile, k) == default}
    profile_json = profile.model_dump_json(
        exclude={**words, **top, "agent": True, "measure": later}
    )
    devices = ("cpu", "cuda", "arm", "jetson")
    return {
        "space_digest": {_sha(space_json)},
        "profile_digest": {_sha(f'{{"device":"{d}",{profile_json[1:]}') for d in devices},
    }


# Space fields added after version-1 digests were written: left out of the version-1 dump while
# they hold their defaults, so studies recorded then still match.
_LATER = {
    "search": ("warm_start",),
    "quantize": ("unmatched_groups", "derived_groups", "encoding"),
    "distill": ("plans_per_student",),
    "prune": ("groups", "scale", "sensitivity", "probe_ratio"),  # issue 29: per-group ratios
}
_LATER_MEASURE = (
    "paired_rounds",
    "paired_runs",
    "noise_threshold",
    "max_repeats",
    "busy_threshold",
    "confirm_rounds",
    "steady_window",  # issue 25: warm-up to a steady state
    "steady_tolerance",
    "warmup_max_runs",
    "warmup_max_seconds",
    "confirm_processes",  # issue 29: confirmation pooled over fresh processes
    "quiet_wait_s",
)
# Profile keys added since, with their defaults: a runtime of its own, fixed input dimensions.
_LATER_PROFILE: dict[str, Any] = {"runtime": None, "free_dimensions": {}}
_MEASURE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(MeasureSettings)}


def _later_defaults(space: Space) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"search": {"trials"}}
    for section, names in _LATER.items():
        part = getattr(space, section)
        defaults = {n for n in names if getattr(part, n) == type(part).model_fields[n].default}
        out.setdefault(section, set()).update(defaults)
    return out


def check_settings(
    old: dict[str, Any], new: dict[str, Any], *, legacy: dict[str, set[str]], study_name: str
) -> bool:
    """Raise :class:`SearchError` unless settings ``new`` match the recorded ``old``; True when
    ``old`` should be replaced by ``new`` (version-1 digests that still match)."""
    upgrade = old.get("digest_version") != DIGEST_VERSION and "space_digest" in old
    if upgrade:
        matched = all(old.get(k) in options for k, options in legacy.items())
        compare = {**new, **({k: old.get(k) for k in legacy} if matched else {})}
        compare.pop("digest_version")
    else:
        # Studies made before digests were recorded are compared on what they recorded.
        digests = {k for k in new if k.endswith("_digest") or k == "digest_version"}
        compare = {k: v for k, v in new.items() if k in old or k not in digests}
    changed = [k for k in {**old, **compare} if old.get(k) != compare.get(k)]
    if changed:
        diff = ", ".join(
            f"a different {k.removesuffix('_digest')} file's content"
            if k.endswith("_digest")
            else f"{k}={old.get(k)!r}"
            for k in changed
        )
        raise SearchError(
            f"study {study_name!r} was created with {diff}; resume it with the "
            "same settings or pick a new name with --study"
        )
    return upgrade


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _default(model: M, key: str) -> M:
    """``model`` with field ``key`` set back to its default (so the digest leaves it out)."""
    return model.model_copy(update={key: type(model).model_fields[key].default})


def _ignoring_words(model: M) -> M:
    for key in _WORDS:
        model = _default(model, key)
    return model


def fail_stale_trials(study: optuna.Study) -> int:
    """Mark RUNNING trials whose process on this host has ended as FAIL ('interrupted') and
    retry each once with the same parameters, as the heartbeat check does for any host.

    Immediate on this host (no grace period), and it also catches a worker killed before its
    first heartbeat, which Optuna's check never calls stale.
    """
    host = socket.gethostname()
    failed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or pid is None or _alive(pid):
            continue
        failed += retry_failed(study, t, f"interrupted (process {pid} ended)")
    redo_interrupted(study)
    return failed


def redo_interrupted(study: optuna.Study) -> list[int]:
    """Enqueue a redo of each trial stopped by Ctrl-C, a signal or a failing target that has
    none yet; it runs before the waiting queue (:func:`search.distributed.budget.slot`).
    Returns the numbers of the trials to be redone.

    A trial whose worker died is redone here only where the storage had no retry callback to
    enqueue its retry when it was failed, and only once. A warm-start trial the queue got back
    as a fresh copy (:func:`search.study.references.ensure_quantization`) is taken out of the
    queue, uncounted,
    so its parameters run once, as the redo.
    """
    trials = study.get_trials(deepcopy=False)
    redone = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    numbers = []
    for t in trials:
        reason = str(t.user_attrs.get("fail_reason", ""))
        if t.state != TrialState.FAIL or not t.user_attrs.get("interrupted"):
            continue
        # A dead worker's trial was retried by the storage's callback (when it has one), and
        # a redo that died too is not redone again: a trial that kills its process would
        # otherwise kill every resume.
        crashed = reason.startswith("interrupted (")
        if t.number in redone or (crashed and t.system_attrs.get("retry_history")):
            continue
        fixed = t.system_attrs.get("fixed_params")
        for copy in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if fixed is not None and copy.system_attrs.get("fixed_params") == fixed:
                _withdraw(study, copy, f"not run: the redo of trial {t.number} runs it")
        enqueue_redo(study, t)
        numbers.append(t.number)
    return numbers


def _withdraw(study: optuna.Study, t: optuna.trial.FrozenTrial, reason: str) -> None:
    """Take the waiting trial ``t`` out of the queue, uncounted (unless a worker took it)."""
    if is_redo(t):
        return
    storage, tid = study._storage, t._trial_id  # noqa: SLF001 - no public API for this
    try:
        if not storage.set_trial_state_values(tid, TrialState.RUNNING):
            return
    except optuna.exceptions.UpdateFinishedTrialError:
        return
    storage.set_trial_user_attr(tid, "uncounted", True)
    storage.set_trial_user_attr(tid, "fail_reason", reason)
    storage.set_trial_state_values(tid, TrialState.FAIL)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# How a study's objectives are scored. Version 2 (issue 15): ``accuracy`` on the validation
# split (``test_accuracy`` beside it) and latency paired with the baseline. A study scored
# before then (test-split accuracy, latency measured alone) cannot take new trials: their
# objectives would not compare with its old ones.
SCORING = {
    "version": 2,
    "accuracy": "validation split",
    "latency": "relative to the baseline, timed interleaved, x the baseline's p50",
}


def record_scoring(study: optuna.Study, *, refuse_old: bool) -> None:
    """Record :data:`SCORING` with a study that has no results yet; leave a study scored the
    old way (a baseline or trials, no scoring recorded) as it is, or with ``refuse_old`` raise
    :class:`SearchError` (before anything is written)."""
    if study.user_attrs.get("scoring") is not None:
        return
    if "baseline" in study.user_attrs or study.get_trials(deepcopy=False):
        if refuse_old:
            raise SearchError(
                f"study {study.study_name!r} was scored before paired latency and validation-"
                "split objectives, so new trials would not compare with its old ones: report or "
                "export it as it is, or start a new study with --study NAME"
            )
        return
    study.set_user_attr("scoring", SCORING)
