"""What a study is: :class:`StudySpec` (where it lives, what it searches) and
:func:`open_study`, which loads or creates its Optuna study and refuses one made with other
settings.

Objectives: maximize the task metric of the exported ONNX file, minimize its paired latency at
the profile's first batch size (:mod:`search.record`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from search.config import Profile, Space
from search.core.checks import check_study_name
from search.core.paths import StudyPaths
from search.distributed.storage import open_storage, redact_url
from search.distributed.worker import WorkerSettings
from search.errors import SearchError
from search.record import DIRECTIONS, OBJECTIVES
from search.study.resume import check_settings, content_digests, legacy_digests


@dataclass(frozen=True)
class StudySpec:
    """Where a study lives and what it searches."""

    task: str
    space: Space
    profile: Profile
    study_name: str
    results_dir: Path
    storage: str | None = None
    seed: int = 0
    # Keyword options for the task factory (model, weights, data, ...); part of the settings.
    task_options: dict[str, Any] = field(default_factory=dict)
    # Seed of the sampler alone when set (the benchmark's repeats: same task, teacher and
    # training seed, another sampler seed); None: ``seed``.
    sampler_seed: int | None = None
    train_device: str = "auto"  # auto, cpu, cuda[:N]: not a setting (a study may move)
    # How this worker runs (threads, artifact store, heartbeat); not part of the settings.
    worker: WorkerSettings = field(default_factory=WorkerSettings)

    def __post_init__(self) -> None:
        check_study_name(self.study_name)  # a name, not a path: the study stays in results_dir

    @property
    def paths(self) -> StudyPaths:
        """Where this study's files live (:class:`~search.core.paths.StudyPaths`)."""
        return StudyPaths(self.results_dir, self.study_name)

    @property
    def study_dir(self) -> Path:
        return self.paths.root

    @property
    def storage_url(self) -> str:
        return self.storage or self.paths.default_storage

    @property
    def study_key(self) -> str:
        """Which study this is, the same in every process on a host that works on it: a
        digest of its storage (a SQLite file by its absolute path) and its name; no password
        is kept."""
        import hashlib

        from search.distributed.storage import sqlite_path

        path = sqlite_path(self.storage_url)
        where = str(path.resolve()) if path is not None else self.storage_url
        return hashlib.sha256(f"{where}\n{self.study_name}".encode()).hexdigest()[:16]

    def settings(self) -> dict[str, Any]:
        """What a resumed study must match: task, options, seed, and what the space and profile
        files say (:func:`search.study.resume.content_digests`)."""
        settings: dict[str, Any] = {
            "task": self.task,
            "space": self.space.name,
            "profile": self.profile.name,
            "seed": self.seed,
        }
        if self.sampler_seed is not None:
            settings["sampler_seed"] = self.sampler_seed
        if self.task_options:
            settings["task_options"] = {k: str(v) for k, v in sorted(self.task_options.items())}
        return {**settings, **content_digests(self.space, self.profile)}


def open_study(
    spec: StudySpec,
    *,
    create: bool,
    metric: str | None = None,
    storage: optuna.storages.BaseStorage | None = None,
    scored: bool = False,
) -> optuna.Study:
    """Load the study, or create it when ``create``; refuse a study made with other settings.

    ``metric`` (the task's metric name, e.g. ``accuracy``) is kept as the study user attribute
    ``metric`` for the report's labels. ``storage``: an opened storage (default: open
    ``spec.storage_url``). ``scored``: refuse a study scored the old way (a run adds trials).
    """
    from search.distributed.claims import is_claim_study
    from search.study.resume import record_scoring

    if create and spec.storage is None:
        spec.study_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or open_storage(spec.storage_url)
    names = [n for n in optuna.get_all_study_names(storage) if not is_claim_study(n)]
    if spec.study_name not in names and not create:
        raise SearchError(
            f"no study {spec.study_name!r} in {redact_url(spec.storage_url)}; "
            f"studies there: {', '.join(names) or 'none'}"
        )
    study = optuna.create_study(
        study_name=spec.study_name,
        storage=storage,
        directions=list(DIRECTIONS),
        load_if_exists=True,
    )
    if not create:
        return study
    record_scoring(study, refuse_old=scored)  # before anything else is written
    old = study.user_attrs.get("settings")
    if old is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # set_metric_names is marked experimental
            study.set_metric_names(list(OBJECTIVES))
        study.set_user_attr("settings", spec.settings())
        # The files themselves and the folder relative paths were typed in, for reproducing
        # (search.export.reproduce); not compared on resume (a path may move).
        sources = {"space": spec.space.path, "profile": spec.profile.path, "cwd": os.getcwd()}
        study.set_user_attr("sources", sources)
    else:
        legacy = legacy_digests(spec.space, spec.profile)
        new = spec.settings()
        if check_settings(old, new, legacy=legacy, study_name=spec.study_name):
            study.set_user_attr("settings", new)  # the same content, now in version-2 digests
    if metric is not None and study.user_attrs.get("metric") != metric:
        study.set_user_attr("metric", metric)
    return study
