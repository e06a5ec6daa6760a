"""Distillation losses that fit the output: zero when the student is the teacher, positive and
trainable when it is not, one line when the labels do not fit."""

from __future__ import annotations

import pytest
import torch

from search.compress.kd_losses import ClassKD, CustomLoss, DetectionKD, OutputMSE, as_loss

KW = {"temperature": 2.0, "alpha": 0.5}


def _grad_flows(loss, student, teacher, labels) -> float:
    s = tuple(o.clone().requires_grad_(True) for o in student)
    value = loss(s, teacher, labels, **KW)
    value.backward()
    return float(sum(o.grad.abs().sum() for o in s))


@pytest.mark.parametrize(
    ("shape", "labels", "class_dim"),
    [
        ((4, 5), torch.tensor([0, 1, 2, -1]), 1),  # a classifier, one unlabelled item
        ((2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4)), 1),  # per-pixel classes
        ((2, 6, 4), torch.randint(-1, 4, (2, 6)), -1),  # per-token classes, -1 = padding
    ],
)
def test_class_kd_is_zero_on_the_teacher_and_trains_a_student(shape, labels, class_dim):
    torch.manual_seed(0)
    teacher = (torch.randn(shape),)
    kd_only = ClassKD(class_dim=class_dim)
    assert float(kd_only(teacher, teacher, torch.full_like(labels, -1), **KW)) == pytest.approx(
        0.0, abs=1e-6
    )
    student = (torch.randn(shape),)
    assert float(kd_only(student, teacher, labels, **KW)) > 0
    assert _grad_flows(kd_only, student, teacher, labels) > 0


def test_class_kd_refuses_labels_that_do_not_fit_the_logits_in_one_line():
    logits = (torch.randn(4, 4, 3),)
    with pytest.raises(ValueError) as err:
        ClassKD()(logits, logits, torch.tensor([0, 1, 2, 3]), **KW)
    assert "labels (4,) do not fit logits (4, 4, 3)" in str(err.value)
    assert "\n" not in str(err.value)


def test_class_kd_keeps_hintons_loss_for_classifiers():
    """The loss a classifier had before: (1 - a) CE + a T^2 KL(batchmean)."""
    import torch.nn.functional as F

    torch.manual_seed(1)
    s, t, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    kl = F.kl_div(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1), reduction="batchmean") * 4
    expected = 0.5 * F.cross_entropy(s, y) + 0.5 * kl
    assert float(ClassKD()((s,), (t,), y, **KW)) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("scores", ["softmax", "sigmoid"])
def test_detection_kd_reads_class_and_box_outputs_apart(scores):
    torch.manual_seed(0)
    cls, box = torch.randn(2, 50, 4), torch.randn(2, 50, 4)
    loss = DetectionKD(scores=scores)
    boxes_as_labels = torch.rand(2, 3, 5)  # detection labels are not read: teacher only
    assert float(loss((cls, box), (cls, box), boxes_as_labels, **KW)) == pytest.approx(
        0.0, abs=1e-5
    )
    moved_box = (cls, box + 1.0)
    assert float(loss(moved_box, (cls, box), boxes_as_labels, **KW)) > 0.1
    assert _grad_flows(loss, (torch.randn(2, 50, 4), box), (cls, box), boxes_as_labels) > 0


def test_detection_kd_on_channel_maps_and_fcos_centerness():
    torch.manual_seed(0)
    heat, box = torch.randn(2, 3, 8, 8), torch.randn(2, 4, 8, 8)
    maps = DetectionKD(layout="channels")
    assert float(maps((heat, box), (heat, box), torch.zeros(2), **KW)) == pytest.approx(
        0.0, abs=1e-5
    )
    fcos = DetectionKD(centerness=2)
    out = (torch.randn(2, 30, 3), torch.randn(2, 30, 4), torch.randn(2, 30, 1))
    assert float(fcos(out, out, torch.zeros(2), **KW)) > 0  # centerness BCE has a floor


def test_output_mse_and_a_tasks_own_loss():
    a, b = (torch.zeros(2, 3), torch.ones(2, 1)), (torch.ones(2, 3), torch.ones(2, 1))
    assert float(OutputMSE()(a, b, torch.zeros(2), **KW)) == pytest.approx(1.0)
    assert float(OutputMSE(outputs=(1,))(a, b, torch.zeros(2), **KW)) == 0.0

    def mine(student, teacher, labels, *, temperature, alpha):
        return (student[0] - teacher[0]).abs().mean() * alpha

    loss = as_loss(mine)
    assert isinstance(loss, CustomLoss) and "mine" in loss.describe()
    assert float(loss(a, b, torch.zeros(2), **KW)) == pytest.approx(0.5)
    assert as_loss(ClassKD()) == ClassKD()
