"""One distillation, several precision plans: distilled students cached by a digest and shared.

The student a trial distills depends only on its prune, low-rank and distill parts, the teacher,
the training data, the seed and the layers the profile rounds to; the precision plan is applied
afterwards to its ONNX export. :class:`StudentStore` keeps each distilled student under
``results/<study>/students/<digest>/``: its weights (``state.pt``, a dict of tensors read back
with ``torch.load(weights_only=True)``: nothing loaded runs code), its export ``model.onnx``, its
calibrations (``calib/``, shared by every plan) and ``student.json`` (who distilled it, its
validation history, how long distillation took).

A trial whose student is in the store rebuilds the architecture (pruning and SVD are
deterministic and take well under a second), loads the weights and reuses the export and the
calibration instead of distilling again. After a trial distills a new student, the study
enqueues ``distill.plans_per_student - 1`` trials that fix its architecture parameters and leave
the precision plan to the sampler (:func:`enqueue_plans`); each is an Optuna trial of its own.

Example:
    >>> sorted(STUDENT_PARTS)
    ['distill', 'lowrank', 'prune']
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.errors import SearchError

if TYPE_CHECKING:
    import optuna
    import torch
    from torch import nn

    from search.config import Space, TrialConfig

STUDENT_PARTS = ("prune", "lowrank", "distill")
_VERSION = "1"  # bump when what a digest covers changes


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def tensor_digest(tensors: dict[str, torch.Tensor] | list[torch.Tensor]) -> str:
    """SHA-256 of the tensors' names, shapes, dtypes and bytes (CPU copies)."""
    import torch

    items = tensors.items() if isinstance(tensors, dict) else enumerate(tensors)
    h = hashlib.sha256()
    for name, t in items:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Student:
    """A cached student: its folder and what ``student.json`` says about it."""

    digest: str
    folder: Path
    trial: int | None
    val_history: list[float] = field(default_factory=list)
    distill_s: float | None = None
    program_info: dict[str, Any] = field(default_factory=dict)  # the record's ``program``

    @property
    def onnx(self) -> Path:
        return self.folder / "model.onnx"

    @property
    def program(self) -> Path:
        """The student as a ``torch.export`` program (absent when it could not be made)."""
        from search.programs import PROGRAM

        return self.folder / PROGRAM

    @property
    def calib_dir(self) -> Path:
        return self.folder / "calib"

    def load_into(self, model: nn.Module) -> nn.Module:
        """Load the cached weights into ``model`` (the rebuilt, not yet distilled student).

        Raises:
            SearchError: the weights are unreadable or do not fit ``model``'s layers.
        """
        import torch

        path = self.folder / "state.pt"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as e:  # noqa: BLE001 - an unusable cache entry is named, not hidden
            first = (str(e).strip().splitlines() or [""])[0][:160]
            raise SearchError(
                f"cached student {self.folder} cannot be loaded ({type(e).__name__}: {first}); "
                "delete that folder to distill it again"
            ) from None
        return model.eval()


class StudentStore:
    """Distilled students of one study, keyed by :meth:`digest`.

    Args:
        root: The folder (``results/<study>/students``).
        base: What every student of the study depends on besides its own config: the teacher's
            weights, the training data (through the teacher's logits over it), the task key,
            the seed, the profile's ``round_to`` and the space's low-rank layer patterns.
    """

    def __init__(self, root: Path, *, base: dict[str, Any]) -> None:
        self.root = Path(root)
        self.base = base

    @classmethod
    def for_study(cls, root: Path, ctx: Any) -> StudentStore:
        """The store of a study's :class:`~search.context.Context` (digests the teacher once)."""
        base = {
            "version": _VERSION,
            "task": ctx.task.key,
            "teacher": tensor_digest(ctx.task.model.state_dict()),
            "data": tensor_digest([ctx.teacher_logits]),
            "train_items": len(ctx.task.train),
            "ignored_layers": list(ctx.task.ignored_layers),
            "seed": ctx.seed,
            "round_to": ctx.profile.round_to,
            "lowrank_space": ctx.space.lowrank.model_dump(mode="json"),
        }
        return cls(root, base=base)

    def digest(self, cfg: TrialConfig) -> str:
        """The student's key: SHA-256 (first 16 hex digits) of its architecture and
        fine-tuning parts and the study's base."""
        parts = {k: v for k, v in cfg.to_dict().items() if k in STUDENT_PARTS}
        text = json.dumps({"base": self.base, "student": parts}, sort_keys=True, default=str)
        return _sha(text.encode())[:16]

    def find(self, digest: str) -> Student | None:
        """The cached student ``digest``, or None when it was never (completely) stored."""
        folder = self.root / digest
        meta = folder / "student.json"
        if not (
            meta.is_file()
            and (folder / "state.pt").is_file()
            and (folder / "model.onnx").is_file()
        ):
            return None
        info = json.loads(meta.read_text())
        return Student(
            digest=digest,
            folder=folder,
            trial=info.get("trial"),
            val_history=list(info.get("val_history", [])),
            distill_s=info.get("distill_s"),
            program_info=dict(info.get("program") or {}),
        )

    def save(
        self,
        digest: str,
        *,
        model: nn.Module,
        onnx_path: Path,
        trial: int | None,
        val_history: list[float],
        distill_s: float | None,
        program: dict[str, Any] | None = None,
    ) -> Student:
        """Store a freshly distilled student (atomically: a crash leaves no half entry, and of
        two workers storing the same digest the first one wins)."""
        import torch

        from search.programs import PROGRAM

        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=self.root))
        try:
            torch.save(
                {k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp / "state.pt"
            )
            shutil.copy2(onnx_path, tmp / "model.onnx")
            saved = Path(onnx_path).parent / PROGRAM
            if saved.is_file():  # the torch.export program written next to the export
                shutil.copy2(saved, tmp / saved.name)
            info = {"trial": trial, "val_history": val_history, "distill_s": distill_s,
                    "program": program or {}}  # fmt: skip
            (tmp / "student.json").write_text(json.dumps(info, indent=2))
            os.rename(tmp, self.root / digest)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if self.find(digest) is None:
                raise
        return self.find(digest)  # type: ignore[return-value]


def link_or_copy(src: Path, dst: Path) -> Path:
    """``dst`` as a hard link to ``src`` (no copy of a large export), else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


# ------------------------------------------------------------------------ the study's queue


def quantize_params(space: Space, profile: Any) -> set[str]:
    """Names of the Optuna parameters of the precision plan (the rest fix the student)."""
    return set(space.quantize.choices(profile.precisions if profile else None))


def enqueue_plans(study: optuna.Study, trial: optuna.Trial, *, space: Space, profile: Any) -> int:
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


def replan(study: optuna.Study, trial: optuna.Trial, *, space: Space, profile: Any) -> bool:
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
    seen = [effective_plan((t.user_attrs.get("config") or {}).get("quantize") or {}) for t in mine]
    seen += [_plan_of(space, profile, t.system_attrs.get("fixed_params") or {})
             for t in mine if t.state.name == "WAITING"]  # fmt: skip
    neighbour = _unseen_neighbour(space, profile, dict(trial.params), seen)
    if neighbour is None:
        return False
    study.enqueue_trial(neighbour, user_attrs={"student_of": source})
    return True


def _plan_of(space: Space, profile: Any, params: dict[str, Any]) -> dict[str, Any] | None:
    """The effective plan that ``params`` fix, or None when they leave part of it open."""
    import optuna

    fixed = optuna.trial.FixedTrial(params)
    try:
        plan = space.quantize.sample(fixed, profile.precisions if profile else None)
    except ValueError:  # FixedTrial: a parameter of the plan is not among ``params``
        return None
    return effective_plan(plan.to_dict())


def _unseen_neighbour(
    space: Space, profile: Any, params: dict[str, Any], seen: list[Any]
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
    from search.compress.quantize import needs_calibration

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
    study: optuna.Study, trial: optuna.Trial, *, space: Space, profile: Any, cfg: TrialConfig
) -> None:
    """Stop a trial enqueued for a student whose sampled plan that student was already measured
    with (it would measure the very same file again); the student gets another try
    (:func:`replan`). The stopped trial did no work, so it does not count toward ``--trials``
    (``uncounted``, :mod:`search.distributed`); repeats are bounded by ``plans_per_student`` per
    student.

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
    study: optuna.Study, trial: optuna.Trial, record: dict[str, Any], *, space: Space, profile: Any
) -> int:
    """After a completed trial: when it distilled a new student, enqueue its further plans
    (:func:`enqueue_plans`); returns how many were enqueued."""
    if not record.get("student") or record.get("reused_student"):
        return 0
    return enqueue_plans(study, trial, space=space, profile=profile)
