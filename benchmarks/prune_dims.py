"""Do the pruning dimensions a hand pipeline lacks pay, on a task and target? Side by side:

- at each prune ratio (0.3, 0.5, 0.7), one global ranking (what torch-pruning does by default
  with ``global_pruning=True``, the bench's ``prune``/``sequential``), every precision group cut
  alike (scales 1), and the scales the per-group sensitivity pass seeds
  (:mod:`search.compress.prune.sensitivity`);
- at ratio 0.5, the importance criterion (L1 against L2 group magnitude);
- at ratio 0.5, ``round_to`` (4, 8, 16, 32) as it changes latency (no distillation: the cut
  teacher's latency only).

Each pruned model is distilled like a warm-start trial (the space's largest epoch budget, lr at
the middle of its range), exported, quantized to uniform int8, and every file is confirmed with
the float baseline side by side in fresh processes (:func:`search.bench.measure.
confirm_candidates`), so the speedups compare.

    python benchmarks/prune_dims.py --task mobilenet_digits --hw cpu

Writes ``<out>/prune_dims.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _trial(ctx: Any, prune: Any, out: Path, label: str) -> dict[str, Any]:
    """Prune, distill, export, score; the float file and its uniform-int8 copy."""
    from search.compress.distill import DistillConfig
    from search.compress.quantize.calibration import calibrate
    from search.compress.quantize.step import uniform_int8
    from search.config import TrialConfig
    from search.trial.context import score
    from search.trial.pipeline import run_trial

    d = ctx.space.distill
    distill = DistillConfig(
        epochs=d.epochs.high, lr=math.sqrt(d.lr.low * d.lr.high), batch_size=d.batch_size
    )
    t0 = time.perf_counter()
    rec = run_trial(TrialConfig(prune=prune, distill=distill), ctx=ctx, out_dir=out / label)
    src = Path(rec.onnx)
    calib = calibrate(src, ctx.calib_inputs, method="minmax", cache_dir=src.parent / "calib")
    q = uniform_int8(calib, src.parent / "model.int8.q.onnx", space=ctx.space.quantize)
    q_acc, _ = score(q.path, ctx)
    print(f"{label}: accuracy {rec.accuracy:.4f} float, {q_acc:.4f} int8, "
          f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    return {
        "label": label,
        "accuracy": rec.accuracy,
        "int8_accuracy": q_acc,
        "float": str(src),
        "int8": str(q.path),
        "macs": rec.sizes.get("prune", {}).get("macs"),
        "group_ratios": rec.steps.get("prune", {}).get("group_ratios"),
    }


def _cut(ctx: Any, ratio: float, round_to: int, out: Path) -> str:
    from search.compress.onnx_export import export_onnx
    from search.compress.prune.step import prune_with_report

    task = ctx.task
    model, _ = prune_with_report(task.model, ratio=ratio, example_input=task.example_input,
                                 ignored_layers=task.ignored_layers, round_to=round_to,
                                 plan=ctx.prune_plan)  # fmt: skip
    return str(export_onnx(model, task.example_input, out / f"round{round_to}.onnx"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="mobilenet_digits")
    parser.add_argument("--hw", default="cpu")
    parser.add_argument("--space", default="default")
    parser.add_argument("--ratios", default="0.3,0.5,0.7")
    parser.add_argument("--out", type=Path, default=Path("results/prune_dims"))
    args = parser.parse_args()

    from search.bench.measure import confirm_candidates
    from search.bench.run import BenchSpec, _context, _prune_references, _references
    from search.compress.prune.step import PruneConfig
    from search.config import load_profile, load_space
    from search.measure.target import open_target

    profile = load_profile(args.hw)
    spec = BenchSpec(task=args.task, space=load_space(args.space), profile=profile, trials=1,
                     out_dir=args.out)  # fmt: skip
    work = args.out / "work"
    ctx, _ = _context(spec, args.out / "studies")
    refs, runs = _references(ctx, work)
    prune_refs = _prune_references(spec, ctx, work)
    groups = prune_refs.sensitivity["patterns"] if prune_refs.sensitivity else {}
    seeded = {k.removeprefix("prune_scale_"): v for k, v in prune_refs.seed.items()}
    p = ctx.space.prune
    ctx.space = ctx.space.model_copy(update={"prune": p.model_copy(update={"groups": groups})})
    rows = []
    for r in (float(x) for x in args.ratios.split(",")):
        variants = {
            "global": PruneConfig(ratio=r),
            "groups x1": PruneConfig(ratio=r, scales=dict.fromkeys(groups, 1.0)),
            "groups seeded": PruneConfig(ratio=r, scales=seeded),
        }
        if r == 0.5:
            variants["global l1"] = PruneConfig(ratio=r, importance="l1")
        for name, cfg in variants.items():
            rows.append(
                {
                    "ratio": r,
                    "variant": name,
                    **_trial(ctx, cfg, work, f"{name} {r:g}".replace(" ", "-")),
                }
            )
    cuts = {f"round_to {k}": _cut(ctx, 0.5, k, work) for k in (4, 8, 16, 32)}
    files = {runs[0].points[0].extra["onnx"]: Path(runs[0].points[0].extra["onnx"])}
    for row in rows:
        files.update({row["float"]: Path(row["float"]), row["int8"]: Path(row["int8"])})
    files.update({v: Path(v) for v in cuts.values()})
    target = open_target(profile.measure_spec(), agent=profile.agent,
                         token_env=profile.agent_token_env)  # fmt: skip
    base = runs[0].points[0].extra["onnx"]
    feed = ctx.task.example_input.numpy()
    latency, info = confirm_candidates(files, reference=base, target=target, latency_input=feed)
    for row in rows:
        row["float_speedup"] = 1 / latency[row["float"]].relative
        row["int8_speedup"] = 1 / latency[row["int8"]].relative
    cut_speed = {k: 1 / latency[v].relative for k, v in cuts.items()}
    result = {"task": args.task, "profile": profile.name, "baseline_accuracy": ctx.baseline_val,
              "sensitivity": prune_refs.sensitivity, "seed": prune_refs.seed, "rows": rows,
              "round_to": cut_speed, "confirmation": info}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prune_dims.json").write_text(json.dumps(result, indent=2, default=str))
    lines = [
        f"# Pruning dimensions on {args.task} / {profile.name}",
        "",
        f"Teacher (float baseline) validation accuracy {ctx.baseline_val:.4f}. Speedups "
        f"confirmed in {info['processes']} fresh processes "
        f"({'CONTENDED' if info['contended'] else 'quiet'}).",
        "",
        "| ratio | variant | accuracy float / int8 | speedup float / int8 | MACs |",
        "|---:|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['ratio']:g} | {r['variant']} | {r['accuracy']:.4f} / {r['int8_accuracy']:.4f} | "
        f"{r['float_speedup']:.2f}x / {r['int8_speedup']:.2f}x | {r['macs']} |"
        for r in rows
    ]
    lines += ["", "| round_to (ratio 0.5, cut teacher, float) | speedup |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f}x |" for k, v in cut_speed.items()]
    (args.out / "prune_dims.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
