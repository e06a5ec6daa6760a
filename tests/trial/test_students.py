"""Distilled students cached by digest and shared by trials that differ only in precision."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from optuna.trial import TrialState

from search.compress.distill import DistillConfig
from search.compress.prune.step import PruneConfig
from search.config import TrialConfig, load_profile, load_space
from search.study import StudySpec, run_study
from search.study.plans import effective_plan, enqueue_plans, replan, same_plan_as
from search.tasks.digests import state_dict_digest
from search.tasks.models import ResNet
from search.trial.students import StudentStore
from tests.conftest import DATA

SPACE = """
description: reuse test
search: {sampler: random, trials: 3}
prune: {ratio: {low: 0.1, high: 0.5}}
distill: {epochs: 1, temperature: 2.0, alpha: 0.5, lr: 3.0e-3, batch_size: 32,
          plans_per_student: 2}
quantize:
  groups: {stem: [stem], body: [layers], fc: [fc]}
  precisions: [float, int8]
  calibration: [minmax, percentile]
  sensitivity: false
"""


def _space(tmp_path: Path, text: str = SPACE):
    path = tmp_path / "reuse.yaml"
    path.write_text(text)
    return load_space(str(path))


def test_digest_covers_the_student_parts_and_not_the_precision_plan():
    store = StudentStore(Path("unused"), base={"teacher": "t"})
    a = TrialConfig(prune=PruneConfig(ratio=0.3), distill=DistillConfig(epochs=2))
    plan = a.quantize.__class__(precision={"all": "int8"})
    same_student = TrialConfig(prune=a.prune, distill=a.distill, quantize=plan)
    assert store.digest(a) == store.digest(same_student)
    assert store.digest(a) != store.digest(TrialConfig(prune=PruneConfig(ratio=0.4)))
    assert store.digest(a) != StudentStore(Path("x"), base={"teacher": "u"}).digest(a)


def test_state_dict_digest_sees_values_and_shapes():
    x = torch.zeros(2, 3)
    assert state_dict_digest({"x": x}) == state_dict_digest({"x": x.clone()})
    assert state_dict_digest({"x": x}) != state_dict_digest({"x": x.reshape(3, 2)})
    assert state_dict_digest({"x": x}) != state_dict_digest({"x": x + 1e-6})


def test_stored_student_loads_as_weights_only(tmp_path):
    torch.manual_seed(0)
    model = ResNet(num_classes=4, widths=(8, 8, 8))
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not really onnx")
    store = StudentStore(tmp_path / "students", base={})
    saved = store.save("abc", model=model, onnx_path=onnx, trial=3, val_history=[0.5],
                       distill_s=1.0)  # fmt: skip
    assert saved.trial == 3 and saved.onnx.read_bytes() == b"not really onnx"
    fresh = ResNet(num_classes=4, widths=(8, 8, 8))
    saved.load_into(fresh)
    pairs = zip(model.state_dict().values(), fresh.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    # The weights file holds plain tensors: the weights-only unpickler reads it.
    assert (
        torch.load(saved.folder / "state.pt", weights_only=True).keys()
        == fresh.state_dict().keys()
    )
    assert store.find("other") is None


def test_plans_are_enqueued_once_with_the_architecture_fixed(tmp_path):
    space, profile = _space(tmp_path), load_profile("cpu")
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    cfg = space.sample(trial, profile)
    assert enqueue_plans(study, trial, space=space, profile=profile) == 1
    assert enqueue_plans(study, trial, space=space, profile=profile) == 0  # already there
    study.tell(trial, [0.5, 1.0])
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].user_attrs["student_of"] == trial.number
    fixed = waiting[0].system_attrs["fixed_params"]
    # The architecture is fixed; the plan (precision per group, calibration) is the sampler's.
    assert fixed["prune_ratio"] == cfg.prune.ratio and "lowrank" in fixed
    assert fixed == {k: v for k, v in trial.params.items() if not k.startswith(("prec", "cal"))}
    # A space without plans_per_student > 1 enqueues nothing.
    plain = _space(tmp_path, SPACE.replace("plans_per_student: 2", "plans_per_student: 1"))
    assert enqueue_plans(study, trial, space=plain, profile=profile) == 0


def test_a_plan_already_measured_on_the_student_is_found():
    study = optuna.create_study(directions=["maximize", "minimize"])
    first = study.ask()
    first.set_user_attr("config", {"quantize": {"precision": {"all": "int8"}}})
    study.tell(first, [0.5, 1.0])
    study.enqueue_trial({}, user_attrs={"student_of": first.number})
    study.enqueue_trial({}, user_attrs={"student_of": first.number})
    second = study.ask()
    assert same_plan_as(study, second, {"precision": {"all": "int8"}}) == first.number
    assert same_plan_as(study, second, {"precision": {"all": "float"}}) is None
    # Calibration settings do not change an all-float file: still the same plan.
    first_float = {"precision": {"all": "float"}, "calibration": "minmax"}
    assert effective_plan(first_float) == effective_plan({**first_float, "calibration": "entropy"})
    assert effective_plan({"precision": {"all": "int8"}, "calibration": "minmax"}) != (
        effective_plan({"precision": {"all": "int8"}, "calibration": "entropy"})
    )
    unrelated = study.ask()
    unrelated.set_user_attr("student_of", None)
    assert same_plan_as(study, unrelated, {"precision": {"all": "int8"}}) is None


@pytest.mark.slow
def test_a_trial_reusing_a_student_skips_distillation_and_measures_another_plan(tmp_path):
    spec = StudySpec(
        task="tests.tiny_task:make_random_task",
        space=_space(tmp_path),
        profile=load_profile(str(DATA / "tiny_cpu.yaml")),
        study_name="reuse",
        results_dir=tmp_path,
        train_device="cpu",
    )
    study = run_study(spec, trials=2, progress=False)
    fresh, reused = study.trials
    assert [fresh.state, reused.state] == [TrialState.COMPLETE] * 2
    a, b = fresh.user_attrs["record"], reused.user_attrs["record"]
    assert a["reused_student"] is None and "distill" in a["timings_s"]
    assert b["reused_student"] == {"digest": a["student"], "trial": fresh.number}
    assert "distill" not in b["timings_s"] and "export" not in b["timings_s"]
    assert "load_student" in b["timings_s"]
    assert b["config"]["prune"] == a["config"]["prune"]
    assert b["config"]["distill"] == a["config"]["distill"]
    # Another precision plan: one that changes the measured file.
    assert effective_plan(b["config"]["quantize"]) != effective_plan(a["config"]["quantize"])
    assert b["val_history"] == a["val_history"]
    assert a["train_device"] == b["train_device"] == "cpu"
    # Same student, same float export: the reusing trial measured a file made from it.
    art = tmp_path / "reuse" / "artifacts"
    assert (art / "0" / "model.onnx").read_bytes() == (art / "1" / "model.onnx").read_bytes()
    assert (tmp_path / "reuse" / "students" / a["student"] / "state.pt").is_file()
    # trials.csv says which trial reused whose student, and where each trained.
    csv = pd.read_csv(tmp_path / "reuse" / "trials.csv")
    assert csv.reused_student_of.isna().tolist() == [True, False]
    assert csv.reused_student_of.iloc[1] == fresh.number and (csv.train_device == "cpu").all()


def test_a_repeated_plan_is_replaced_by_the_nearest_unmeasured_one(tmp_path):
    space, profile = _space(tmp_path), load_profile("cpu")  # plans_per_student: 2
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    first = study.ask()
    cfg = space.sample(first, profile)
    first.set_user_attr("config", cfg.to_dict())
    study.tell(first, [0.5, 1.0])
    study.enqueue_trial(dict(first.params), user_attrs={"student_of": first.number})
    again = study.ask()  # a sampler that repeats itself
    repeat = space.sample(again, profile)
    again.set_user_attr("config", repeat.to_dict())
    assert same_plan_as(study, again, repeat.quantize.to_dict()) == first.number
    again.set_user_attr("same_plan_as", first.number)
    assert replan(study, again, space=space, profile=profile)
    study.tell(again, state=TrialState.PRUNED)
    (waiting,) = [t for t in study.trials if t.state == TrialState.WAITING]
    fixed = waiting.system_attrs["fixed_params"]
    changed = [k for k in fixed if fixed[k] != first.params[k]]
    assert len(changed) == 1 and changed[0].startswith(("precision_", "calibration"))
    assert waiting.user_attrs["student_of"] == first.number
    # Another repeat for the same student: the bound (plans_per_student) is reached.
    third = study.ask()
    third.set_user_attr("same_plan_as", first.number)
    assert not replan(study, third, space=space, profile=profile)


def test_a_repeat_is_stopped_before_any_work_and_does_not_count(tmp_path):
    from search.distributed.budget import is_counted
    from search.study.plans import skip_same_plan

    space, profile = _space(tmp_path), load_profile("cpu")
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0)
    )
    first = study.ask()
    first.set_user_attr("config", space.sample(first, profile).to_dict())
    study.tell(first, [0.5, 1.0])
    study.enqueue_trial(dict(first.params), user_attrs={"student_of": first.number})
    again = study.ask()  # the sampler drew the plan the student was measured with
    cfg = space.sample(again, profile)
    with pytest.raises(optuna.TrialPruned, match="not counted; another plan is queued"):
        skip_same_plan(study, again, space=space, profile=profile, cfg=cfg)
    study.tell(again, state=TrialState.PRUNED)
    stopped = study.trials[again.number]
    assert stopped.user_attrs["uncounted"] and not is_counted(stopped)
    assert [t.state for t in study.trials].count(TrialState.WAITING) == 1  # the other plan
