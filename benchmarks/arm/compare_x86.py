"""What a study measured on an (emulated) arm64 agent, set against the same files on this x86
machine: the kernels each side ran and the accuracy each side scored.

    python benchmarks/arm/compare_x86.py --study arm-emulated --results-dir results/arm-emulated

For the baseline and every completed trial it prints the validation accuracy recorded on the
agent, the accuracy of the same ONNX file run here on the CPU provider (the ``cpu`` profile's
session), and the integer/float layer counts of both kernel audits (the agent's came back with
its measurement; this machine's is computed now). It ends with the device and timing the agent
recorded: under qemu-user that says emulated, and its timings are not the CPU's latency.
Run by benchmarks/arm_emulated.sh; needs the study's task (it loads it to score the files).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    import optuna

    from search.config import load_profile
    from search.measure.kernels import kernel_report
    from search.measure.measurement import run_batches
    from search.measure.runtime import create_session
    from search.record import TrialRecord, baseline_of
    from search.tasks import load_task, stack

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--task", default="tests.tiny_task:make_task")
    args = parser.parse_args()
    storage = f"sqlite:///{args.results_dir / args.study / 'study.db'}"
    study = optuna.load_study(study_name=args.study, storage=storage)
    task = load_task(args.task, seed=0, cache_dir=args.results_dir)
    x_val, y_val = stack(task.val)
    spec = load_profile("cpu").measure_spec()
    rows = []
    baseline = baseline_of(study)
    records = [("baseline", baseline)] if baseline else []
    records += [(f"trial {t.number}", TrialRecord.of(t)) for t in study.trials]
    for name, rec in records:
        if rec is None or not rec.measured_onnx or not Path(rec.measured_onnx).is_file():
            continue
        path = Path(rec.measured_onnx)
        outputs = run_batches(create_session(path, spec), x_val.numpy())
        here = float(task.metric(outputs, y_val.numpy()))
        with tempfile.TemporaryDirectory() as tmp:
            x86 = kernel_report(path, spec, Path(tmp) / "opt.onnx")
        arm = getattr(rec, "kernels", None) or rec.measurement.get("kernels") or {}
        rows.append(
            {
                "model": name,
                "file": path.name,
                "accuracy_arm": rec.accuracy,
                "accuracy_x86": here,
                "difference": rec.accuracy - here,
                "arm_integer_layers": arm.get("integer_layers"),
                "arm_float_layers": arm.get("float_layers"),
                "arm_ops": _int_ops(arm),
                "x86_integer_layers": x86.get("integer_layers"),
                "x86_float_layers": x86.get("float_layers"),
                "x86_ops": _int_ops(x86),
            }
        )
    print(f"{'model':10} {'file':14} {'acc arm':>8} {'acc x86':>8} {'diff':>8}  kernels arm | x86")
    for r in rows:
        print(
            f"{r['model']:10} {r['file']:14} {r['accuracy_arm']:8.4f} {r['accuracy_x86']:8.4f} "
            f"{r['difference']:+8.4f}  int {r['arm_integer_layers']} float "
            f"{r['arm_float_layers']} {r['arm_ops']} | int {r['x86_integer_layers']} float "
            f"{r['x86_float_layers']} {r['x86_ops']}"
        )
    if baseline:
        m = baseline.measurement
        print(f"agent device: {m.get('device')}")
        print(f"agent runtime: {json.dumps(m.get('runtime'))}")
        print(f"agent timing: {m.get('timing')}")
    out = args.results_dir / args.study / "arm_vs_x86.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"written: {out}")
    return 0


def _int_ops(report: dict) -> str:
    """The integer and float layer op types of an optimized-graph report, compactly."""
    ops = report.get("ops") or {}
    keep = ("QLinearConv", "QGemm", "QLinearMatMul", "Conv", "FusedConv", "Gemm", "FusedGemm")
    return ",".join(f"{k}x{v}" for k, v in ops.items() if k in keep) or "-"


if __name__ == "__main__":
    raise SystemExit(main())
