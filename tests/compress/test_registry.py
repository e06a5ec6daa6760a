"""The step registry: a new compression step is its module, one entry and its test.

A dummy model step (scale the classifier's weights) is registered for the length of a test;
the space file, the trial config, the student digest and the report's parameter columns pick it
up without any other change. A step that changes the model but does not say what the distilled
student depends on is refused when it is declared.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import optuna
import pytest
import torch

from search.compress import steps as registry
from search.compress.steps import RegistryError, Step, model_steps, student_steps
from search.config import TrialConfig, load_space
from search.core.schema import FloatRange, Section
from search.report.collect import collect
from search.trial.students import StudentStore


class ScaleSpace(Section):
    """Multiply the last layer's weights by a searched factor."""

    factor: FloatRange = FloatRange(low=1.0, high=1.0)

    def sample(self, trial: optuna.Trial) -> ScaleConfig:
        return ScaleConfig(factor=self.factor.suggest(trial, "scale_factor"))


@dataclass(frozen=True)
class ScaleConfig:
    factor: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def active(self) -> dict[str, Any]:
        return {"scale_factor": self.factor}


def _scale(model: Any, part: ScaleConfig, section: ScaleSpace, env: Any) -> tuple[Any, dict]:
    out = copy.deepcopy(model)
    last = [m for m in out.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(part.factor)
    return out, {"factor": part.factor}


def _step(**overrides: Any) -> Step:
    fields: dict[str, Any] = {
        "name": "scale",
        "space": ScaleSpace,
        "config": ScaleConfig,
        "kind": "model",
        "sample": lambda s, trial, env: s.sample(trial),
        "sample_rank": 4,
        "student_inputs": lambda s: {},
        "apply": _scale,
    }
    return Step(**{**fields, **overrides})


@pytest.fixture
def scale_step(monkeypatch):
    step = _step()
    monkeypatch.setattr(registry, "STEPS", (*registry.STEPS, step))
    return step


def _space(tmp_path, extra: str = ""):
    path = tmp_path / "space.yaml"
    path.write_text(
        f"search: {{sampler: random}}\nscale: {{factor: {{low: 0.5, high: 2.0}}}}\n{extra}"
    )
    return load_space(str(path))


def test_a_registered_step_gets_its_section_config_part_and_parameters(scale_step, tmp_path):
    space = _space(tmp_path)
    assert space.section("scale") == ScaleSpace(factor=FloatRange(low=0.5, high=2.0))
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    cfg = space.sample(trial)
    assert "scale_factor" in trial.params
    assert cfg.part("scale").factor == trial.params["scale_factor"]
    assert list(cfg.to_dict()) == ["prune", "lowrank", "distill", "quantize", "scale"]
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.active()["scale_factor"] == cfg.part("scale").factor
    assert scale_step in model_steps() and scale_step in student_steps()


def test_its_student_digest_covers_its_part(scale_step, tmp_path):
    store = StudentStore(tmp_path, base={})
    a = TrialConfig(scale=ScaleConfig(factor=0.5))
    assert store.digest(a) != store.digest(TrialConfig(scale=ScaleConfig(factor=2.0)))
    assert store.digest(a) == store.digest(TrialConfig(scale=ScaleConfig(factor=0.5)))


def test_the_report_shows_its_parameter(scale_step):
    study = optuna.create_study(directions=["maximize", "minimize"])
    cfg = TrialConfig(scale=ScaleConfig(factor=1.5))
    study.add_trial(
        optuna.trial.create_trial(
            params={"scale_factor": 1.5},
            distributions={"scale_factor": optuna.distributions.FloatDistribution(0.5, 2.0)},
            values=[0.9, 1.0],
            user_attrs={
                "record": {"accuracy": 0.9, "latency_paired_ms": 1.0, "config": cfg.to_dict()}
            },  # fmt: skip
        )
    )
    assert collect(study).param_scale_factor.tolist() == [1.5]


def test_its_apply_runs_in_pipeline_order(scale_step):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    out, record = scale_step.apply(model, ScaleConfig(factor=2.0), ScaleSpace(), None)
    assert torch.allclose(out[1].weight, 2 * model[1].weight) and record == {"factor": 2.0}
    assert [s.name for s in model_steps()] == ["prune", "lowrank", "scale"]


@pytest.mark.parametrize("kind", ["model", "train"])
def test_a_step_that_changes_the_student_must_declare_its_inputs(kind):
    with pytest.raises(RegistryError, match="declares no student_inputs"):
        _step(kind=kind, student_inputs=None)


def test_a_step_on_the_exported_file_needs_no_student_inputs():
    assert _step(kind="onnx", student_inputs=None, apply=None).student_inputs is None
