"""One distillation, several precision plans: distilled students cached by a digest and shared.

The student a trial distills depends only on the config parts of the steps before and including
distillation (the registry's :func:`~search.compress.steps.student_steps`: prune, low-rank,
distill) and what each declares of its space section (``Step.student_inputs``), the teacher,
the training data, the seed and the layers the profile rounds to; the precision plan is applied
afterwards to its ONNX export. :class:`StudentStore` keeps each distilled student under
``results/<study>/students/<digest>/``: its weights (``state.pt``, a dict of tensors read back
with ``torch.load(weights_only=True)``: nothing loaded runs code), its export ``model.onnx``, its
calibrations (``calib/``, shared by every plan) and ``student.json`` (who distilled it, its
validation history, how long distillation took).

A trial whose student is in the store rebuilds the architecture (pruning and SVD are deterministic
and take well under a second), loads the weights and reuses the export and the calibration instead
of distilling again. After a trial distills a new student, the study enqueues
``distill.plans_per_student - 1`` trials that fix its architecture parameters and leave the
precision plan to the sampler (:func:`search.study.plans.enqueue_plans`); each is an Optuna trial
of its own.

Example:
    >>> [s.name for s in student_steps()]
    ['prune', 'lowrank', 'distill']
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.compress.steps import student_steps
from search.core.errors import first_line
from search.core.hashing import sha256_bytes
from search.errors import SearchError
from search.tasks.digests import state_dict_digest

if TYPE_CHECKING:
    import torch
    from torch import nn

    from search.config import Space, TrialConfig
    from search.tasks.base import Task

_VERSION = "2"  # bump when what a digest covers changes (2: the step registry, tasks.digests)


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
        from search.core.paths import PROGRAM

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
            first = first_line(e, 160)
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
            the seed, the profile's ``round_to`` and what each student step declares of its
            space section (``steps``).
    """

    def __init__(self, root: Path, *, base: dict[str, Any]) -> None:
        self.root = Path(root)
        self.base = base

    @classmethod
    def for_study(
        cls,
        root: Path,
        *,
        task: Task,
        teacher_logits: tuple[torch.Tensor, ...] | nn.Module,
        seed: int,
        round_to: int | None,
        space: Space,
    ) -> StudentStore:
        """The store of a study (digests the teacher and its logits once)."""
        base = {
            "version": _VERSION,
            "task": task.key,
            "teacher": state_dict_digest(task.model.state_dict()),
            "data": _data_digest(task, teacher_logits),
            "train_items": len(task.train),  # type: ignore[arg-type]
            "ignored_layers": list(task.ignored_layers),
            "seed": seed,
            "round_to": round_to,
            "steps": {
                s.name: s.student_inputs(space.section(s.name))
                for s in student_steps(space.steps)
                if s.student_inputs is not None
            },
        }
        return cls(root, base=base)

    def digest(self, cfg: TrialConfig) -> str:
        """The student's key: SHA-256 (first 16 hex digits) of its architecture and
        fine-tuning parts and the study's base."""
        names = {s.name for s in student_steps()}
        parts = {k: v for k, v in cfg.to_dict().items() if k in names}
        text = json.dumps({"base": self.base, "student": parts}, sort_keys=True, default=str)
        return sha256_bytes(text.encode())[:16]

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

        from search.core.paths import PROGRAM

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


def _data_digest(task: Task, teacher: tuple[torch.Tensor, ...] | nn.Module) -> str:
    """What the training data is to a student: the teacher's outputs over it (the first under
    the name a single output always had, so older digests hold), or, where the teacher runs
    per batch, the data itself."""
    from torch import nn

    from search.tasks.digests import dataset_digest

    if isinstance(teacher, nn.Module):
        return dataset_digest(task.train)
    names = ["teacher_logits", *(f"teacher_logits_{i}" for i in range(1, len(teacher)))]
    return state_dict_digest(dict(zip(names, teacher, strict=True)))


def link_or_copy(src: Path, dst: Path) -> Path:
    """``dst`` as a hard link to ``src`` (no copy of a large export), else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst
