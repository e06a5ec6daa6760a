"""One short trial of one torchvision classifier, for the model-zoo benchmark
(:mod:`search.bench.zoo`): the product's own steps, each timed, nothing mocked.

Random initialisation, ``num_classes=10``, the smallest input the architecture accepts with its
default arguments (:data:`SIZES`, else 64x64). Steps: the pruning dry run
(:func:`~search.compress.prune.plan.plan_pruning`), prune 0.3 (round_to 8), low-rank channel
SVD at rank ratio 0.5 where it saves MACs, one distillation step (8 random inputs, the
unpruned model's soft labels), export with a dynamic batch checked in ONNX Runtime against
torch, int8 with groups derived from the model (MinMax calibration on 12 inputs in equal
batches), an ONNX Runtime run at batch 3 and the kernel audit of what ran.
"""

from __future__ import annotations

import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from search.core.errors import first_line

if TYPE_CHECKING:
    import torch
    from torch import nn

# The smallest square input each needs with its default constructor arguments (64 elsewhere):
# inception_v3 fails below 75 px, maxvit_t's partitions need 224, ViTs fix image_size at 224.
SIZES = {
    "inception_v3": 96,
    "maxvit_t": 224,
    "vit_b_16": 224,
    "vit_b_32": 224,
    "vit_l_16": 224,
    "vit_l_32": 224,
    "vit_h_14": 224,
}
RATIO, RANK_RATIO, CALIB_SAMPLES, N_GROUPS = 0.3, 0.5, 12, 5


def _why(left_alone: dict[str, str], top: int = 2) -> str:
    """The commonest reasons layers were left alone, shortened: ``16x BmmBackward0: ...``."""
    short = [v.split(" (the group")[0][:120] for v in left_alone.values()]
    return "; ".join(f"{n}x {k}" for k, n in Counter(short).most_common(top))


def _version(*names: str) -> str:
    """The installed version of the first distribution of ``names`` (``?`` if none is)."""
    from importlib.metadata import PackageNotFoundError, version

    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "?"


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _error(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(e).__name__}: {first_line(e, 200)}{where}"


class _Steps:
    """Times each step; the step that raised is the record's ``failed_step``."""

    def __init__(self, rec: dict[str, Any]) -> None:
        self.rec, self.name, self.t0 = rec, "build", time.perf_counter()

    def next(self, name: str) -> None:
        self.rec["seconds"][self.name] = round(time.perf_counter() - self.t0, 2)
        self.name, self.t0 = name, time.perf_counter()


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    """The randomly initialised model and a seeded example input of batch 1."""
    import torch
    import torchvision

    torch.manual_seed(0)
    from search.tasks.vision import drop_auxiliary_heads

    model = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
    drop_auxiliary_heads(model)  # as the product does for a task's model
    size = SIZES.get(name, 64)
    return model, torch.randn(1, 3, size, size)


def one(name: str, *, max_params: float) -> dict[str, Any]:
    """Run ``name`` through every step; never raises (the record says which step failed)."""
    warnings.simplefilter("ignore")
    rec: dict[str, Any] = {"model": name, "seconds": {}}
    steps = _Steps(rec)
    try:
        model, x = build(name)
        rec.update(size=x.shape[-1], params_before=_params(model))
        if rec["params_before"] > max_params:
            rec["verdict"] = "SKIP"
            rec["reason"] = f"{rec['params_before'] / 1e6:.1f} M parameters > limit"
            return rec
        _run(model, x, rec, steps)
        steps.next("done")
        rec["verdict"] = "PASS"
    except BaseException as e:  # noqa: BLE001 - the sweep records and goes on
        rec.update(verdict="FAIL", failed_step=steps.name, reason=_error(e))
        rec["seconds"][steps.name] = round(time.perf_counter() - steps.t0, 2)
    return rec


def _compress(model: nn.Module, x: torch.Tensor, rec: dict[str, Any], steps: _Steps) -> nn.Module:
    import torch

    from search.compress.lowrank import factorize
    from search.compress.prune.plan import plan_pruning
    from search.compress.prune.step import default_ignored, prune_with_report

    steps.next("plan")
    head = default_ignored(model, x)
    weight = cast(torch.Tensor, model.get_submodule(head[0]).weight)  # a Linear or Conv head
    if not weight.detach().any():  # torchvision zero-initialises ViT heads: outputs 0
        torch.nn.init.normal_(weight, std=0.02)
    plan = plan_pruning(model, x, ignored_layers=head, ratio=0.5)
    rec["dry_runs"], rec["prune_error"] = plan.dry_runs, plan.error
    rec["left_alone"] = {k: v for k, v in plan.left_alone.items() if k not in head}
    steps.next("prune")
    pruned, _ = prune_with_report(model, ratio=RATIO, example_input=x, round_to=8, plan=plan)
    rec["params_pruned"] = _params(pruned)
    steps.next("lowrank")
    small, layers = factorize(pruned, example_input=x, rank_ratio=RANK_RATIO, round_to=8)
    rec["lowrank_layers"] = sum(1 for r in layers if not r.skipped)
    rec["lowrank_skipped"] = sorted({r.skipped.split(":")[0] for r in layers if r.kind == ""})
    rec["params_after"] = _params(small)
    return small


def _distill_one_step(teacher: nn.Module, student: nn.Module, x: torch.Tensor) -> None:
    import torch
    from torch.utils.data import TensorDataset

    from search.compress import distill as kd

    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn((8, *x.shape[1:]), generator=g), torch.full((8,), -1))
    cfg = kd.DistillConfig(epochs=1, batch_size=8)
    kd.distill_step(student, cfg, data=data, teacher_logits=kd.predict(teacher, data), seed=0)
    student.eval()


def _run(model: nn.Module, x: torch.Tensor, rec: dict[str, Any], steps: _Steps) -> None:
    from search.compress.onnx_export import export_with_report
    from search.compress.quantize.derive_groups import derive_groups

    small = _compress(model, x, rec, steps)
    steps.next("distill")
    _distill_one_step(model, small, x)
    with tempfile.TemporaryDirectory(prefix="zoo.") as tmp:
        steps.next("export")
        ex = export_with_report(small, x, Path(tmp) / "model.onnx")
        rec["export"] = {
            "exporter": ex.exporter,
            "trace_batch": ex.trace_batch,
            "ort_vs_torch": {str(b): v for b, v in ex.verified.items()},
            "notes": ex.notes,
        }
        steps.next("quantize")
        groups = derive_groups(model, x, n_groups=N_GROUPS)
        _int8(ex.path, x, groups, rec, steps)


def _int8(
    path: Path, x: torch.Tensor, groups: dict[str, list[str]], rec: dict[str, Any], steps: _Steps
):
    import numpy as np
    import onnx

    from search.compress.quantize.audit import group_labels, layer_kernels
    from search.compress.quantize.calibration import calibrate
    from search.compress.quantize.qdq import quantize
    from search.measure.kernels import count_kernels
    from search.measure.runtime import create_session
    from search.measure.spec import MeasureSpec, ProviderSpec, Threads

    inputs = np.random.default_rng(0).standard_normal((CALIB_SAMPLES, *x.shape[1:]))
    calib = calibrate(path, inputs.astype("f4"), method="minmax", cache_dir=path.parent / "c")
    rec["quant_notes"] = list(calib.notes)
    plan = dict.fromkeys(groups, "int8")
    q = quantize(calib, path.parent / "model.q.onnx", plan=plan, groups=groups)
    steps.next("ort_int8")
    spec = MeasureSpec(
        name="zoo", providers=(ProviderSpec(name="CPUExecutionProvider"),), threads=Threads()
    )
    opt = path.parent / "model.opt.onnx"
    session = create_session(q.path, spec, optimized_path=opt)
    out = session.run(None, {session.get_inputs()[0].name: inputs[:3].astype("f4")})[0]
    if out.shape != (3, 10) or not np.isfinite(out).all():
        raise RuntimeError(f"int8 output of shape {out.shape} is not 3 finite rows of 10")
    graph = onnx.load(str(opt), load_external_data=False)
    rec["integer_layers"] = count_kernels(graph)["integer_layers"]
    rec["ran"] = group_labels(layer_kernels(graph, q.layer_types), q.weight_groups)
