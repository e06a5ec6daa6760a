"""What does fp16 buy on a profile's provider? The same model in float and all-fp16, measured.

Exports the digits-sized ResNet (random weights: latency does not depend on them), writes an
all-fp16 copy with the search's own fp16 step, and measures both alternately on the profile's
providers the way a trial does. Also prints the file sizes and how many layers the provider
kept in float16 (its optimized graph's ``fp16_layers``).

    python benchmarks/fp16.py                   # cpu profile
    python benchmarks/fp16.py --hw cuda --repeats 5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--hw", default="cpu", help="hardware profile (default: cpu)")
    parser.add_argument("--repeats", type=int, default=3, help="sessions per model (default 3)")
    args = parser.parse_args(argv)

    import torch

    from search.compress.onnx_export import export_onnx
    from search.compress.quantize.qdq import half_only
    from search.config import load_profile
    from search.measure.kernels import kernel_report
    from search.measure.latency import measure_latency
    from search.measure.runtime import create_session, describe_device
    from search.tasks.digits import ARCH, SIZE
    from search.tasks.models import ResNet

    profile = load_profile(args.hw)
    spec = profile.measure_spec()
    torch.manual_seed(0)
    x = torch.randn(1, 1, SIZE, SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = {"float": export_onnx(ResNet(num_classes=10, **ARCH).eval(), x, folder / "f.onnx")}
        paths["fp16"] = half_only(
            paths["float"], folder / "h.onnx", plan={"all": "fp16"}, groups={"all": ["*"]}
        ).path
        p50: dict[str, list[float]] = {k: [] for k in paths}
        for _ in range(args.repeats):
            for name, path in paths.items():  # alternately, so drift hits both alike
                session = create_session(path, spec)
                feed = {session.get_inputs()[0].name: x.numpy()}
                p50[name].append(measure_latency(session, feed, profile.measure).p50_ms)
                del session
        print(f"{describe_device()}, profile {profile.name}, batch 1, {args.repeats} sessions")
        for name, path in paths.items():
            kernels = kernel_report(path, spec, folder / f"{name}.opt.onnx")
            ms = np.array(p50[name])
            print(
                f"{name:5s}: p50 {np.median(ms):.3f} ms (min {ms.min():.3f}, max {ms.max():.3f}), "
                f"file {path.stat().st_size / 1e6:.2f} MB, "
                f"fp16 layers kept by the provider: {kernels.get('fp16_layers', '?')}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
