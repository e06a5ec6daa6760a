"""Plans per student: after a trial distills a new student, the study enqueues
``distill.plans_per_student - 1`` trials that fix its architecture parameters and leave the
precision plan to the sampler; a trial that drew a plan its student was already measured with
stops before any work, does not count, and the student gets another plan.

The students themselves are kept by :class:`search.trial.students.StudentStore`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from search.config import Profile, Space, TrialConfig
    from search.record import TrialRecord


def quantize_params(space: Space, profile: Profile | None) -> set[str]:
    """Names of the Optuna parameters of the precision plan (the rest fix the student)."""
    return set(space.quantize.choices(profile.precisions if profile else None))


def enqueue_plans(
    study: optuna.Study, trial: optuna.Trial, *, space: Space, profile: Profile | None
) -> int:
    """After ``trial`` distilled a new student: enqueue trials that fix its architecture
    parameters and leave the precision plan to the sampler, up to ``plans_per_student`` plans
    for the student in all. Returns how many were enqueued (0 when the space searches no
    precision, or enough are already there, e.g. on resume)."""
    wanted = space.distill.plans_per_student - 1
    names = quantize_params(space, profile)
    fixed = {k: v for k, v in trial.params.items() if k not in names}
    if wanted < 1 or len(fixed) == len(trial.params):
        return 0
    already = sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("student_of") == trial.number
    )
    for _ in range(wanted - already):
        study.enqueue_trial(fixed, user_attrs={"student_of": trial.number})
    return max(0, wanted - already)


def replan(
    study: optuna.Study, trial: optuna.Trial, *, space: Space, profile: Profile | None
) -> bool:
    """Enqueue another plan for the student of ``trial`` (enqueued for it, but given a plan the
    student was already measured with): the nearest plan to the sampler's that the student has
    not been measured with (one precision or calibration choice changed, in parameter order),
    with the architecture fixed. At most ``plans_per_student`` repeats per student; returns
    whether one was enqueued (False too when every plan was measured)."""
    source = trial.user_attrs.get("student_of")
    if source is None:
        return False
    mine = [t for t in study.get_trials(deepcopy=False)
            if t.number == source or t.user_attrs.get("student_of") == source]  # fmt: skip
    if sum(t.user_attrs.get("same_plan_as") is not None for t in mine) >= (
        space.distill.plans_per_student
    ):
        return False
    seen: list[dict[str, Any] | None] = [
        effective_plan((t.user_attrs.get("config") or {}).get("quantize") or {}) for t in mine
    ]
    seen += [_plan_of(space, profile, t.system_attrs.get("fixed_params") or {})
             for t in mine if t.state.name == "WAITING"]  # fmt: skip
    neighbour = _unseen_neighbour(space, profile, dict(trial.params), seen)
    if neighbour is None:
        return False
    study.enqueue_trial(neighbour, user_attrs={"student_of": source})
    return True


def _plan_of(
    space: Space, profile: Profile | None, params: dict[str, Any]
) -> dict[str, Any] | None:
    """The effective plan that ``params`` fix, or None when they leave part of it open."""
    import optuna

    fixed = optuna.trial.FixedTrial(params)
    try:
        plan = space.quantize.sample(fixed, profile.precisions if profile else None)
    except ValueError:  # FixedTrial: a parameter of the plan is not among ``params``
        return None
    return effective_plan(plan.to_dict())


def _unseen_neighbour(
    space: Space,
    profile: Profile | None,
    params: dict[str, Any],
    seen: list[dict[str, Any] | None],
) -> dict[str, Any] | None:
    """``params`` with one quantize choice changed so that the plan is not in ``seen``."""
    choices = space.quantize.choices(profile.precisions if profile else None)
    for name, options in choices.items():
        if name not in params:
            continue
        for option in options:
            candidate = {**params, name: option}
            plan = _plan_of(space, profile, candidate)
            if plan is not None and plan not in seen:
                return candidate
    return None


def effective_plan(quantize: dict[str, Any]) -> dict[str, Any]:
    """The part of a config's ``quantize`` part that changes the measured file: the precision
    per group, plus calibration, activation and weight types only when some group is
    quantized to integers (an all-float plan ignores them; fp16 needs no calibration)."""
    from search.compress.quantize.qdq import needs_calibration

    plan = dict(quantize.get("precision") or {})
    if not needs_calibration(plan):
        return {"precision": plan}
    keep = ("precision", "calibration", "activations", "weights")
    return {k: quantize.get(k) for k in keep}


def same_plan_as(study: optuna.Study, trial: optuna.Trial, plan: dict[str, Any]) -> int | None:
    """The number of an earlier trial that measured the same precision plan (``plan``: the
    quantize part of a config) on the same student as ``trial``, if any.

    Only trials enqueued for a student (``student_of``) are checked: they share the student, so
    the same :func:`effective_plan` would measure the very same file again.
    """
    source = trial.user_attrs.get("student_of")
    if source is None:
        return None
    from optuna.trial import TrialState

    mine = effective_plan(plan)
    for t in study.get_trials(deepcopy=False):
        if t.number == trial.number:
            continue
        if t.number != source and t.user_attrs.get("student_of") != source:
            continue
        if t.state != TrialState.COMPLETE:
            continue
        if effective_plan((t.user_attrs.get("config") or {}).get("quantize") or {}) == mine:
            return t.number
    return None


def skip_same_plan(
    study: optuna.Study,
    trial: optuna.Trial,
    *,
    space: Space,
    profile: Profile | None,
    cfg: TrialConfig,
) -> None:
    """Stop a trial enqueued for a student whose sampled plan that student was already measured
    with (it would measure the very same file again); the student gets another try
    (:func:`replan`). The stopped trial did no work, so it does not count toward ``--trials``
    (``uncounted``, :mod:`search.distributed.budget`); repeats are bounded by
    ``plans_per_student`` per student.

    Raises:
        optuna.TrialPruned: naming the trial that measured the same plan.
    """
    import optuna

    twin = same_plan_as(study, trial, cfg.quantize.to_dict())
    if twin is not None:
        trial.set_user_attr("same_plan_as", twin)
        trial.set_user_attr("uncounted", True)
        again = replan(study, trial, space=space, profile=profile)
        then = "; another plan is queued" if again else ""
        raise optuna.TrialPruned(
            f"same precision plan as trial {twin} on the same student; not counted{then}"
        )


def after_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    record: TrialRecord,
    *,
    space: Space,
    profile: Profile | None,
) -> int:
    """After a completed trial: when it distilled a new student, enqueue its further plans
    (:func:`enqueue_plans`); returns how many were enqueued."""
    if not record.student or record.reused_student:
        return 0
    return enqueue_plans(study, trial, space=space, profile=profile)
