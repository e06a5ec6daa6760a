from __future__ import annotations

import math

import pytest
import torch

from search.compress.distill import distillation_loss, recalibrate_batchnorm


def _hand_loss(s, t, y, temperature, alpha):
    """The loss written out with plain math on one sample."""

    def softmax(v):
        e = [math.exp(a) for a in v]
        return [a / sum(e) for a in e]

    ce = -math.log(softmax(s)[y])
    p_t = softmax([a / temperature for a in t])
    p_s = softmax([a / temperature for a in s])
    kl = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s, strict=True))
    return (1 - alpha) * ce + alpha * temperature**2 * kl


def test_loss_equals_hand_computed_value():
    s, t, y = [1.0, -0.5, 0.25], [0.2, 1.5, -1.0], 2
    got = distillation_loss(
        torch.tensor([s]), torch.tensor([t]), torch.tensor([y]), temperature=3.0, alpha=0.7
    )
    assert float(got) == pytest.approx(_hand_loss(s, t, y, 3.0, 0.7), rel=1e-5)


def _student_grad(teacher: torch.Tensor, alpha: float) -> torch.Tensor:
    student = torch.tensor([[0.3, -0.2, 0.9]], requires_grad=True)
    distillation_loss(student, teacher, torch.tensor([1]), temperature=2.0, alpha=alpha).backward()
    return student.grad.clone()


def test_teacher_logits_enter_the_gradient_when_alpha_positive():
    t1, t2 = torch.tensor([[2.0, 0.0, -2.0]]), torch.tensor([[-2.0, 0.0, 2.0]])
    assert not torch.allclose(_student_grad(t1, 0.5), _student_grad(t2, 0.5))
    # With alpha = 0 the teacher has no say: the gradient is that of plain cross-entropy.
    assert torch.allclose(_student_grad(t1, 0.0), _student_grad(t2, 0.0))


def test_unlabelled_samples_use_only_the_teacher():
    s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    unlabelled = distillation_loss(s, t, torch.tensor([-1]), temperature=2.0, alpha=0.1)
    pure_kd = distillation_loss(s, t, torch.tensor([0]), temperature=2.0, alpha=1.0)
    assert float(unlabelled) == pytest.approx(float(pure_kd))


def test_batchnorm_recalibration_uses_the_data():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    data = torch.utils.data.TensorDataset(torch.randn(32, 1, 4, 4) * 3 + 5, torch.zeros(32))
    recalibrate_batchnorm(model, data)
    with torch.no_grad():
        feats = model[0](data.tensors[0])
    want = feats.mean(dim=(0, 2, 3))
    assert torch.allclose(model[1].running_mean, want, atol=1e-4)
    assert model[1].momentum == 0.1 and not model.training
