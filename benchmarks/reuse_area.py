"""Post-hoc area of two benchmarks/reuse.py studies when nothing beats the float baseline.

The bench's normalized hypervolume references the float model's latency; on a task whose
students are all slower than it (the tiny 16-pixel ResNet: int8 kernels do not pay at that
size) it is 0 for every study. This re-measures the float model and every completed trial of
the ``plans2`` and ``plans1`` studies that ended within the ``plans2`` study's trial time,
interleaved (search.bench.measure), and reports the raw area (search.report.hypervolume) against
a common reference: accuracy 5 points below the baseline, latency of the slowest candidate.

    nice python benchmarks/reuse_area.py results/bench/reuse-tiny/studies tests/data/tiny_cpu.yaml
"""

import json
import sys
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search.bench.measure import measure_interleaved  # noqa: E402
from search.config import load_profile  # noqa: E402
from search.report.hypervolume import hypervolume  # noqa: E402

root, hw = Path(sys.argv[1]), sys.argv[2]
runs = {}
for k in (2, 1):
    s = optuna.load_study(study_name=f"plans{k}", storage=f"sqlite:///{root}/plans{k}/study.db")
    ts = [t for t in s.trials if t.datetime_complete is not None]
    runs[k] = (s, ts)
budget = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in runs[2][1])
cands = {"float": root / "plans2" / "artifacts" / "baseline" / "model.onnx"}
cut = {}
for k, (_s, ts) in runs.items():
    used, kept = 0.0, []
    for t in ts:
        used += (t.datetime_complete - t.datetime_start).total_seconds()
        if used > budget + 1e-9:
            break
        kept.append(t)
    cut[k] = [t for t in kept if t.state.name == "COMPLETE"]
    for t in cut[k]:
        cands[f"{k}-{t.number}"] = Path(t.user_attrs["record"]["measured_onnx"])
shape = [
    d.dim_value or 1
    for d in __import__("onnx").load(cands["float"]).graph.input[0].type.tensor_type.shape.dim
]
x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
spec = load_profile(hw).measure_spec()
lat = measure_interleaved(cands, reference="float", spec=spec, example_input=x, rounds=10)
base_acc = runs[2][0].user_attrs["baseline"]["accuracy"]
ref_lat = max(v.latency_ms for v in lat.values())
out = {
    "budget_s": budget,
    "float_p50_ms": lat["float"].latency_ms,
    "ref_latency_ms": ref_lat,
    "base_accuracy": base_acc,
}
for k in (2, 1):
    pts = [(t.user_attrs["record"]["accuracy"], lat[f"{k}-{t.number}"].latency_ms) for t in cut[k]]
    out[f"plans{k}"] = {
        "trials_within_budget": len(cut[k]),
        "area_ref_slowest": hypervolume(pts, reference=(base_acc - 0.05, ref_lat)),
        "best_accuracy": max(p[0] for p in pts),
        "faster_than_float": sum(p[1] < lat["float"].latency_ms for p in pts),
    }
print(json.dumps(out, indent=1))
