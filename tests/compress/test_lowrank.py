"""Low-rank SVD factorization: exactness, MAC accounting, skips, export, search space, trial."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import optuna
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from search.compress.lowrank import (
    LowRankConfig,
    LowRankSpace,
    factorize,
    lowrank_step,
)
from search.compress.onnx_export import export_onnx
from search.compress.prune.step import PruneConfig, count_macs
from search.compress.svd import factorize_conv, factorize_linear, full_rank, rank_for
from search.config import Space, TrialConfig, load_space
from search.errors import ConfigError
from search.tasks.models import ResNet

X = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))


def tiny(seed: int = 0) -> ResNet:
    torch.manual_seed(seed)
    model = ResNet(num_classes=10, widths=(8, 16, 16)).eval()
    # Random BatchNorm statistics, so the network is not close to the identity at init.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


CONVS = {
    "3x3": nn.Conv2d(8, 16, 3, 1, 1),
    "3x3-stride2-nobias": nn.Conv2d(8, 16, 3, 2, 1, bias=False),
    "rect-dilated": nn.Conv2d(6, 5, (3, 5), (2, 1), (1, 2), dilation=(1, 2)),
    "same": nn.Conv2d(4, 4, 3, padding="same"),
    "1x1": nn.Conv2d(16, 8, 1),
}


@pytest.mark.parametrize("kind", ["channel", "spatial"])
@pytest.mark.parametrize("name", list(CONVS))
def test_full_rank_conv_reproduces_original(name: str, kind: str) -> None:
    conv = CONVS[name]
    x = torch.randn(2, conv.in_channels, 13, 11)
    out_ch, in_ch, kh, kw = conv.weight.shape
    is_1x1 = (kh, kw) == (1, 1)
    full = (
        min(out_ch, in_ch * kh * kw)
        if kind == "channel" or is_1x1
        else min(in_ch * kh, out_ch * kw)
    )
    assert full_rank(conv, kind) == full
    pair = factorize_conv(conv, full, kind)
    assert isinstance(pair, nn.Sequential) and len(pair) == 2
    assert all(type(m) is nn.Conv2d for m in pair)
    with torch.no_grad():
        assert torch.allclose(pair(x), conv(x), atol=1e-4)
    if kind == "spatial" and not is_1x1:
        assert pair[0].kernel_size == (kh, 1) and pair[1].kernel_size == (1, kw)
    else:
        assert pair[0].kernel_size == (kh, kw) and pair[1].kernel_size == (1, 1)


def test_full_rank_linear_reproduces_original() -> None:
    lin = nn.Linear(12, 7)
    x = torch.randn(3, 12)
    pair = factorize_linear(lin, 7)
    assert [type(m) for m in pair] == [nn.Linear, nn.Linear]
    assert pair[0].out_features == 7 and pair[0].bias is None
    with torch.no_grad():
        assert torch.allclose(pair(x), lin(x), atol=1e-4)


def test_truncation_drops_small_singular_values() -> None:
    # A rank-2 weight is reproduced exactly at rank 2 and not at rank 1.
    lin = nn.Linear(10, 10, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(10, 2) @ torch.randn(2, 10))
    x = torch.randn(4, 10)
    with torch.no_grad():
        assert torch.allclose(factorize_linear(lin, 2)(x), lin(x), atol=1e-4)
        assert not torch.allclose(factorize_linear(lin, 1)(x), lin(x), atol=1e-2)


@pytest.mark.parametrize("kind", ["channel", "spatial"])
def test_below_break_even_macs_strictly_fall(kind: str) -> None:
    model = tiny()
    small, records = factorize(model, example_input=X, rank_ratio=0.3, kind=kind)
    done = [r for r in records if not r.skipped]
    assert done, "some layer must be factorized at ratio 0.3"
    for r in done:
        assert r.rank < r.break_even_rank and r.macs_after < r.macs_before
        assert isinstance(small.get_submodule(r.name), nn.Sequential)
    before, after = count_macs(model, X), count_macs(small, X)
    assert after < before
    # torch-pruning's counter sees the new layers exactly as the records predict.
    assert after == before - sum(r.macs_before - r.macs_after for r in done)
    assert count_macs(model, X) == before  # the input model is left unchanged


@pytest.mark.parametrize("kind", ["channel", "spatial"])
def test_break_even_rank_is_where_savings_stop(kind: str) -> None:
    conv = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, bias=False))
    x = torch.randn(1, 16, 8, 8)
    _, (rec,) = factorize(conv, example_input=x, rank_ratio=1.0, kind=kind)
    be, full = rec.break_even_rank, rec.full_rank
    assert 1 < be <= full and rec.skipped  # full rank never pays for a square 3x3 conv
    below = factorize_conv(conv[0], be - 1, kind)
    at = factorize_conv(conv[0], be, kind)
    original = count_macs(conv, x)
    assert count_macs(below, x) < original <= count_macs(at, x)


def test_layer_that_would_add_macs_is_left_unchanged() -> None:
    model = tiny()
    small, records = factorize(model, example_input=X, rank_ratio=1.0, kind="channel")
    assert records and all("break-even" in r.skipped for r in records)
    assert all(r.macs_after == r.macs_before for r in records)
    for name, m in small.named_modules():
        if name:
            assert type(m) is type(model.get_submodule(name))
    with torch.no_grad():
        assert torch.equal(small(X), model(X))
    # At ratio 0.6 a 3x3 conv is under its break-even rank (0.9 of full), a 1x1 is over (0.5).
    net = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 16, 1))
    x = torch.randn(1, 16, 8, 8)
    out, recs = factorize(net, example_input=x, rank_ratio=0.6)
    assert not recs[0].skipped and isinstance(out[0], nn.Sequential)
    assert "break-even" in recs[1].skipped and type(out[1]) is nn.Conv2d
    assert torch.equal(out[1].weight, net[1].weight)
    assert recs[1].macs_after == recs[1].macs_before == 16 * 16 * 64


def test_grouped_and_unselected_layers_are_left_alone() -> None:
    net = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.Conv2d(8, 8, 3, padding=1, groups=2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.Conv2d(16, 16, 3, padding=1),
    )
    out, recs = factorize(
        net, example_input=torch.randn(1, 8, 8, 8), rank_ratio=0.25, layers=["0", "1", "2"]
    )
    reasons = [r.skipped for r in recs]
    assert "groups=8" in reasons[0] and "groups=2" in reasons[1]
    assert reasons[2] == "" and "not selected" in reasons[3]
    assert [type(m) for m in out] == [nn.Conv2d, nn.Conv2d, nn.Sequential, nn.Conv2d]


def test_groups_set_their_own_ratio_and_round_to_aligns_ranks() -> None:
    model = tiny()
    _, recs = factorize(
        model,
        example_input=X,
        rank_ratio=0.25,
        groups=[(["layers.1.*"], 0.5)],
        round_to=4,
    )
    by_name = {r.name: r for r in recs}
    assert by_name["layers.1.conv2"].rank == 8  # 0.5 of 16
    assert by_name["layers.2.conv2"].rank == 4  # 0.25 of 16
    assert rank_for(0.3, 16, 8) == 8 and rank_for(0.01, 16, None) == 1
    assert rank_for(0.99, 16, 8) == 16


def _ort(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_factorized_model_exports_runs_in_ort_and_quantizes(tmp_path) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    small, _ = factorize(tiny(), example_input=X, rank_ratio=0.5, kind="spatial")
    small, _ = factorize(small, example_input=X, rank_ratio=0.3, kind="channel")
    path = export_onnx(small, X, tmp_path / "model.onnx")
    batch = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = small(batch).numpy()
    got = _ort(path, batch.numpy())  # a dynamic batch of 4 through a batch-1 export
    assert np.allclose(got, expected, atol=1e-4)

    # trial.py saves the factorized model as a torch.export program; it must come back equal.
    from search.trial.programs import save_program

    save_program(small, X, tmp_path / "model.pt2")
    loaded = torch.export.load(tmp_path / "model.pt2").module()
    with torch.no_grad():
        assert torch.allclose(loaded(batch), small(batch), atol=1e-5)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            calib = torch.randn(16, 1, 32, 32, generator=torch.Generator().manual_seed(2))
            self.items = iter([{"input": calib[i : i + 1].numpy()} for i in range(16)])

        def get_next(self):
            return next(self.items, None)

    pre, qpath = tmp_path / "pre.onnx", tmp_path / "model.q.onnx"
    quant_pre_process(str(path), str(pre))
    quantize_static(
        str(pre),
        str(qpath),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    q = _ort(qpath, batch.numpy())
    assert q.shape == expected.shape
    # int8 is not exact; it must stay close to the float outputs' scale.
    assert np.abs(q - expected).max() < 0.2 * np.abs(expected).max()


def test_space_samples_lowrank_and_validates(tmp_path) -> None:
    space = Space.model_validate(
        {
            "lowrank": {
                "kind": ["spatial"],
                "rank_ratio": {"low": 0.2, "high": 0.6},
                "groups": {"early": {"layers": ["stem.*"], "rank_ratio": {"low": 0.5, "high": 1}}},
            }
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    cfg = space.sample(trial).lowrank
    assert isinstance(cfg.apply, bool) and cfg.kind == "spatial"
    assert 0.2 <= cfg.rank_ratio <= 0.6 and 0.5 <= cfg.group_ratios["early"] <= 1.0
    assert {"lowrank", "lowrank_ratio", "lowrank_ratio_early"} <= set(trial.params)
    assert "lowrank_kind" not in trial.params  # one choice is fixed, not searched
    assert load_space("default").lowrank.apply == [True, False]

    with pytest.raises(ConfigError, match="lowrank_ratio"):
        LowRankConfig(rank_ratio=0.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("lowrank:\n  kind: [tucker]\n")
    with pytest.raises(ConfigError, match="lowrank.kind"):
        load_space(str(bad))
    bad.write_text("lowrank:\n  rank_ratio: 1.5\n")
    with pytest.raises(ConfigError, match="rank_ratio"):
        load_space(str(bad))
    assert LowRankSpace().layers == ["*"]
    fixed = LowRankSpace.model_validate({"apply": True, "kind": "channel", "rank_ratio": 0.5})
    assert fixed.apply == [True] and fixed.kind == ["channel"] and fixed.rank_ratio.high == 0.5

    # A space that never factorizes suggests no low-rank parameter at all.
    off = Space.model_validate({"lowrank": {"apply": False, "groups": space.lowrank.groups}})
    trial = study.ask()
    assert off.sample(trial).lowrank.apply is False
    assert not [name for name in trial.params if name.startswith("lowrank")]


def test_trial_applies_lowrank_after_prune_and_records_sizes(tmp_path) -> None:
    from search.compress.distill import DistillConfig
    from search.tasks import Task
    from search.trial.context import Context
    from search.trial.pipeline import run_trial
    from tests.conftest import local_measure, quick_profile

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(32, 1, 32, 32, generator=g), torch.randint(0, 10, (32,)))
    model = tiny()
    task = Task(
        name="tiny",
        model=model,
        train=data,
        val=data,
        test=data,
        calibration=data,
        example_input=X,
        ignored_layers=["fc"],
    )
    # round_to=None: the tiny model's 8-channel layers would otherwise round every rank to full.
    profile = quick_profile(round_to=None)
    measure = local_measure(profile, data.tensors[0].numpy())
    ctx = Context.build(
        task=task, space=load_space("default"), profile=profile, seed=0, measure=measure
    )
    cfg = TrialConfig(
        prune=PruneConfig(ratio=0.25),
        lowrank=LowRankConfig(apply=True, rank_ratio=0.3),
        distill=DistillConfig(epochs=1),
    )
    rec = run_trial(cfg, ctx=ctx, out_dir=tmp_path / "t").to_json()
    sizes = rec["sizes"]
    assert sizes["lowrank"]["macs"] < sizes["prune"]["macs"] < sizes["base"]["macs"]
    assert any(not r["skipped"] for r in rec["steps"]["lowrank"]["layers"])
    assert rec["timings_s"]["lowrank"] >= 0.0
    # Not applied: the model passes through untouched.
    space = ctx.space.lowrank
    off = LowRankConfig(apply=False, rank_ratio=0.3)
    same, layers = lowrank_step(model, off, space=space, example_input=X, round_to=None)
    assert same is model and layers == []
