"""Is a baseline steady on every target? The same float model measured alone (as a study measures
its baseline) on several profiles, alternating, a few times each.

    python benchmarks/baseline_steady.py --hw cpu --hw openvino --repeats 3

The model is the digits task's ResNet with random weights (latency does not depend on them). Each
repeat measures it once per profile in turn, each through the profile's own target (this
machine, or the agent a runtime of its own starts: docs/targets.md), with the profile's warm-up
rule. It prints one line per measurement: p50 and its CPU-time p50, cv of wall and of CPU time,
robust cv, the warm-up's runs, whether it settled, and the timed runs' drift; then per profile
the range of the cv of the clock its trials are compared on (CPU time where runs are timed so).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    import numpy as np
    import torch

    from search.compress.onnx_export import export_onnx
    from search.config import load_profile
    from search.measure.target import close_target, open_target
    from search.tasks.digits import ARCH, SIZE
    from search.tasks.models import ResNet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hw", action="append", required=True, help="profile (repeatable)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(2, 1, SIZE, SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(ResNet(num_classes=10, **ARCH).eval(), x[:1], Path(tmp) / "m.onnx")
        profiles = [load_profile(h) for h in args.hw]
        targets = [
            open_target(p.measure_spec(), agent=p.agent, runtime=p.runtime) for p in profiles
        ]
        cvs: dict[str, list[float]] = {p.name: [] for p in profiles}
        try:
            for r in range(args.repeats):
                for p, target in zip(profiles, targets, strict=True):
                    m = target.measure(path, eval_inputs=x.numpy(), latency_input=x[:1].numpy())
                    s = m.latency[0]
                    cvs[p.name].append(s.cv if s.cpu_cv is None else s.cpu_cv)
                    cpu = s.cpu_p50_ms or 0.0
                    print(
                        f"repeat {r} {p.name:9} p50 {s.p50_ms:.4f} ms (cpu {cpu:.4f})"
                        f" cv {s.cv:.3f} cpu_cv {s.cpu_cv or 0:.3f} robust_cv {s.robust_cv:.3f}"
                        f" warm-up {s.warmup_runs}"
                        f" runs steady {s.steady} drift {s.drift or 0:.3f} | load "
                        f"{m.extra['load']['loadavg'][0]:.1f}",
                        flush=True,
                    )
        finally:
            for target in targets:
                close_target(target)
    for name, values in cvs.items():  # the spread of the clock each profile is compared on
        print(
            f"{name:9} cv of the compared clock {min(values):.3f}-{max(values):.3f} "
            f"(median {np.median(values):.3f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
