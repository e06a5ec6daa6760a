"""How repeatable is a latency measurement? Measure the same model N times, report the spread.

Each repeat builds a fresh ONNX Runtime session on the profile's providers and runs the same
measurement a study runs (warm-up by count and time, repeats until count and time, p50), so
the spread across repeats is the noise a trial's latency objective carries.

    python benchmarks/latency_spread.py                  # digits-sized ResNet, cpu profile
    python benchmarks/latency_spread.py --repeats 10 --hw cpu --pin 1
    python benchmarks/latency_spread.py --model path/to/model.onnx --intra-op 2

Prints one line per repeat and a summary: the coefficient of variation (std / mean) of the
repeats' p50s, and the mean within-repeat CV.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _default_model(folder: Path) -> tuple[Path, np.ndarray]:
    """The digits task's ResNet shape (random weights: latency does not depend on them)."""
    import torch

    from search.compress.onnx_export import export_onnx
    from search.tasks.digits import ARCH, SIZE
    from search.tasks.models import ResNet

    torch.manual_seed(0)
    model = ResNet(num_classes=10, **ARCH).eval()
    x = torch.randn(1, 1, SIZE, SIZE)
    return export_onnx(model, x, folder / "resnet.onnx"), x.numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hw", default="cpu", help="hardware profile (default: cpu)")
    parser.add_argument("--model", type=Path, default=None, help="ONNX file (default: ResNet)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--intra-op", type=int, default=None, help="override the profile's")
    parser.add_argument("--pin", type=int, default=None, help="pin this process to one CPU")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)

    from search.config import load_profile
    from search.measure.latency import measure_latency
    from search.measure.runtime import create_session, describe_device

    profile = load_profile(args.hw)
    if args.intra_op is not None:
        threads = dataclasses.replace(profile.threads, intra_op=args.intra_op)
        profile = profile.model_copy(update={"threads": threads})
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            path, x = _default_model(Path(tmp))
        else:
            path, x = args.model, None
        rows = []
        for i in range(args.repeats):
            session = create_session(path, profile.measure_spec())
            inp = session.get_inputs()[0]
            if x is None:
                shape = [1 if not isinstance(d, int) else d for d in inp.shape]
                x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            feed = {inp.name: np.repeat(x[:1], args.batch_size, axis=0)}
            t0 = time.perf_counter()
            stats = measure_latency(session, feed, profile.measure)
            rows.append({**stats.to_dict(), "seconds": round(time.perf_counter() - t0, 2)})
            print(
                f"repeat {i}: p50 {stats.p50_ms:.4f} ms, p90 {stats.p90_ms:.4f}, "
                f"within-run cv {stats.cv:.1%} (robust {stats.robust_cv:.1%}), {stats.runs} runs"
            )
            del session
    p50 = np.array([r["p50_ms"] for r in rows])
    summary = {
        "device": describe_device(),
        "profile": profile.name,
        "intra_op": profile.threads.intra_op,
        "pinned_cpu": args.pin,
        "load_avg": os.getloadavg(),
        "repeats": len(rows),
        "p50_mean_ms": float(p50.mean()),
        "p50_cv_across_repeats": float(p50.std(ddof=1) / p50.mean()) if len(p50) > 1 else 0.0,
        "p50_min_ms": float(p50.min()),
        "p50_max_ms": float(p50.max()),
        "mean_within_run_cv": float(np.mean([r["cv"] for r in rows])),
        "mean_within_run_robust_cv": float(np.mean([r["robust_cv"] for r in rows])),
        "rows": rows,
    }
    print(
        f"{len(rows)} repeats on {summary['device']} (load {summary['load_avg'][0]:.1f}): "
        f"p50 mean {summary['p50_mean_ms']:.4f} ms, CV across repeats "
        f"{summary['p50_cv_across_repeats']:.1%} (min {summary['p50_min_ms']:.4f}, max "
        f"{summary['p50_max_ms']:.4f}), mean within-run CV {summary['mean_within_run_cv']:.1%} "
        f"(robust {summary['mean_within_run_robust_cv']:.1%})"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
