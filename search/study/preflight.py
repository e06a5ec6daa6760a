"""Everything about a study that can be checked before it is created: its results folder can
be written and has room, and its space fits its profile. Cheap and torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from search.core.checks import check_writable

if TYPE_CHECKING:
    from search.config import Profile, SpaceMethods
    from search.study.spec import StudySpec


def check_space_fits_profile(space: SpaceMethods, profile: Profile) -> None:
    """What a space asks that the profile cannot run, refused before a study exists: every
    quantize group must keep at least one precision the profile runs."""
    quantize = getattr(space, "quantize", None)
    precisions = getattr(profile, "precisions", None)
    if quantize is not None and precisions is not None:
        quantize.choices(precisions)  # raises ConfigError naming the group and the fix


def preflight(spec: StudySpec) -> None:
    """Everything about a :class:`~search.study.StudySpec` that can be checked before the study
    is created: its results folder (artifacts go there whatever the storage) can be written and
    has room, and its space fits its profile."""
    check_writable(Path(spec.results_dir))
    check_space_fits_profile(spec.space, spec.profile)
