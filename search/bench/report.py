"""Score the benchmark's methods into plain data, then render it: ``bench.md``, ``bench.html``.

Compute, then render: :func:`summarize_runs` returns JSON-ready data (written to ``bench.json``);
:func:`markdown` and :func:`figure` only draw it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

from search.bench.metrics import (
    Point,
    best_size_reduction,
    best_speedup,
    hypervolume,
    hypervolume_history,
)

JOINT = {"tpe": "joint search (TPE)", "nsga2": "joint search (NSGA-II)"}
TITLES = {
    "float": "float baseline",
    "int8": "ORT int8 static QDQ (baseline alone)",
    "prune": "torch-pruning alone (fixed ratios + KD)",
}


def _title(name: str) -> str:
    if name.startswith("random@"):
        return f"random search, {name.split('@')[1]} trials"
    return TITLES.get(name) or JOINT.get(name, name)


def _remeasured(points: list[Point], latency: dict[str, Any]) -> list[Point]:
    return [
        dataclasses.replace(p, latency_ms=latency[p.extra["onnx"]].p50_ms)
        for p in points
        if p.extra.get("onnx") in latency
    ]


def _point(p: Point | None, base: dict[str, float]) -> dict[str, Any] | None:
    if p is None:
        return None
    return {
        "label": p.label,
        "accuracy": p.accuracy,
        "accuracy_drop": base["accuracy"] - p.accuracy,
        "latency_ms": p.latency_ms,
        "speedup": base["latency_ms"] / p.latency_ms if math.isfinite(p.latency_ms) else None,
        "size_bytes": p.size_bytes,
        "size_reduction": base["size_bytes"] / p.size_bytes if p.size_bytes else None,
        "params": p.extra.get("params", {}),
    }


def summarize_runs(
    runs: list[Any], *, latency: dict[str, Any], spec: Any, extra: dict[str, Any]
) -> dict[str, Any]:
    """Score every method against the interleaved float baseline; plain JSON-ready data."""
    import onnxruntime as ort

    from search.measure.runtime import describe_device

    float_point = runs[0].points[0]
    stats = latency[float_point.extra["onnx"]]
    base = {
        "accuracy": float_point.accuracy,
        "latency_ms": stats.p50_ms,
        "size_bytes": float_point.size_bytes,
    }
    kw = {"base_accuracy": base["accuracy"], "base_latency_ms": base["latency_ms"]}
    rows = []
    for run in runs:
        final = _remeasured(run.points, latency)
        speed, speed_p = best_speedup(final, max_drop=spec.max_drop, **kw)
        size, size_p = best_size_reduction(
            run.points,
            base_accuracy=base["accuracy"],
            base_size_bytes=base["size_bytes"],
            max_drop=spec.max_drop,
        )
        history = []
        if run.base.get("latency_ms"):
            # From the study's own measurements, normalized by its own baseline measurement.
            history = hypervolume_history(
                run.points,
                base_accuracy=run.base["accuracy"],
                base_latency_ms=run.base["latency_ms"],
                ref_drop=spec.ref_drop,
            )
        rows.append(
            {
                "method": run.name,
                "title": _title(run.name),
                "trials": run.trials,
                "completed": sum(1 for p in run.points if p.order > 0),
                "wall_s": run.wall_s,
                "hypervolume": hypervolume(final, ref_drop=spec.ref_drop, **kw),
                "best_speedup": speed,
                "best_speedup_point": _point(speed_p, base),
                "best_size_reduction": size,
                "best_size_point": _point(size_p, base),
                "front": [_point(p, base) for p in final],
                "hv_history": history,
                "step_seconds": run.step_seconds,
            }
        )
    return {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "task": spec.task,
        "profile": spec.profile.name,
        "space": spec.space.name,
        "trials": spec.trials,
        "seed": spec.seed,
        "max_drop": spec.max_drop,
        "ref_drop": spec.ref_drop,
        "device": describe_device(),
        "onnxruntime": ort.__version__,
        "baseline": base,
        "methods": rows,
        "targets": _targets(rows, spec),
        "interleaved": {
            k: {"p50_ms": s.p50_ms, "cv": s.cv, "runs": s.runs} for k, s in latency.items()
        },
        **extra,
    }


def _targets(rows: list[dict[str, Any]], spec: Any) -> list[dict[str, Any]]:
    by = {r["method"]: r for r in rows}
    int8 = by["int8"]["best_speedup_point"] or by["int8"]["front"][0]
    random_2n = by.get(f"random@{spec.random_factor * spec.trials}")
    out = []
    for name in spec.samplers:
        row = by[name]
        point = row["best_speedup_point"]
        vs_int8 = int8["latency_ms"] / point["latency_ms"] if point and int8 else float("nan")
        out += [
            {
                "target": f"{name}: best speedup within the drop >= 3x float",
                "value": row["best_speedup"],
                "met": bool(row["best_speedup"] >= 3.0),
            },
            {
                "target": f"{name}: best point >= 1.3x faster than int8 alone",
                "value": vs_int8,
                "met": bool(vs_int8 >= 1.3),
            },
        ]
        if random_2n is not None:
            out.append(
                {
                    "target": f"{name}: hypervolume after N >= random search after "
                    f"{random_2n['trials']}",
                    "value": row["hypervolume"] - random_2n["hypervolume"],
                    "met": bool(row["hypervolume"] >= random_2n["hypervolume"]),
                }
            )
    return out


def _f(v: Any, fmt: str, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, fmt) + unit


def markdown(data: dict[str, Any]) -> str:
    """The benchmark as a markdown page: the main table, the targets, the time split."""
    base, pct = data["baseline"], data["max_drop"] * 100
    lines = [
        f"# Benchmark: {data['task']} on {data['profile']}",
        "",
        f"{data['created']}, {data['device']}, onnxruntime {data['onnxruntime']}; "
        f"space `{data['space']}`, N = {data['trials']} trials, seed {data['seed']}.",
        f"Float baseline: accuracy {base['accuracy']:.4f}, p50 {base['latency_ms']:.3f} ms "
        f"(batch 1, interleaved), {base['size_bytes'] / 1e6:.2f} MB.",
        "",
        f"Hypervolume: normalized, reference point (latency = float baseline, accuracy = "
        f"baseline - {data['ref_drop']:.2f}); 1.0 would be zero latency at the baseline's "
        f"accuracy. Best speedup and size reduction: over points at most {pct:g} accuracy "
        "point(s) below the float baseline. Latencies of all compared candidates are measured "
        "interleaved in one process.",
        "",
        f"| method | trials | wall (s) | hypervolume | best speedup (≤{pct:g} % drop) | "
        f"its accuracy | best size reduction (≤{pct:g} % drop) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["methods"]:
        p = r["best_speedup_point"]
        acc = f"{p['accuracy']:.4f} ({-p['accuracy_drop']:+.4f})" if p else "–"
        lines.append(
            f"| {r['title']} | {r['trials']} | {r['wall_s']:.1f} | {_f(r['hypervolume'], '.4f')} "
            f"| {_f(r['best_speedup'], '.2f', 'x')} | {acc} | "
            f"{_f(r['best_size_reduction'], '.2f', 'x')} |"
        )
    lines += ["", "## Targets", "", "| target | value | met |", "|---|---:|---|"]
    lines += [
        f"| {t['target']} | {_f(t['value'], '.3f')} | {'yes' if t['met'] else 'NO'} |"
        for t in data["targets"]
    ]
    # Pipeline order as the trials recorded it, then the study's overhead and the total.
    seen = dict.fromkeys(k for r in data["methods"] for k in r["step_seconds"])
    steps = [k for k in seen if k not in ("other", "trial")]
    steps += [k for k in ("other", "trial") if k in seen]
    lines += [
        "",
        "## Mean seconds per trial step",
        "",
        "| method | " + " | ".join(steps) + " |",
        "|---|" + "---:|" * len(steps),
    ]
    for r in data["methods"]:
        if r["step_seconds"]:
            vals = " | ".join(_f(r["step_seconds"].get(k), ".2f") for k in steps)
            lines.append(f"| {r['title']} | {vals} |")
    lines += ["", "## Fronts (interleaved latency)", ""]
    for r in data["methods"]:
        pts = ", ".join(
            f"{p['label']} {p['accuracy']:.4f}/{_f(p['speedup'], '.2f', 'x')}" for p in r["front"]
        )
        lines.append(f"- {r['title']}: {pts or 'no completed point'}")
    lines += [
        "",
        f"Teacher load/train: {data.get('teacher_load_s', 0):.1f} s; whole run: "
        f"{data.get('total_wall_s', 0):.1f} s.",
        "",
    ]
    return "\n".join(lines)


def figure(data: dict[str, Any]):
    """Left: accuracy against speedup (interleaved); right: hypervolume after each trial."""
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "accuracy vs speedup over float (interleaved latency)",
            "hypervolume after each trial (study measurements)",
        ),
    )
    base = data["baseline"]
    for r in data["methods"]:
        pts = sorted((p for p in r["front"] if p["speedup"]), key=lambda p: p["speedup"])
        fig.add_scatter(
            x=[p["speedup"] for p in pts],
            y=[p["accuracy"] for p in pts],
            mode="markers+lines" if len(pts) > 1 else "markers",
            name=r["title"],
            legendgroup=r["method"],
            text=[p["label"] for p in pts],
            row=1,
            col=1,
        )
        if r["hv_history"]:
            xs, ys = zip(*r["hv_history"], strict=True)
            fig.add_scatter(
                x=xs,
                y=ys,
                mode="lines",
                name=r["title"],
                legendgroup=r["method"],
                showlegend=False,
                line={"shape": "hv"},
                row=1,
                col=2,
            )
    fig.add_hline(
        y=base["accuracy"] - data["max_drop"],
        line_dash="dot",
        row=1,
        col=1,
        annotation_text=f"-{data['max_drop'] * 100:g} % accuracy",
    )
    fig.update_xaxes(title_text="speedup over float (x)", row=1, col=1)
    fig.update_yaxes(title_text="accuracy (ONNX Runtime, test split)", row=1, col=1)
    fig.update_xaxes(title_text="trials", row=1, col=2)
    fig.update_yaxes(title_text="normalized hypervolume", row=1, col=2)
    fig.update_layout(title=f"{data['task']} on {data['profile']}", template="plotly_white")
    return fig


def write_bench(data: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``bench.json``, ``bench.md`` and ``bench.html`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / f"bench.{k}" for k in ("json", "md", "html")}
    paths["json"].write_text(json.dumps(data, indent=2, default=str))
    paths["md"].write_text(markdown(data))
    figure(data).write_html(paths["html"], include_plotlyjs=True)
    return paths
