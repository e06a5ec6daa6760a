"""The user's own torchvision model: weights loading, image data on disk, pruning every
architecture family, and short studies on resnet18, mobilenet_v3_small and a small transformer.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("torchvision")

from search.compress.onnx_export import export_onnx  # noqa: E402
from search.compress.prune.step import count_params, prune_with_report  # noqa: E402
from search.errors import TaskError  # noqa: E402
from search.tasks.transformer import TinyViT  # noqa: E402
from search.tasks.vision import build_model, load_weights, make_vision_task  # noqa: E402

SIZE = 32


def write_image_folder(root: Path, *, classes: int = 2, per_class: int = 10) -> Path:
    """A small ImageFolder tree of generated PNGs: each class has its own colour bias."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 120, size=(SIZE + 4 * i % 9, SIZE, 3), dtype=np.uint8)
            arr[..., c % 3] += 120
            Image.fromarray(arr).save(root / f"class{c}" / f"{i}.png")
    return root


def write_cifar(root: Path, *, per_batch: int = 6) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 255, size=(per_batch, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, size=per_batch)],
        }
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)
    return root


def onnx_matches_torch(model: nn.Module, x: torch.Tensor, path: Path) -> float:
    import onnxruntime as ort

    export_onnx(model, x[:1], path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = model.eval()(x).numpy()
    return float(np.abs(got - want).max())


def test_image_folder_task_splits_and_normalizes(tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "imgs")
    task = make_vision_task(model="resnet18", data=data, seed=0, image_size=SIZE)
    sizes = [len(task.train), len(task.val), len(task.test)]
    assert sum(sizes) == 20 and min(sizes) >= 2
    x, y = task.train[0]
    assert x.shape == (3, SIZE, SIZE) and y in (0, 1)
    assert task.example_input.shape == (1, 3, SIZE, SIZE)
    assert task.model.fc.out_features == 2
    assert task.metric_name == "accuracy"


def test_unlabeled_images_score_agreement_with_the_teacher(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "loose").mkdir()
    for i in range(10):
        Image.new("RGB", (SIZE, SIZE), (i * 20, 0, 0)).save(tmp_path / "loose" / f"{i}.png")
    task = make_vision_task(
        model="mobilenet_v3_small",
        data=tmp_path / "loose",
        seed=0,
        image_size=SIZE,
        num_classes=4,
    )
    assert all(int(task.train[i][1]) == -1 for i in range(len(task.train)))
    assert task.metric_name == "teacher_agreement"
    from search.compress.distill import evaluate

    assert evaluate(task.model, task.val, task.metric) == 1.0  # the teacher agrees with itself


def test_cifar10_pickle_folder(tmp_path: Path) -> None:
    data = write_cifar(tmp_path / "cifar-10-batches-py")
    task = make_vision_task(model="resnet18", data=data, seed=0)
    assert len(task.test) == 6 and len(task.train) + len(task.val) == 30
    assert task.example_input.shape == (1, 3, 32, 32)
    assert task.model.fc.out_features == 10


def test_weights_round_trip_and_clear_errors(tmp_path: Path) -> None:
    model = build_model("resnet18", num_classes=3)
    good = tmp_path / "good.pt"
    torch.save({"state_dict": model.state_dict()}, good)
    loaded = load_weights(build_model("resnet18", num_classes=3), good, what="resnet18")
    assert torch.equal(loaded.fc.weight, model.fc.weight)

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(TaskError, match="cannot read weights") as err:
        load_weights(build_model("resnet18", num_classes=3), corrupt, what="resnet18")
    assert "\n" not in str(err.value)

    with pytest.raises(TaskError, match="do not fit mobilenet_v2") as err:
        load_weights(build_model("mobilenet_v2", num_classes=3), good, what="mobilenet_v2")
    assert "\n" not in str(err.value)

    with pytest.raises(TaskError, match="other shape"):
        load_weights(build_model("resnet18", num_classes=5), good, what="resnet18")

    pickled = tmp_path / "module.pt"
    torch.save(model, pickled)  # a whole pickled module is refused by weights_only=True
    with pytest.raises(TaskError, match="state_dict"):
        load_weights(build_model("resnet18", num_classes=3), pickled, what="resnet18")

    with pytest.raises(TaskError, match="unknown torchvision model"):
        build_model("resnet7", num_classes=3)


def test_data_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskError, match="no images"):
        make_vision_task(model="resnet18", data=tmp_path / "empty", seed=0)
    with pytest.raises(TaskError, match="does not exist"):
        make_vision_task(model="resnet18", data=tmp_path / "nope", seed=0)
    with pytest.raises(TaskError, match="not a CIFAR-10"):
        make_vision_task(model="resnet18", data=tmp_path / "empty", seed=0, layout="cifar10")


class GroupedSE(nn.Module):
    """A grouped conv, a depthwise conv and a squeeze-excitation gate on a residual path."""

    def __init__(self) -> None:
        super().__init__()
        # 16 channels per group: torch-pruning rounds within each group, so round_to=8 can cut.
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.grouped = nn.Conv2d(64, 64, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(64, 64, 3, padding=1, groups=64)
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(64, 16, 1), nn.ReLU(), nn.Conv2d(16, 64, 1)
        )
        self.head = nn.Linear(64, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = self.depthwise(torch.relu(self.grouped(x)))
        x = x + y * torch.sigmoid(self.se(y))
        return self.head(x.mean(dim=(2, 3)))


ARCHS = {
    "resnet18": lambda: build_model("resnet18", num_classes=10),
    "mobilenet_v3_small": lambda: build_model("mobilenet_v3_small", num_classes=10),
    "efficientnet_b0": lambda: build_model("efficientnet_b0", num_classes=10),
    "tiny_vit": lambda: TinyViT(num_classes=10, image_size=SIZE, dim=64, heads=4),
    "grouped_se": GroupedSE,
}


# The short studies export and check resnet18, the transformer and (in test_user_task)
# mobilenet_v3_small; exporting every architecture here too would double the test time.
EXPORT_CHECKED = {"grouped_se"}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_prune_keeps_head_and_exports_matching_onnx(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ARCHS[arch]().eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    small, report = prune_with_report(model, ratio=0.4, example_input=x[:1], round_to=8)
    assert count_params(small) < 0.9 * count_params(model)
    assert small(x).shape == model(x).shape  # the head kept its output size
    assert any("output layer" in why for why in report.left_alone.values())
    if arch in EXPORT_CHECKED:
        assert onnx_matches_torch(small, x, tmp_path / "m.onnx") < 1e-4


def test_attention_keeps_whole_heads() -> None:
    model = TinyViT(num_classes=5, image_size=SIZE, dim=64, heads=4).eval()
    small, report = prune_with_report(
        model, ratio=0.5, example_input=torch.randn(1, 3, SIZE, SIZE), round_to=None
    )
    for block in small.blocks:
        assert block.attn.qkv.out_features % (3 * 4) == 0
        assert block.attn.proj.in_features == block.attn.qkv.out_features // 3
    assert report.unwrapped == ["pos_embed"]
    assert small.pos_embed.shape[-1] == small.patch.out_channels


def test_unknown_attention_is_left_alone() -> None:
    class OddAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.num_heads = 2
            self.mix = nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, _ = x.shape
            h = self.mix(x).reshape(b, n, self.num_heads, -1)
            return h.softmax(-1).reshape(b, n, -1)

    model = nn.Sequential(nn.Linear(8, 16), OddAttention(), nn.Flatten(), nn.Linear(16 * 3, 4))
    small, report = prune_with_report(
        model, ratio=0.5, example_input=torch.randn(1, 3, 8), round_to=None
    )
    assert "attention layout not recognised" in report.left_alone["1"]
    assert small[1].mix.out_features == 16


TINY_SPACE = """\
description: tiny space for tests
search: {sampler: random, trials: 2, startup_trials: 1}
prune: {ratio: {low: 0.3, high: 0.5}, importance: l2, max_layer_ratio: 0.9}
distill: {epochs: 1, temperature: 4.0, alpha: 0.5, lr: 1.0e-3, batch_size: 8}
early_stop: {min_epochs: 5, max_accuracy_drop: 1.0}
# Every step runs on every trial: low-rank where it saves MACs, then int8 QDQ quantization.
lowrank: {apply: true, kind: channel, rank_ratio: 0.5}
quantize: {precisions: [int8], sensitivity: false}
"""
FAST_CPU = """\
description: the CPU provider with few repeats, for tests
device: cpu
providers: [{name: CPUExecutionProvider}]
measure: {warmup_runs: 1, warmup_seconds: 0.0, min_runs: 3, min_seconds: 0.0, memory_runs: 1}
"""


def write_configs(folder: Path) -> tuple[Path, Path]:
    """A tiny search space and a quick CPU profile as YAML files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.yaml").write_text(TINY_SPACE)
    (folder / "fastcpu.yaml").write_text(FAST_CPU)
    return folder / "tiny.yaml", folder / "fastcpu.yaml"


def check_trials(study, results: Path) -> None:
    """Every trial pruned, exported and measured, and its ONNX file matches torch."""
    import onnxruntime as ort
    from optuna.trial import TrialState

    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2, [
        t.user_attrs.get("fail_reason") for t in study.trials
    ]
    for t in study.trials:
        rec = t.user_attrs["record"]
        assert rec["sizes"]["prune"]["params"] < rec["sizes"]["base"]["params"]
        assert rec["latency_paired_ms"] > 0 and rec["size_mb"] > 0
        assert rec["steps"]["prune"]["left_alone"]  # the head, at least, and the record says so
        assert rec["quantize"]["quantized"] and rec["measured_onnx"].endswith("model.q.onnx")
        assert rec["kernels"]["integer_layers"] > 0
        assert "lowrank" in rec["sizes"] and rec["steps"]["lowrank"]["layers"]
        art = Path(rec["artifacts"])
        model = torch.export.load(art / "model.pt2").module()  # the trial's own program
        x = torch.randn(3, 3, SIZE, SIZE)
        session = ort.InferenceSession(str(art / "model.onnx"), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            want = model(x).numpy()
        assert np.abs(session.run(None, {"input": x.numpy()})[0] - want).max() < 1e-4


VIT_TASK = """\
from search.tasks.transformer import TinyViT
from search.tasks.vision import make_vision_task


def make_task(*, seed, cache_dir, data):
    model = TinyViT(num_classes=2, image_size=32, patch_size=8, dim=32, depth=1, heads=4)
    return make_vision_task(model=model, data=data, seed=seed, image_size=32)
"""


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet18", "tiny_vit"])  # mobilenet: test_user_task
def test_short_study_on_each_architecture(model: str, tmp_path: Path) -> None:
    from search.config import load_profile, load_space
    from search.study import StudySpec, run_study

    data = write_image_folder(tmp_path / "imgs", per_class=8)
    space, profile = write_configs(tmp_path / "cfg")
    if model == "tiny_vit":
        (tmp_path / "vit_task.py").write_text(VIT_TASK)
        task, options = f"{tmp_path / 'vit_task.py'}:make_task", {"data": str(data)}
    else:
        weights = tmp_path / "w.pt"
        torch.manual_seed(0)
        torch.save(build_model(model, num_classes=2).state_dict(), weights)
        task = "imagefolder"
        options = {"model": model, "weights": str(weights), "data": str(data), "image_size": SIZE}
    spec = StudySpec(
        task=task,
        task_options=options,
        space=load_space(str(space)),
        profile=load_profile(str(profile)),
        study_name=f"s-{model}",
        results_dir=tmp_path / "results",
    )
    study = run_study(spec, trials=2, progress=False)
    check_trials(study, tmp_path / "results")


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_training_only_auxiliary_heads_are_dropped(name):
    """GoogLeNet and Inception v3 run auxiliary classifiers only in training mode: the task
    drops them, so distillation sees the logits of the model that is exported."""
    import torchvision

    from search.tasks.vision import drop_auxiliary_heads

    net = torchvision.models.get_model(name, weights=None, num_classes=10, init_weights=False)
    assert drop_auxiliary_heads(net)
    out = net.train()(torch.randn(2, 3, 96, 96))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    assert drop_auxiliary_heads(net) == []  # once is enough
