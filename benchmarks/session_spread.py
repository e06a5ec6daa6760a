"""How the bench's intervals would have held with the widening between sessions, on a finished
benchmark that was re-confirmed later (``bench --reconfirm``).

python benchmarks/session_spread.py results/bench/mobilenet_digits-openvino

Reads ``bench.json`` (each candidate's confirmed ratio and interval), each study candidate's own
ratio from its ``trial.json`` (the session before the confirmation) and ``reconfirm.json`` (the
later look), applies :func:`search.bench.measure.widen_by_sessions` and prints how many of the
later ratios land inside the processes-only and the widened intervals. A benchmark written since
the widening keeps both intervals itself; this recomputes them from the files either way.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search.bench.measure import BenchLatency, sessions_line, widen_by_sessions  # noqa: E402
from search.bench.methods import MethodRun  # noqa: E402
from search.bench.metrics import Point  # noqa: E402


def main(folder: Path) -> None:
    data = json.loads((folder / "bench.json").read_text())
    later = json.loads((folder / "reconfirm.json").read_text())
    fields = BenchLatency.__dataclass_fields__
    latency = {}
    for key, v in data["interleaved"].items():
        v = {k: x for k, x in v.items() if k in fields}
        if v.get("process_ci"):  # written since the widening: start from the processes' own
            v["ci_low"], v["ci_high"] = v.pop("process_ci")
        v["process_ci"] = None
        v["process_relatives"] = tuple(v.get("process_relatives") or ())
        latency[key] = BenchLatency(**v)
    points = []
    root = folder.parent.parent.parent  # the bench's paths are relative to where it ran
    for key in latency:
        trial = (root / key).parent / "trial.json"
        if not trial.is_file():
            continue
        rec = json.loads(trial.read_text())
        # Only a candidate's own record: a sequential int8 file lies beside its float model's.
        own = Path(rec.get("measured_onnx") or rec.get("onnx") or "").name == Path(key).name
        if rec.get("latency_relative") is None or not own:
            continue
        extra = {"onnx": key, "study_relative": rec["latency_relative"]}
        points.append(Point(0, 0, 0, label=key, extra={**extra, "study_busy": rec.get("busy")}))
    wide, info = widen_by_sessions(latency, [MethodRun("all", len(points), 0.0, points)])
    print(f"{folder}: {sessions_line(info)}")
    for look in later:
        now = {k: r["now"] for k, r in look["candidates"].items()}
        rows = [(latency[k], wide[k], x) for k, x in now.items() if k in latency]
        inside = sum(a.ci_low <= x <= a.ci_high for a, _, x in rows)
        widened = sum(b.ci_low <= x <= b.ci_high for _, b, x in rows)
        print(
            f"  re-confirmed {look['hours_after']} h later: {inside} of {len(rows)} inside the "
            f"processes-only intervals, {widened} of {len(rows)} inside the widened ones"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
