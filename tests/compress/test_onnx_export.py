"""Export keeps a dynamic batch that really is dynamic, or says in one line why it cannot."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from search.compress.onnx_export import ExportError, batch_dim, export_with_report
from tests.fault_models import example


def _run(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("name", ["lstm", "upsample", "glu"])
def test_the_batch_stays_dynamic_and_onnx_runtime_agrees_with_torch(name, tmp_path):
    model, x = example(name)
    result = export_with_report(model, x, tmp_path / "m.onnx")
    assert isinstance(batch_dim(result.path), str)  # a named, dynamic dimension
    assert result.trace_batch == 2 and result.exporter == "dynamo"
    assert set(result.verified) == {1, 3} and max(result.verified.values()) < 1e-4
    batch = torch.randn(16, *x.shape[1:])  # what scoring feeds: the whole test split at once
    with torch.no_grad():
        want = model(batch).numpy()
    np.testing.assert_allclose(_run(result.path, batch.numpy()), want, atol=1e-4, rtol=1e-4)


def test_a_batch_one_trace_would_have_fixed_the_lstm_batch(tmp_path):
    """Why the example is repeated to batch 2: traced at batch 1, the LSTM file says batch 1."""
    model, x = example("lstm")
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), str(tmp_path / "b1.onnx"), dynamic_shapes=({0: batch},), dynamo=True,
            input_names=["input"], external_data=False, verbose=False,
        )  # fmt: skip
    assert batch_dim(tmp_path / "b1.onnx") == 1


class DataDependent(nn.Module):
    """torch.export cannot trace a branch on a tensor's value; the TorchScript exporter can."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().sum() >= 0:
            return self.fc(x)
        return self.fc(-x)


def test_the_legacy_exporter_is_the_last_resort_and_the_file_is_still_checked(tmp_path):
    result = export_with_report(DataDependent().eval(), torch.randn(1, 4), tmp_path / "m.onnx")
    assert result.exporter == "legacy"
    note = result.notes[0]
    assert "GuardOnDataDependentSymNode" in note and "test_onnx_export.py" in note
    assert isinstance(batch_dim(result.path), str) and max(result.verified.values()) < 1e-5


class BatchAsConstant(nn.Module):
    """Reads the batch size as a Python int: every exporter bakes it in."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * torch.ones(int(x.shape[0]), 1)


def test_a_model_no_exporter_can_make_dynamic_is_one_line_naming_every_attempt(tmp_path, capfd):
    with pytest.raises(ExportError) as err:
        export_with_report(BatchAsConstant().eval(), torch.randn(1, 4), tmp_path / "m.onnx")
    message = str(err.value)
    assert "\n" not in message and "\x1b" not in message
    assert "fixes the batch at 2" in message and "legacy exporter" in message
    assert not (tmp_path / "m.onnx").exists()
    out, errors = capfd.readouterr()
    assert out == "" and errors == ""  # the exporters' dumps and ONNX Runtime's log stay quiet


class _Tagger(torch.nn.Module):
    """int64 ids -> per-token logits and a pooled vector: an integer input, two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(16, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, ids):
        h = self.embed(ids)
        return self.head(h), h.mean(1)


def test_an_int64_input_and_several_outputs_export_with_a_dynamic_batch(tmp_path):
    import onnx

    torch.manual_seed(0)
    ids = torch.randint(0, 16, (1, 5))
    result = export_with_report(
        _Tagger().eval(), ids, tmp_path / "t.onnx", names=["tags", "pooled"]
    )
    graph = onnx.load(str(result.path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [o.name for o in graph.output] == ["tags", "pooled"]
    assert result.exporter == "dynamo" and max(result.verified.values()) < 1e-5
