"""What a task's model may return, and how a Task that cannot be used is refused: one line
naming the field or output and what to do, before any study (tiny models of our own)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from search.compress.kd_losses import ClassKD, DetectionKD, OutputMSE
from search.errors import TaskError
from search.tasks import Outputs, Task
from search.tasks.checks import default_loss, prepare


class Conv(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Conv2d(8, classes, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


class PerPixel(Conv):
    def forward(self, x):
        return self.features(x)


class DictSeg(Conv):
    """A segmenter that returns a dict, as torchvision's do."""

    def forward(self, x):
        out = self.features(x)
        return {"out": out, "aux": out.mean(1)}


class TwoHeads(Conv):
    def forward(self, x):
        out = self.features(x)
        return out.mean((2, 3)), out


class ListOfDicts(Conv):
    def forward(self, x):
        return [{"boxes": torch.zeros(0, 4)} for _ in x]


class Argmax(Conv):
    def forward(self, x):
        return self.features(x).argmax(1)


class BatchLast(Conv):
    def forward(self, x):
        return self.features(x).mean((2, 3)).T


class Raises(Conv):
    def forward(self, x):
        raise RuntimeError("no forward for you")


def _task(model: nn.Module, **kw) -> Task:
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 3, (6, 8, 8))
    fields = dict(name="t", model=model, train=TensorDataset(x, y), val=TensorDataset(x, y),
                  test=TensorDataset(x, y), calibration=TensorDataset(x, y),
                  example_input=x[:1].clone(), key="t")  # fmt: skip
    fields.update(kw)
    return Task(**fields)


def _refused(task: Task) -> str:
    with pytest.raises(TaskError) as err:
        prepare(task, "mine.py:make_task")
    message = str(err.value)
    assert message.startswith("task 'mine.py:make_task': ") and "\n" not in message
    return message


@pytest.mark.parametrize(
    ("model", "says"),
    [
        (DictSeg(), "returns a dict with keys 'out', 'aux'; the study exports tensors: say which"),
        (TwoHeads(), "returns a tuple of 2 ((2, 3), (2, 3, 8, 8)): say how to read several"),
        (ListOfDicts(), "returns a list of 2 (dict, dict); the study exports tensors: return the"),
        (Argmax(), "output 'output' is torch.int64: outputs must be floating point"),
        (BatchLast(), "output 'output' has shape (3, 2) at a batch of 2: every output must have"),
        (Raises(), "the model's forward raised RuntimeError: no forward for you at"),
    ],
)
def test_an_output_the_study_cannot_read_is_one_line(model, says):
    assert says in _refused(_task(model))


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"model": "not a module"}, "Task.model is a str, not a torch nn.Module"),
        ({"example_input": [1, 2]}, "Task.example_input is a list: it must be one input"),
        ({"train": TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0))}, "train split is"),
        ({"val": [1, 2, 3]}, "the val split must be (input, label) pairs, but item 0 is a int"),
        ({"calibration": 5}, "Task.calibration is a int, not a dataset"),
        ({"example_input": torch.zeros(1, 1, 8, 8, dtype=torch.long)},
         "are torch.float32 (1, 8, 8), but example_input is torch.int64"),
        ({"outputs": "out"}, "Task.outputs is a str, not search.tasks.Outputs"),
        ({"metric": 3}, "Task.metric is a int, not a function"),
    ],
)  # fmt: skip
def test_unusable_task_fields_are_one_line(fields, says):
    assert says in _refused(_task(**{"model": PerPixel(), **fields}))


def test_a_declared_selection_keeps_the_models_names_and_exports_that_entry(tmp_path):
    from search.compress.onnx_export import export_with_report

    task = prepare(_task(DictSeg(), outputs=Outputs(select=("out",))), "t")
    model = task.model
    assert type(model).__name__ == "DictSeg" and isinstance(model, DictSeg)
    assert set(model.state_dict()) == set(DictSeg().state_dict())  # names unchanged
    out = model(torch.randn(2, 1, 8, 8))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 8, 8)
    assert task.outputs.output_names(1) == ("out",)
    assert task.outputs.loss == ClassKD(class_dim=1)  # per-pixel classes fit (N, H, W) labels
    result = export_with_report(model, task.example_input, tmp_path / "m.onnx", names=["out"])
    assert result.exporter == "dynamo" and max(result.verified.values()) < 1e-5


def test_several_outputs_are_exported_and_read_as_the_task_says(tmp_path):
    import onnx

    from search.compress.onnx_export import export_with_report

    outputs = Outputs(names=("pooled", "map"), loss=OutputMSE(), decode=lambda a: a[1])
    task = prepare(_task(TwoHeads(), outputs=outputs), "t")
    path = export_with_report(task.model, task.example_input, tmp_path / "m.onnx",
                              names=task.outputs.output_names(2)).path  # fmt: skip
    graph = onnx.load(str(path)).graph
    assert [o.name for o in graph.output] == ["pooled", "map"]
    assert all(o.type.tensor_type.shape.dim[0].dim_param for o in graph.output)  # dynamic batch
    arrays = [torch.zeros(2, 3).numpy(), torch.ones(2, 3, 8, 8).numpy()]
    assert task.outputs.read(arrays) is arrays[1]


@pytest.mark.parametrize(
    ("shape", "label", "loss"),
    [
        ((10,), torch.tensor(3), ClassKD(class_dim=1)),  # classifier
        ((10,), torch.tensor(-1), ClassKD(class_dim=1)),  # unlabelled classifier
        ((4, 16, 16), torch.zeros(16, 16, dtype=torch.long), ClassKD(class_dim=1)),  # pixels
        ((24, 4), torch.zeros(24, dtype=torch.long), ClassKD(class_dim=-1)),  # tokens
        ((8, 8, 8), torch.rand(3, 5), OutputMSE()),  # boxes as labels: no classes to read
    ],
)
def test_the_default_loss_fits_the_output_and_its_labels(shape, label, loss):
    assert default_loss(shape, label) == loss


def test_a_task_that_chose_its_loss_keeps_it():
    chosen = Outputs(names=("pooled", "map"), loss=DetectionKD(layout="channels"))
    assert prepare(_task(TwoHeads(), outputs=chosen), "t").outputs.loss == chosen.loss
