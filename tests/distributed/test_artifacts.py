"""Trial files and the teacher in Optuna's artifact store: what goes up, what comes down, and
workers whose teacher or data differ from the study's."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from torch.utils.data import TensorDataset

from search.distributed import artifacts
from search.distributed.artifacts import ArtifactError
from search.errors import TaskError
from search.tasks import digests


@pytest.fixture
def study(tmp_path):
    return optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db")


def _trial_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("model.onnx", "model.q.onnx", "model.opt.onnx", "model.pt2", "trial.json"):
        (folder / name).write_bytes(name.encode() * 100)
    (folder / "calib").mkdir()
    (folder / "calib" / "ranges.json").write_text("{}")
    return folder


def test_the_files_other_machines_need_are_uploaded_by_name_pattern(tmp_path):
    folder = _trial_folder(tmp_path / "7")
    names = [p.name for p in artifacts.trial_files(folder)]
    assert names == ["model.onnx", "model.pt2", "model.q.onnx", "trial.json"]


def test_trial_files_go_up_and_come_back_identical_on_another_machine(study, tmp_path):
    folder = _trial_folder(tmp_path / "worker" / "7")
    store = artifacts.study_store(study, override=None, default=tmp_path / "shared" / "store")
    assert study.user_attrs["artifact_store"] == (tmp_path / "shared" / "store").as_uri()
    trial = study.ask()
    files = artifacts.upload_trial(trial, store, folder)
    study.tell(trial, [1.0])
    frozen = study.trials[0]
    assert frozen.user_attrs["files"] == files
    assert len(optuna.artifacts.get_all_artifact_meta(frozen, storage=study._storage)) == 4

    # Another machine: only the storage; the study knows where its store is.
    got = artifacts.fetch_trial(study, frozen, tmp_path / "elsewhere" / "7")
    for name in files:
        assert (got / name).read_bytes() == (folder / name).read_bytes()


def test_a_file_changed_in_the_store_is_refused(study, tmp_path):
    folder = _trial_folder(tmp_path / "7")
    store = artifacts.study_store(study, override=None, default=tmp_path / "store")
    trial = study.ask()
    files = artifacts.upload_trial(trial, store, folder)
    study.tell(trial, [1.0])
    (tmp_path / "store" / files["model.onnx"]["artifact_id"]).write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="model.onnx in the artifact store changed"):
        artifacts.fetch_trial(study, study.trials[0], tmp_path / "out")
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_a_store_this_machine_does_not_have_is_one_line_naming_it(study, tmp_path):
    study.set_user_attr("artifact_store", (tmp_path / "not-mounted").as_uri())
    with pytest.raises(ArtifactError, match="not-mounted is not a folder on this machine"):
        artifacts.study_store(study, override=None, default=tmp_path / "store")
    # Where this machine mounts it, the flag says so; a mount that is missing is not created.
    with pytest.raises(ArtifactError, match="mounted is not a folder on this machine"):
        artifacts.study_store(study, override=str(tmp_path / "mounted"), default=tmp_path / "x")
    (tmp_path / "mounted").mkdir()
    artifacts.study_store(study, override=str(tmp_path / "mounted"), default=tmp_path / "x")
    assert study.user_attrs["artifact_store"] == (tmp_path / "not-mounted").as_uri()


def test_the_first_worker_records_the_store_it_was_given(study, tmp_path):
    artifacts.study_store(study, override=str(tmp_path / "share"), default=tmp_path / "x")
    assert study.user_attrs["artifact_store"] == (tmp_path / "share").as_uri()
    assert (tmp_path / "share").is_dir() and not (tmp_path / "x").exists()


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


def test_the_teacher_digest_depends_on_weights_not_on_how_they_were_saved(tmp_path):
    sd = _model(0).state_dict()
    torch.save(sd, tmp_path / "a.pt")
    again = torch.load(tmp_path / "a.pt", weights_only=True)
    assert digests.state_dict_digest(again) == digests.state_dict_digest(sd)
    assert digests.state_dict_digest(_model(1).state_dict()) != digests.state_dict_digest(sd)


def test_data_digests_see_order_and_content():
    x, y = torch.arange(12.0).reshape(6, 2), torch.arange(6)
    base = digests.dataset_digest(TensorDataset(x, y))
    assert digests.dataset_digest(TensorDataset(x.flip(0), y)) != base
    as_list = [(x[i], y[i]) for i in range(6)]  # not a TensorDataset: sampled items
    assert digests.dataset_digest(as_list) != digests.dataset_digest(as_list[::-1])


def test_a_worker_gets_the_study_teacher_or_is_refused(study, tmp_path):
    claimer_cache = tmp_path / "a"
    (claimer_cache / "teachers").mkdir(parents=True)
    teacher = claimer_cache / "teachers" / "net.pt"
    torch.save({"state_dict": _model(0).state_dict()}, teacher)
    recorded = {"teacher": digests.state_dict_digest(_model(0).state_dict()), "data": "d" * 64}
    store = artifacts.study_store(study, override=None, default=tmp_path / "store")
    artifacts.publish_teacher(
        study, store, digests=recorded, files={"net": teacher}, cache_dir=claimer_cache, threads=2
    )
    # A worker with an empty cache downloads it where its task will look.
    other = tmp_path / "b"
    assert artifacts.fetch_teacher(study, store, other) == [other / "teachers" / "net.pt"]
    assert (other / "teachers" / "net.pt").read_bytes() == teacher.read_bytes()
    artifacts.check_task(study, recorded, cache_dir=other)
    # A worker that trained another teacher (another thread count) or has other data: refused.
    other_teacher = {**recorded, "teacher": digests.state_dict_digest(_model(1).state_dict())}
    with pytest.raises(TaskError, match=r"teacher .* differs from study .*; delete .*net.pt"):
        artifacts.check_task(study, other_teacher, cache_dir=other)
    with pytest.raises(TaskError, match="task data .* differs"):
        artifacts.check_task(study, {**recorded, "data": "e" * 64}, cache_dir=other)


def test_names_from_the_storage_cannot_write_outside_the_folder(tmp_path):
    store = artifacts.open_store(str(tmp_path / "store"), create=True)
    for name in ("../evil.pt", "/tmp/evil.pt"):
        with pytest.raises(ArtifactError, match="not a plain relative path"):
            artifacts.download({name: {"artifact_id": "x", "sha256": ""}}, store, tmp_path / "o")
