"""What a trial costs on real models at real resolution: torchvision resnet18 and mobilenet_v2 at
224x224 on a generated ImageFolder, one short study each, seconds per trial split by step.

Accuracy is not the point (the "user's weights" are a random initialization); time is. For each
model the benchmark writes a random checkpoint, runs ``--trials`` trials of a study through the
public pipeline (:func:`search.study.run_study`) on ``--train-device`` and measures on ``--hw``,
then reports per step the mean seconds per trial (trials that reused a student have no distill
or export step), distillations per trial, the device, and whether loading data could hold
training back: one pass of the training DataLoader alone against one distillation epoch.

The measure step times accuracy (ONNX Runtime over the test split), latency and peak memory
together; to split it, the last trial's measured file is timed again afterwards, each part on
its own (columns ``accuracy*`` and ``latency*``).

    nice python benchmarks/scale.py                          # 1,000 images, 3 trials, cpu
    nice python benchmarks/scale.py --images 200 --trials 3 --epochs 1
    python benchmarks/scale.py --train-device cuda --hw cuda  # on a GPU machine

Writes ``<out>/scale.json`` and ``<out>/scale.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODELS = ("resnet18", "mobilenet_v2")
CLASSES = 10
STEPS = ("prune", "lowrank", "distill", "load_student", "export", "program", "calibrate",
         "quantize", "kernels", "measure")  # fmt: skip


def make_image_folder(root: Path, *, train: int, held_out: int, side: int = 256) -> Path:
    """``root/{train,val,test}/<class>/<i>.jpg``: JPEGs of ``side`` pixels whose colour and
    stripes depend on the class (so decoding and resizing cost what real photos cost)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side]
    for split, n in (("train", train), ("val", held_out), ("test", held_out)):
        for i in range(n):
            c = i % CLASSES
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            stripes = np.sin((xx * (c + 1) + yy * (CLASSES - c)) / 9.0)[..., None]
            base = np.array([25 * c, 255 - 25 * c, 120])
            img = base + 60 * stripes + rng.normal(0, 25, (side, side, 3))
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.jpg")
    return root


def _space(path: Path, args: argparse.Namespace) -> Path:
    path.write_text(
        f"""description: scale benchmark - short, for timing
search: {{sampler: tpe, trials: {args.trials}, startup_trials: 2}}
prune: {{ratio: {{low: 0.2, high: 0.5}}}}
distill: {{epochs: {args.epochs}, temperature: 4.0, alpha: 0.5, lr: 1.0e-3, batch_size: 32,
          plans_per_student: {args.plans}}}
lowrank: {{apply: [true, false], kind: [channel], rank_ratio: {{low: 0.3, high: 0.8}}}}
early_stop: {{min_epochs: 100}}
quantize:
  groups: {{all: ["*"]}}
  precisions: [float, int8]
  calibration: [minmax, entropy, percentile]
  calibration_samples: 32
  sensitivity: false
"""
    )
    return path


def _loader_epoch_s(task: Any, batch_size: int) -> float:
    """Seconds for one pass of the training DataLoader alone (what data costs an epoch)."""
    from torch.utils.data import DataLoader

    start = time.perf_counter()
    for _ in DataLoader(task.train, batch_size=batch_size, shuffle=True):
        pass
    return time.perf_counter() - start


def _split_measure(path: Path, profile: Any, task: Any) -> dict[str, float]:
    """Accuracy (test split through ONNX Runtime) and latency of ``path``, timed apart."""
    from search.measure.latency import measure_latency
    from search.measure.measurement import run_batches
    from search.measure.runtime import create_session
    from search.tasks import stack

    spec = profile.measure_spec()
    x, _ = stack(task.test)
    t0 = time.perf_counter()
    session = create_session(path, spec)
    run_batches(session, x.numpy())
    t1 = time.perf_counter()
    feed = {session.get_inputs()[0].name: task.example_input.numpy()}
    measure_latency(session, feed, spec.measure)
    return {"accuracy*": t1 - t0, "latency*": time.perf_counter() - t1}


def _one_model(model: str, args: argparse.Namespace, data: Path, out: Path) -> dict[str, Any]:
    import torch

    from search.config import load_profile, load_space
    from search.core.device import describe, resolve, use
    from search.study import StudySpec, run_study
    from search.tasks import load_task
    from search.tasks.vision import build_model

    weights = out / f"{model}.pt"
    torch.manual_seed(0)
    torch.save(build_model(model, num_classes=CLASSES).state_dict(), weights)
    options = {"model": model, "data": str(data), "weights": str(weights)}
    device = resolve(args.train_device)
    with use(device):
        t0 = time.perf_counter()
        task = load_task("vision", seed=0, cache_dir=out, options=options)
        decode_s = time.perf_counter() - t0
    profile = load_profile(args.hw)
    shutil.rmtree(out / model, ignore_errors=True)
    spec = StudySpec(
        task="vision",
        task_options=options,
        space=load_space(str(_space(out / f"{model}-space.yaml", args))),
        profile=profile,
        study_name=model,
        results_dir=out,
        train_device=args.train_device,
    )
    start = time.perf_counter()
    study = run_study(spec, trials=args.trials, progress=False)
    wall = time.perf_counter() - start
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    records = [t.user_attrs["record"] for t in done]
    steps = {s: float(np.mean([r["timings_s"].get(s, 0.0) for r in records])) for s in STEPS}
    distilled = [r for r in records if not r.get("reused_student")]
    epochs = sum(r["config"]["distill"]["epochs"] for r in distilled)
    return {
        "model": model,
        "device": describe(device),
        "measured_on": ", ".join(records[0]["measurement"]["providers"]) if records else "",
        "train_images": len(task.train),
        "trials": sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials),
        "completed": len(done),
        "reused": len(done) - len(distilled),
        "distillations_per_trial": len(distilled) / max(1, len(done)),
        "steps_s": steps,
        "distill_s_per_epoch": sum(r["timings_s"]["distill"] for r in distilled) / max(1, epochs),
        "loader_s_per_epoch": _loader_epoch_s(task, spec.space.distill.batch_size),
        "decode_once_s": decode_s,
        "trial_s": float(np.mean([t.user_attrs.get("duration_s", 0.0) for t in done])),
        "study_wall_s": wall,
        **(_split_measure(Path(records[-1]["measured_onnx"]), profile, task) if records else {}),
    }


def _table(rows: list[dict[str, Any]]) -> str:
    cols = ["model", "device", "train_images", "trials", "reused", "distillations_per_trial"]
    cols += ["decode_once_s", "loader_s_per_epoch", "distill_s_per_epoch"]
    lines = ["| " + " | ".join(cols + [*STEPS, "accuracy*", "latency*", "trial_s"]) + " |"]
    lines.append("|" + "---|" * (len(cols) + len(STEPS) + 3))
    for r in rows:
        cells = [r[c] for c in cols] + [r["steps_s"][s] for s in STEPS]
        cells += [r.get("accuracy*", float("nan")), r.get("latency*", float("nan")), r["trial_s"]]
        lines.append("| " + " | ".join(f"{c:.2f}" if isinstance(c, float) else str(c)
                                       for c in cells) + " |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--images", type=int, default=1000, help="training images (generated)")
    parser.add_argument("--held-out", type=int, default=100, help="val and test images each")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="distillation epochs per trial")
    parser.add_argument("--plans", type=int, default=2, help="precision plans per student")
    parser.add_argument("--train-device", default="auto")
    parser.add_argument("--hw", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("results/bench/scale"))
    args = parser.parse_args(argv)

    from search.core.device import check_name

    check_name(args.train_device)
    out: Path = args.out
    data = out / f"imagefolder-{args.images}"
    if not (data / "test").is_dir():
        shutil.rmtree(data, ignore_errors=True)
        make_image_folder(data, train=args.images, held_out=args.held_out)
    rows = [_one_model(m, args, data, out) for m in args.models.split(",")]
    (out / "scale.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2,
                                               default=str))  # fmt: skip
    table = _table(rows)
    (out / "scale.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
