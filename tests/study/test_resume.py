"""Resuming a study: what it recorded keeps matching when the code around it changes.

``data/main_study.json`` is a study made by the code before the compression steps owned their
configs (main at a28dace): its settings (version-1 digests of ``data/resume_space.yaml`` and
``data/resume_cpu.yaml``) and six trials a RandomSampler(seed=0) suggested through that code's
``Space.sample``. It was written by running, with that code::

    study = open_study(spec, create=True); study.sampler = RandomSampler(seed=0)
    for _ in range(6): t = study.ask(); space.sample(t, profile); study.tell(t, values)

and dumping ``study.user_attrs["settings"]`` and each trial's params and distributions.
"""

from __future__ import annotations

import dataclasses
import json

import optuna
import pytest
from optuna.distributions import distribution_to_json, json_to_distribution

from search.config import Profile, Space, load_profile, load_space
from search.errors import SearchError
from search.study import StudySpec, open_study
from tests.conftest import DATA

OLD = json.loads((DATA / "main_study.json").read_text())


def _spec(tmp_path, space: str = "resume_space.yaml", profile: str = "resume_cpu.yaml"):
    return StudySpec(
        task="tests.tiny_task:make_task",
        space=load_space(str(DATA / space)),
        profile=load_profile(str(DATA / profile)),
        study_name="old",
        results_dir=tmp_path,
    )


def _old_study(spec: StudySpec) -> None:
    """The study the older code made, rebuilt in ``spec``'s storage from its record."""
    spec.study_dir.mkdir(parents=True)
    study = optuna.create_study(
        study_name=spec.study_name,
        storage=spec.storage_url,
        directions=["maximize", "minimize"],
    )
    study.set_user_attr("settings", OLD["settings"])
    for t in OLD["trials"]:
        dists = {k: json_to_distribution(v) for k, v in t["distributions"].items()}
        study.add_trial(
            optuna.trial.create_trial(params=t["params"], distributions=dists, values=t["values"])
        )


def test_a_study_made_by_older_code_resumes_and_keeps_its_parameters(tmp_path):
    spec = _spec(tmp_path)
    _old_study(spec)
    study = open_study(spec, create=True)  # the version-1 digests still match: no SearchError
    assert study.user_attrs["settings"] == spec.settings()  # now kept as version 2
    assert len(open_study(spec, create=True).trials) == 6

    # The same sampler seed replays the old suggestions: same names, values, distributions.
    replay = optuna.create_study(
        directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0)
    )
    for old in OLD["trials"]:
        trial = replay.ask()
        spec.space.sample(trial, spec.profile)
        replay.tell(trial, old["values"])
        assert trial.params == old["params"]
        dists = {k: distribution_to_json(v) for k, v in trial.distributions.items()}
        assert dists == old["distributions"]

    # TPE models the old trials with the new code's parameters: nothing new, nothing renamed.
    study.sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=1, multivariate=True)
    trial = study.ask()
    spec.space.sample(trial, spec.profile)
    assert set(trial.params) <= {name for t in OLD["trials"] for name in t["params"]}


def test_an_edited_file_still_refuses_an_old_study(tmp_path):
    spec = _spec(tmp_path)
    _old_study(spec)
    prune = spec.space.prune.model_copy(update={"importance": ["l1"]})
    edited = dataclasses.replace(spec, space=spec.space.model_copy(update={"prune": prune}))
    with pytest.raises(SearchError, match="different space file's content"):
        open_study(edited, create=True)
    with pytest.raises(SearchError, match="different profile file's content"):
        open_study(dataclasses.replace(spec, profile=load_profile("cpu")), create=True)
    settings = optuna.load_study(study_name="old", storage=spec.storage_url).user_attrs
    assert settings["settings"] == OLD["settings"]  # refused: nothing written


class LaterSpace(Space):
    """The space as a later version might declare it: one more field, with a default."""

    new_setting: int = 3


class LaterProfile(Profile):
    new_option: str = "x"


def test_adding_a_defaulted_field_keeps_studies_resumable(tmp_path):
    spec = _spec(tmp_path, "tiny_space.yaml", "tiny_cpu.yaml")
    open_study(spec, create=True)
    space = LaterSpace.model_validate(spec.space.model_dump())
    profile = LaterProfile.model_validate(spec.profile.model_dump())
    later = dataclasses.replace(spec, space=space, profile=profile)
    open_study(later, create=True)  # resumes: the new fields hold their defaults
    # A value other than the default is other content, and refused.
    changed = LaterSpace.model_validate({**spec.space.model_dump(), "new_setting": 4})
    with pytest.raises(SearchError, match="different space file's content"):
        open_study(dataclasses.replace(spec, space=changed), create=True)


def test_the_study_keeps_the_task_metric_name(tmp_path):
    spec = _spec(tmp_path, "tiny_space.yaml", "tiny_cpu.yaml")
    study = open_study(spec, create=True, metric="teacher_agreement")
    assert study.user_attrs["metric"] == "teacher_agreement"
    # A study made before the metric was kept gets it on resume.
    _old = _spec(tmp_path / "old")
    _old_study(_old)
    assert open_study(_old, create=True, metric="accuracy").user_attrs["metric"] == "accuracy"
