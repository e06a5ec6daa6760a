"""The training device: checked before any work, auto falls back to the CPU once, AMP on CUDA."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from search.cli.main import main
from search.compress import distill as kd
from search.core import device
from search.tasks.models import ResNet

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
has_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "CPU", "mps"])
def test_a_malformed_name_is_refused(name):
    with pytest.raises(device.DeviceError, match="auto, cpu, cuda or cuda:N"):
        device.check_name(name)


@no_cuda
def test_cuda_without_cuda_is_one_line_exit_2_and_no_study(tmp_path, capsys):
    code = main(
        ["run", "--train-device", "cuda", "--task", "tests.tiny_task:make_task",
         "--results-dir", str(tmp_path), "--study", "s", "--no-progress"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "--train-device cuda" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing trained, no study created


@no_cuda
def test_auto_falls_back_to_the_cpu_and_says_so_once(monkeypatch):
    monkeypatch.setattr(device, "_said", set())
    said: list[str] = []
    assert device.resolve("auto", say=said.append) == torch.device("cpu")
    assert device.resolve("auto", say=said.append) == torch.device("cpu")
    assert len(said) == 1 and "CPU" in said[0]


def test_cpu_needs_no_cuda_and_says_nothing():
    said: list[str] = []
    assert device.resolve("cpu", say=said.append) == torch.device("cpu")
    assert said == []
    assert device.describe(torch.device("cpu")) == "cpu"


def test_training_uses_the_device_set_for_the_study_and_returns_the_model_home():
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 1, 16, 16), torch.randint(0, 4, (32,)))
    model = ResNet(num_classes=4, widths=(8, 8, 8))
    with device.use(torch.device("cpu")) as used:
        assert device.current() == used
        kd.train(model, data=data, epochs=1, lr=1e-3, batch_size=16, seed=0)
        logits = kd.predict(model, data)
    assert logits.device.type == "cpu" and logits.dtype == torch.float32
    assert next(model.parameters()).device.type == "cpu"
    assert device.current() == torch.device("cpu")  # nothing set outside the block


def test_amp_only_on_cuda():
    cpu = torch.device("cpu")
    assert not device.grad_scaler(cpu).is_enabled()
    assert not isinstance(device.autocast(cpu), torch.autocast)


@has_cuda
def test_cuda_training_runs_in_mixed_precision_and_comes_back_to_the_cpu():
    cuda = device.resolve("cuda")
    assert device.grad_scaler(cuda).is_enabled()
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 1, 16, 16), torch.randint(0, 4, (32,)))
    model = ResNet(num_classes=4, widths=(8, 8, 8))
    with device.use(cuda):
        kd.train(model, data=data, epochs=1, lr=1e-3, batch_size=16, seed=0)
        logits = kd.predict(model, data)
    assert next(model.parameters()).device.type == "cpu"
    assert logits.device.type == "cpu" and torch.isfinite(logits).all()
    with pytest.raises(device.DeviceError, match="CUDA device"):
        device.resolve(f"cuda:{torch.cuda.device_count()}")


def test_a_malformed_name_on_the_command_line_exits_2(tmp_path, capsys):
    code = main(["run", "--train-device", "gpu", "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "auto, cpu, cuda or cuda:N" in err
    assert list(tmp_path.iterdir()) == []
