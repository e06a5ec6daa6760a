"""One short trial of one torchvision detector or segmenter, for the model-zoo benchmark
(:mod:`search.bench.zoo`, ``--kind detection|segmentation``): the product's own steps, each
timed, nothing mocked.

Random initialisation (``weights=None, weights_backbone=None``: nothing is downloaded), 4
classes, a square input (:data:`SIZES`). The model is adapted as a task's would be
(:func:`search.tasks.torchvision_dense.adapt`: a one-stage detector's raw heads, a two-stage
detector's first stage, a segmenter's ``out``). Steps: the pruning dry run with the prediction
layers kept, prune 0.3 (round_to 8), low-rank channel SVD at rank ratio 0.5 where it saves
MACs, one distillation step with the loss the task would use (4 random images, the unpruned
model's outputs), export with a dynamic batch checked in ONNX Runtime against torch on every
output, int8 over 5 groups derived from the model (MinMax on 8 images), an ONNX Runtime run at
batch 2 whose outputs are decoded outside the graph as a task's metric reads them (boxes per
image, or the per-pixel argmax), and the kernel audit.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.bench.zoo_trial import RANK_RATIO, RATIO, _error, _params, _Steps

if TYPE_CHECKING:
    import torch
    from torch import nn

    from search.tasks.outputs import Outputs

KINDS = ("detection", "segmentation")
CLASSES, CALIB, GROUPS = 4, 8, 5
# Input sizes: SSD's own; 320 for the 320 R-CNN; 256 for the other detectors (built with
# min_size = max_size, so their internal resize is the identity); 128 for segmenters.
SIZES = {"ssd300_vgg16": 300, "ssdlite320_mobilenet_v3_large": 320,
         "fasterrcnn_mobilenet_v3_large_320_fpn": 320}  # fmt: skip


def models(kind: str) -> list[str]:
    """Every detection or segmentation model of the installed torchvision, by name."""
    import torchvision

    module = (
        torchvision.models.detection if kind == "detection" else torchvision.models.segmentation
    )
    return sorted(torchvision.models.list_models(module=module))


def size_of(name: str, kind: str) -> int:
    return SIZES.get(name, 256 if kind == "detection" else 128)


def build(name: str, kind: str) -> nn.Module:
    import torch
    import torchvision

    torch.manual_seed(0)
    size = size_of(name, kind)
    kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": CLASSES}
    if kind == "detection" and not name.startswith("ssd") and "320" not in name:
        kwargs.update(min_size=size, max_size=size)
    if kind == "segmentation":
        kwargs["aux_loss"] = False
    return torchvision.models.get_model(name, **kwargs).eval()


def one(name: str, *, kind: str, max_params: float) -> dict[str, Any]:
    """Run ``name`` through every step; never raises (the record says which step failed)."""
    import torch

    warnings.simplefilter("ignore")
    rec: dict[str, Any] = {"model": name, "kind": kind, "seconds": {}}
    steps = _Steps(rec)
    try:
        model = build(name, kind)
        x = torch.rand(1, 3, size_of(name, kind), size_of(name, kind))
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


def _run(model: nn.Module, x: torch.Tensor, rec: dict[str, Any], steps: _Steps) -> None:
    from search.compress.onnx_export import export_with_report
    from search.tasks.outputs import Outputs
    from search.tasks.torchvision_dense import adapt, final_layers

    steps.next("adapt")
    raw, outputs = adapt(model, x, Outputs())
    if outputs.decode is None:  # a segmenter: the loss a task with (N, H, W) masks gets
        from search.compress.kd_losses import ClassKD

        outputs = Outputs(select=outputs.select, loss=ClassKD(), exported=outputs.exported)
    head = final_layers(raw)
    rec["exported"] = outputs.exported
    small = _compress(raw, x, head, rec, steps)
    steps.next("distill")
    _distill(raw, small, x, outputs)
    with tempfile.TemporaryDirectory(prefix="zoo.") as tmp:
        steps.next("export")
        n_out = len(_as_tuple(raw(x)))
        names = outputs.output_names(n_out)
        ex = export_with_report(small, x, Path(tmp) / "model.onnx", names=names)
        rec["export"] = {"exporter": ex.exporter, "trace_batch": ex.trace_batch, "outputs": n_out,
                         "ort_vs_torch": {str(b): v for b, v in ex.verified.items()},
                         "notes": ex.notes}  # fmt: skip
        _int8(ex.path, raw, x, outputs, rec, steps)


def _as_tuple(out: object) -> tuple:
    return tuple(out) if isinstance(out, tuple | list) else (out,)


def _compress(
    raw: nn.Module, x: torch.Tensor, head: list[str], rec: dict[str, Any], steps: _Steps
) -> nn.Module:
    from search.compress.lowrank import factorize
    from search.compress.prune.plan import plan_pruning
    from search.compress.prune.step import prune_with_report

    steps.next("plan")
    plan = plan_pruning(raw, x, ignored_layers=head, ratio=0.5)
    rec["dry_runs"], rec["prune_error"] = plan.dry_runs, plan.error
    rec["left_alone"] = {k: v for k, v in plan.left_alone.items() if k not in head}
    rec["kept"] = head
    steps.next("prune")
    pruned, _ = prune_with_report(
        raw, ratio=RATIO, example_input=x, ignored_layers=head, round_to=8, plan=plan
    )
    rec["params_pruned"] = _params(pruned)
    steps.next("lowrank")
    small, layers = factorize(pruned, example_input=x, rank_ratio=RANK_RATIO, round_to=8)
    rec["lowrank_layers"] = sum(1 for r in layers if not r.skipped)
    rec["params_after"] = _params(small)
    return small


def _distill(teacher: nn.Module, student: nn.Module, x: torch.Tensor, outputs: Outputs) -> None:
    import torch
    from torch.utils.data import TensorDataset

    from search.compress import distill as kd

    g = torch.Generator().manual_seed(1)
    images = torch.rand((4, *x.shape[1:]), generator=g)
    labels = torch.full((4, *x.shape[-2:]), -1) if outputs.select else torch.full((4,), -1)
    data = TensorDataset(images, labels)
    cfg = kd.DistillConfig(epochs=1, batch_size=2)
    kd.distill_step(student, cfg, data=data, teacher_logits=kd.predict_outputs(teacher, data),
                    seed=0, loss=outputs.distill_loss)  # fmt: skip
    student.eval()


def _int8(
    path: Path,
    raw: nn.Module,
    x: torch.Tensor,
    outputs: Outputs,
    rec: dict[str, Any],
    steps: _Steps,
) -> None:
    import numpy as np
    import onnx
    import torch

    from search.compress.quantize.audit import group_labels, layer_kernels
    from search.compress.quantize.calibration import calibrate
    from search.compress.quantize.derive_groups import derive_groups
    from search.compress.quantize.qdq import quantize
    from search.measure.kernels import count_kernels
    from search.measure.measurement import run_all
    from search.measure.runtime import create_session
    from search.measure.spec import MeasureSpec, ProviderSpec, Threads

    steps.next("quantize")
    groups = derive_groups(raw, x, n_groups=GROUPS)
    g = torch.Generator().manual_seed(2)
    inputs = torch.rand((CALIB, *x.shape[1:]), generator=g).numpy()
    calib = calibrate(path, inputs, method="minmax", cache_dir=path.parent / "c")
    rec["quant_notes"] = list(calib.notes)
    q = quantize(calib, path.parent / "model.q.onnx", plan=dict.fromkeys(groups, "int8"),
                 groups=groups)  # fmt: skip
    steps.next("ort_int8")
    spec = MeasureSpec(
        name="zoo", providers=(ProviderSpec(name="CPUExecutionProvider"),), threads=Threads()
    )
    opt = path.parent / "model.opt.onnx"
    out = run_all(create_session(q.path, spec, optimized_path=opt), inputs[:2])
    if not all(np.isfinite(o).all() for o in out):
        raise RuntimeError("the int8 file's outputs are not finite")
    steps.next("decode")
    read = outputs.read(out)
    if isinstance(read, list):  # detections: boxes per image
        rec["decoded"] = f"{np.mean([len(d['boxes']) for d in read]):.0f} boxes/image"
    else:
        rec["decoded"] = f"{len(np.unique(read.argmax(1)))} classes in the argmax"
    graph = onnx.load(str(opt), load_external_data=False)
    rec["integer_layers"] = count_kernels(graph)["integer_layers"]
    rec["ran"] = group_labels(layer_kernels(graph, q.layer_types), q.weight_groups)


def _row(r: dict[str, Any]) -> str:
    from search.bench.zoo_trial import _why

    before, pruned, after = (r.get(k) for k in ("params_before", "params_pruned", "params_after"))
    params = f"{before / 1e6:.1f}" if before else ""
    if pruned and after:
        params += f" -> {pruned / 1e6:.1f} -> {after / 1e6:.1f}"
    la = r.get("left_alone", {})
    export = r.get("export", {})
    agree = "/".join(f"{v:.0e}" for v in export.get("ort_vs_torch", {}).values())
    ran = ", ".join(f"{k} x{n}" for k, n in Counter(r.get("ran", {}).values()).most_common())
    verdict = r["verdict"]
    if verdict == "FAIL":
        verdict += f" ({r.get('failed_step', '')}: {r.get('reason', '')[:90]})"
    elif verdict == "SKIP":
        verdict += f" ({r.get('reason', '')})"
    cells = [
        r["model"], r.get("size", ""), params, f"{len(la)} {_why(la)}".strip(),
        len(r.get("kept", [])), r.get("lowrank_layers", ""), export.get("outputs", ""), agree,
        r.get("integer_layers", ""), ran, r.get("decoded", ""), r.get("wall_s", ""), verdict,
    ]  # fmt: skip
    return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"


def dense_table(
    records: list[dict[str, Any]],
    *,
    kind: str,
    mem_gb: float,
    max_params: float,
    timeout_s: float = 1200,
) -> str:
    """The markdown page of a detection or segmentation sweep."""
    import datetime
    import platform

    from search.bench.zoo_trial import _version

    totals = Counter(r["verdict"] for r in records)
    skipped = [r["model"] for r in records if r["verdict"] == "SKIP"]
    lines = [
        f"# Model zoo: every torchvision {kind} model through one short trial",
        "",
        f"{datetime.date.today().isoformat()}, {platform.machine()}, torch {_version('torch')}, "
        f"torchvision {_version('torchvision')}, torch-pruning {_version('torch-pruning')}, "
        f"onnxruntime {_version('onnxruntime', 'onnxruntime-gpu')}. "
        f"Command: `python benchmarks/zoo.py run --kind {kind} --max-params {max_params:g}`.",
        "",
        __doc__.split("\n\n")[1].replace("\n", " ")
        + f" Each model runs in its own child process (address space limited to {mem_gb:g} GB, "
        f"{timeout_s:g} s, one thread). s: wall seconds of the child on a shared machine.",
        "",
        _WHAT[kind],
        "",
        f"**Totals: {', '.join(f'{k} {v}' for k, v in sorted(totals.items()))}** "
        f"({len(records)} models). Skipped (over {max_params / 1e6:g} M parameters): "
        f"{', '.join(skipped) or 'none'}.",
        "",
        "| model | px | params M: base -> pruned -> low-rank | left alone (why) | kept "
        "(prediction layers) | low-rank layers | outputs | ORT vs torch b1/b3 | int8 kernels | "
        "groups ran | decoded (int8, 2 random images) | s | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *[_row(r) for r in records],
    ]
    return "\n".join(lines) + "\n"


_WHAT = {
    "detection": "What was exported and measured: for SSD, SSDlite, RetinaNet and FCOS the "
    "normalisation, backbone and head up to the raw class logits and box regression (plus "
    "FCOS's centerness); anchor decoding, score threshold and NMS run outside the graph with "
    "torchvision's own postprocess_detections. For Faster, Mask and Keypoint R-CNN the first "
    "stage (backbone, FPN, RPN head: the FPN levels, objectness and deltas per level); "
    "proposals, RoIAlign and the box/mask/keypoint heads run outside the graph in torch, "
    "neither compressed nor timed (search/tasks/two_stage.py). The prediction layers (and an "
    "R-CNN's FPN and RPN head, which the second stage reads) keep their widths. Random "
    "weights: the decoded boxes only show that decoding runs, not accuracy.",
    "segmentation": "What was exported and measured: the model's forward up to its `out` "
    "logits, already upsampled to the input size (`aux_loss=False`; the auxiliary head is not "
    "built). The final classifier conv keeps its width. Random weights: the argmax classes only "
    "show the output is read, not accuracy.",
}
