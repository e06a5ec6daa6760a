"""Which load moves a paired latency ratio, and by how much: co-runners that train, that run
ONNX Runtime, that stream memory, and a busy loop, against a quiet machine.

A trial's latency is its ratio to the float baseline timed in the same rounds
(:mod:`search.measure.paired`). Pairing cancels load that slows both files alike; a co-runner
that competes for caches and memory bandwidth can slow the larger float baseline more than a
small int8 file, so the ratio itself moves (``../shared/cases/latency-ratio-shifts-under-load``:
two training co-runners moved a digits trial from 4.3x to 4.9x). This measures it per kind of
co-runner, with the confirmation the study uses (:func:`search.measure.confirmation.time_files`:
fresh processes, interleaved rounds, thread CPU time on the one-thread CPU profile), and what
the load watch saw meanwhile (other processes' share of the cores, :mod:`search.measure.load`).

Models (random weights; latency only): torchvision MobileNetV2 at 32x32 (the ``mobilenet_digits``
task's model) float, its int8 QDQ copy, pruned 0.5 float and pruned 0.5 int8; and the
distorted-digits ResNet float and int8. Each candidate's ratio is to its own float baseline.

Each repetition runs every condition once, in rotated order (so drift in the machine's own load
does not line up with one condition): ``quiet`` (no co-runner), then two co-runners of one kind
(``train``: the case's corunner.py, a small CNN training; ``ort``: ONNX Runtime running a float
MobileNetV2 at 64x64 in a loop; ``stream``: numpy copying 64 MB arrays; ``spin``: a Python busy
loop), each on one thread, started 3 s before the timing.

    python benchmarks/corunners.py                       # 3 repetitions x 3 processes (~15 min)
    python benchmarks/corunners.py --reps 1 --processes 1 --rounds 5     # a smoke run

Writes ``<out>/corunners.json`` and ``<out>/corunners.md``. Run it on an otherwise quiet machine:
the ``quiet`` condition is only as quiet as the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

KINDS = ("train", "ort", "stream", "spin")
CONDITIONS = ("quiet", *KINDS)


def corunner(kind: str, seconds: float) -> None:
    """One co-runner of ``kind`` for ``seconds`` (runs in its own process, one thread)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    end = time.time() + seconds
    if kind == "train":
        import torch
        from torch import nn

        torch.set_num_threads(1)
        net = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(),
                            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))  # fmt: skip
        opt = torch.optim.SGD(net.parameters(), 0.01)
        x, y = torch.randn(32, 3, 64, 64), torch.randint(0, 10, (32,))
        while time.time() < end:
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    elif kind == "ort":
        import onnxruntime as ort

        path = Path(os.environ["CORUNNER_ONNX"])
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
        name = sess.get_inputs()[0].name
        while time.time() < end:
            sess.run(None, {name: x})
    elif kind == "stream":
        a = np.ones(8 << 20)  # 64 MB of float64: far beyond any cache
        b = np.empty_like(a)
        while time.time() < end:
            np.copyto(b, a)
            np.copyto(a, b)
    elif kind == "spin":
        n = 0
        while time.time() < end:
            n += 1
    else:
        raise SystemExit(f"unknown co-runner {kind!r}; choose from {', '.join(KINDS)}")


def build_models(out: Path) -> dict[str, dict[str, Path]]:
    """Baseline -> {candidate name: file}: MobileNetV2 at 32x32 and the digits ResNet, float and
    int8, pruned and not; plus the co-runner's MobileNetV2 at 64x64."""
    import torch
    import torchvision

    from search.compress.onnx_export import export_onnx
    from search.compress.prune.step import prune
    from search.compress.quantize.calibration import calibrate
    from search.compress.quantize.qdq import QuantizeSpace
    from search.compress.quantize.step import uniform_int8
    from search.tasks.distorted_digits import ARCH
    from search.tasks.models import ResNet

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    space = QuantizeSpace(groups={"all": ["*"]})
    rng = np.random.default_rng(0)

    def both(model: torch.nn.Module, x: torch.Tensor, name: str) -> tuple[Path, Path]:
        f = export_onnx(model.eval(), x, out / f"{name}.onnx")
        calib = rng.standard_normal((64, *x.shape[1:])).astype(np.float32)
        c = calibrate(f, calib, method="minmax", cache_dir=out / f"{name}.calib")
        return f, uniform_int8(c, out / f"{name}.q.onnx", space=space).path

    mbv2 = torchvision.models.get_model("mobilenet_v2", weights=None, num_classes=10)
    x = torch.randn(1, 3, 32, 32)
    f, q = both(mbv2, x, "mbv2")
    small = prune(mbv2, ratio=0.5, example_input=x, ignored_layers=["classifier.1"], round_to=8)
    pf, pq = both(small, x, "mbv2-p05")
    resnet = ResNet(num_classes=10, **ARCH)
    rf, rq = both(resnet, torch.randn(1, 1, 32, 32), "resnet")
    export_onnx(mbv2.eval(), torch.randn(1, 3, 64, 64), out / "corunner.onnx")
    return {
        str(f): {"mbv2-int8": q, "mbv2-p0.5": pf, "mbv2-p0.5-int8": pq},
        str(rf): {"resnet-int8": rq},
    }


def measure(pairs: dict[str, dict[str, Path]], *, processes: int, rounds: int) -> list[dict]:
    """Each baseline with its candidates, confirmed in ``processes`` fresh processes."""
    import dataclasses

    from search.config import load_profile
    from search.measure.confirmation import time_files

    spec = load_profile("cpu").measure_spec()
    settings = dataclasses.replace(
        spec.measure, confirm_processes=processes, confirm_rounds=rounds, max_repeats=0
    )
    spec = dataclasses.replace(spec, measure=settings)
    out = []
    for base, cands in pairs.items():
        res = time_files(cands, reference=Path(base), spec=spec, latency_input=None)
        out.append(
            {
                "reference": Path(base).stem,
                "reference_p50_ms": res["reference_p50_ms"],
                "load": res["load"],
                "per_process": res["per_process"],
                "pooled": {n: p["relative"] for n, p in res["paired"].items()},
                "p50_ms": {n: p["candidate_p50_ms"] for n, p in res["paired"].items()},
            }
        )
    return out


def start(kind: str, seconds: float, onnx: Path) -> list[subprocess.Popen]:
    env = {**os.environ, "CORUNNER_ONNX": str(onnx), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "corunner", kind, str(seconds)]
    return [subprocess.Popen(cmd, env=env) for _ in range(2)]


def summarize(rows: list[dict]) -> dict[str, Any]:
    """Per condition and candidate: median ratio over processes, range, shift vs quiet; the
    baselines' p50 shift; other processes' share of the cores."""
    by: dict[str, dict[str, list[float]]] = {}
    base_p50: dict[str, dict[str, list[float]]] = {}
    share: dict[str, list[float]] = {}
    for row in rows:
        c = row["condition"]
        for m in row["measured"]:
            for proc in m["per_process"]:
                for name, rel in proc["relative"].items():
                    by.setdefault(c, {}).setdefault(name, []).append(rel)
                if proc["load"].get("other_cpu") is not None:
                    share.setdefault(c, []).append(proc["load"]["other_cpu"])
            base_p50.setdefault(c, {}).setdefault(m["reference"], []).append(m["reference_p50_ms"])
    quiet = {n: float(np.median(v)) for n, v in by.get("quiet", {}).items()}
    qbase = {n: float(np.median(v)) for n, v in base_p50.get("quiet", {}).items()}
    out: dict[str, Any] = {}
    for c, names in by.items():
        out[c] = {
            "other_cpu": float(np.mean(share.get(c, [np.nan]))),
            "speedup": {
                n: {
                    "median": 1 / float(np.median(v)),
                    "min": 1 / max(v),
                    "max": 1 / min(v),
                    "shift": (quiet[n] / float(np.median(v)) - 1) if n in quiet else None,
                    "processes": len(v),
                }
                for n, v in names.items()
            },
            "baseline_p50_shift": {
                n: (float(np.median(v)) / qbase[n] - 1) if n in qbase else None
                for n, v in base_p50[c].items()
            },
        }
    return out


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    names = sorted({n for c in summary.values() for n in c["speedup"]})
    lines = [
        "# Which load moves a paired ratio",
        "",
        f"{meta['created']}, {meta['device']}; {meta['reps']} repetition(s) x "
        f"{meta['processes']} fresh process(es) x {meta['rounds']} rounds per condition; two "
        "co-runners of each kind. Speedup = baseline / candidate (thread CPU time, paired); "
        "shift = speedup under the condition / quiet - 1.",
        "",
        "| condition | other processes' CPU share | "
        + " | ".join(f"{n}: speedup [min, max] (shift)" for n in names)
        + " | float baselines' p50 shift |",
        "|---|---:|" + "---:|" * len(names) + "---|",
    ]
    for c in CONDITIONS:
        if c not in summary:
            continue
        s = summary[c]
        cells = []
        for n in names:
            v = s["speedup"].get(n)
            if v is None:
                cells.append("–")
                continue
            shift = "" if v["shift"] is None else f" ({v['shift']:+.1%})"
            cells.append(f"{v['median']:.2f}x [{v['min']:.2f}, {v['max']:.2f}]{shift}")
        base = ", ".join(
            f"{n} {v:+.1%}" for n, v in s["baseline_p50_shift"].items() if v is not None
        )
        lines.append(f"| {c} | {s['other_cpu']:.0%} | " + " | ".join(cells) + f" | {base} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "corunner":
        corunner(sys.argv[2], float(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--out", type=Path, default=Path("results/corunners"))
    args = parser.parse_args()
    from search.measure.runtime import describe_device

    conditions = [c for c in args.conditions.split(",") if c]
    pairs = build_models(args.out / "models")
    rows: list[dict[str, Any]] = []
    for rep in range(args.reps):
        order = conditions[rep % len(conditions) :] + conditions[: rep % len(conditions)]
        for c in order:
            procs = [] if c == "quiet" else start(c, 3600, args.out / "models" / "corunner.onnx")
            try:
                time.sleep(3 if procs else 0)
                measured = measure(pairs, processes=args.processes, rounds=args.rounds)
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.wait()
            rows.append({"rep": rep, "condition": c, "measured": measured})
            print(f"rep {rep} {c}: " + ", ".join(
                f"{n} {1 / r:.2f}x" for m in measured for n, r in m["pooled"].items()
            ), flush=True)  # fmt: skip
            time.sleep(2)  # let the co-runners' caches and the load average settle
    meta = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "device": describe_device(),
        "reps": args.reps,
        "processes": args.processes,
        "rounds": args.rounds,
        "loadavg_end": os.getloadavg(),
    }
    summary = summarize(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "corunners.json").write_text(
        json.dumps({**meta, "summary": summary, "rows": rows}, indent=2, default=str)
    )
    (args.out / "corunners.md").write_text(markdown(summary, meta))
    print(markdown(summary, meta))


if __name__ == "__main__":
    main()
