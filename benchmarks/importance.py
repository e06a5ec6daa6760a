"""Which channel importance should the default space prune by? L2 group magnitude against LAMP.

For each task and prune ratio, the teacher is pruned with each importance
(:func:`search.compress.prune.importance.channel_importance`: ``l2``, torch-pruning's
GroupMagnitudeImportance with each layer's scores divided by their mean before the global
ranking; ``lamp``, Lee et al., ICLR 2021) and distilled like a warm-start trial (the space's
largest epoch budget, lr at the geometric middle of its range, the task's own loss), exported
and scored on the validation split by the task's metric. The MACs left say what each ranking
cut: at one prune ratio the two rankings remove as many channels but from different layers.

    .venv/bin/python benchmarks/importance.py                  # every built-in example task
    .venv/bin/python benchmarks/importance.py --tasks digits --ratios 0.5

Writes ``<out>/importance.json`` and ``importance.md``; one line per trial as it goes.
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

TASKS = "digits,distorted_digits,shapes_detection,shapes_segmentation,tokens,mobilenet_digits"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=TASKS)
    parser.add_argument("--ratios", default="0.3,0.5,0.7")
    parser.add_argument("--importances", default="l2,lamp")
    parser.add_argument("--hw", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("results/importance"))
    args = parser.parse_args()

    import torch

    from search.bench.run import BenchSpec, _context, _references
    from search.compress.distill import DistillConfig
    from search.compress.prune.step import PruneConfig
    from search.config import TrialConfig, load_profile, load_space
    from search.trial.pipeline import run_trial

    torch.set_num_threads(1)
    profile = load_profile(args.hw)
    rows: list[dict[str, Any]] = []
    args.out.mkdir(parents=True, exist_ok=True)
    for task in args.tasks.split(","):
        out = args.out / task
        spec = BenchSpec(task=task, space=load_space("default"), profile=profile, trials=1,
                         out_dir=out)  # fmt: skip
        ctx, _ = _context(spec, out / "studies")
        _references(ctx, out / "work")  # the float baseline every trial is timed against
        d = ctx.space.distill
        distill = DistillConfig(
            epochs=d.epochs.high, lr=math.sqrt(d.lr.low * d.lr.high), batch_size=d.batch_size
        )
        print(f"{task}: teacher {ctx.task.metric_name} {ctx.baseline_val:.4f}", flush=True)
        for ratio in (float(r) for r in args.ratios.split(",")):
            for imp in args.importances.split(","):
                t0 = time.perf_counter()
                label = f"{imp}-{ratio:g}"
                cfg = TrialConfig(prune=PruneConfig(ratio=ratio, importance=imp), distill=distill)
                rec = run_trial(cfg, ctx=ctx, out_dir=out / "work" / label)
                macs = rec.sizes.get("prune", {}).get("macs")
                base = rec.sizes.get("base", {}).get("macs")
                row = {"task": task, "metric": ctx.task.metric_name, "teacher": ctx.baseline_val,
                       "ratio": ratio, "importance": imp, "accuracy": rec.accuracy,
                       "macs": macs, "macs_base": base,
                       "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
                rows.append(row)
                print(f"{task} {label}: {ctx.task.metric_name} {rec.accuracy:.4f} (teacher "
                      f"{ctx.baseline_val:.4f}), MACs {macs}/{base}, {row['seconds']} s",
                      flush=True)  # fmt: skip
                (args.out / "importance.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "# Channel importance: L2 group magnitude against LAMP",
        "",
        "Validation metric after pruning at the ratio and distilling like a warm-start trial "
        "(float model, before quantization); MACs left as a share of the teacher's.",
        "",
        "| task (metric, teacher) | ratio | " + " | ".join(args.importances.split(",")) + " |",
        "|---|---:|" + "---:|" * len(args.importances.split(",")),
    ]
    for task in args.tasks.split(","):
        for ratio in (float(r) for r in args.ratios.split(",")):
            cells = []
            for imp in args.importances.split(","):
                (r,) = [
                    x for x in rows
                    if x["task"] == task and x["ratio"] == ratio and x["importance"] == imp
                ]  # fmt: skip
                share = (r["macs"] or 0) / (r["macs_base"] or 1)
                cells.append(f"{r['accuracy']:.4f} ({share:.0%} MACs)")
            first = next(x for x in rows if x["task"] == task)
            head = f"{task} ({first['metric']}, {first['teacher']:.4f})"
            lines.append(f"| {head} | {ratio:g} | " + " | ".join(cells) + " |")
    (args.out / "importance.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
