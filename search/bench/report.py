"""Score the benchmark's runs into plain data, then render it: ``bench.md``, ``bench.html``.

Compute, then render: :func:`summarize_runs` returns JSON-ready data (written to ``bench.json``):
one row per run (a method and a sampler seed) and one row per method with the mean and spread
over its seeds (:mod:`search.bench.summary`); :func:`markdown` and
:func:`search.bench.plots.figure` only draw it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.bench.measure import sessions_line
from search.bench.metrics import (
    Point,
    best_size_reduction,
    best_speedup,
    hypervolume,
    hypervolume_history,
)
from search.bench.plots import figure
from search.bench.summary import aggregate, targets

if TYPE_CHECKING:
    from search.bench.measure import BenchLatency
    from search.bench.methods import BenchSettings, MethodRun

TITLES = {
    "float": "float baseline",
    "int8": "ORT int8 static QDQ (baseline alone)",
    "prune": "torch-pruning alone (fixed ratios + KD)",
    "sequential": "sequential: torch-pruning + KD, then ORT int8 PTQ",
}
SAMPLER_TITLES = {"tpe": "TPE", "gp": "GP (log EHVI)", "nsga2": "NSGA-II"}


def title(name: str) -> str:
    """A method's name in the tables: ``random@30`` -> "random search, 30 trials"."""
    from search.bench.methods import VARIANTS

    if name.startswith("random@"):
        return f"random search, {name.split('@')[1]} trials"
    method, _, variant = name.partition(":")
    sampler, _, encoding = method.partition("-")
    if sampler in SAMPLER_TITLES:
        more = f"; {VARIANTS[variant]}" if variant in VARIANTS else ""
        return f"joint search ({SAMPLER_TITLES[sampler]}, {encoding or 'categorical'} plan{more})"
    return TITLES.get(name, name)


def _remeasured(points: list[Point], latency: dict[str, BenchLatency]) -> list[Point]:
    return [
        dataclasses.replace(
            p,
            latency_ms=latency[p.extra["onnx"]].latency_ms,
            extra={**p.extra, "confirmed": latency[p.extra["onnx"]].to_dict()},
        )
        for p in points
        if p.extra.get("onnx") in latency
    ]


def _point(p: Point | None, base: dict[str, float]) -> dict[str, Any] | None:
    if p is None:
        return None
    confirmed = p.extra.get("confirmed") or {}
    interval = None
    if confirmed.get("ci_low") and confirmed.get("ci_high"):
        interval = [1 / confirmed["ci_high"], 1 / confirmed["ci_low"]]
    return {
        "label": p.label,
        "accuracy": p.accuracy,
        "accuracy_drop": base["accuracy"] - p.accuracy,
        "latency_ms": p.latency_ms,
        "speedup": base["latency_ms"] / p.latency_ms if math.isfinite(p.latency_ms) else None,
        # The speedup's interval from the confirmation (covers every process's interval, a new
        # process's prediction interval and, where estimated, the variation between sessions),
        # and how many fresh processes it spans.
        "speedup_interval": interval,
        "processes": confirmed.get("processes"),
        "contended": confirmed.get("contended"),
        "size_bytes": p.size_bytes,
        "size_reduction": base["size_bytes"] / p.size_bytes if p.size_bytes else None,
        "params": p.extra.get("params", {}),
        "onnx": p.extra.get("onnx"),
    }


def _histories(run: MethodRun, spec: BenchSettings) -> tuple[list, list]:
    """Hypervolume after each trial, against trial count and against seconds since the study
    started; from the study's own measurements, normalized by its own baseline measurement."""
    if not run.base.get("latency_ms"):
        return [], []
    by_trials = hypervolume_history(
        run.points,
        base_accuracy=run.base["accuracy"],
        base_latency_ms=run.base["latency_ms"],
        ref_drop=spec.ref_drop,
    )
    elapsed = {p.order: p.extra.get("elapsed_s", 0.0) for p in run.points}
    return by_trials, [(elapsed[n], hv) for n, hv in by_trials]


def _run_row(
    run: MethodRun,
    *,
    latency: dict[str, BenchLatency],
    base: dict[str, Any],
    spec: BenchSettings,
) -> dict:
    """One run scored against the interleaved float baseline."""
    kw = {"base_accuracy": base["accuracy"], "max_drop": spec.max_drop}
    final = _remeasured(run.points, latency)
    speed, speed_p = best_speedup(final, base_latency_ms=base["latency_ms"], **kw)
    size, size_p = best_size_reduction(run.points, base_size_bytes=base["size_bytes"], **kw)
    by_trials, by_time = _histories(run, spec)
    return {
        "method": run.name,
        "title": title(run.name),
        "seed": run.seed,
        "trials": run.trials,
        "completed": sum(1 for p in run.points if p.order > 0),
        "wall_s": run.wall_s,
        "distillations": run.distillations,
        "hypervolume": hypervolume(
            final,
            base_accuracy=base["accuracy"],
            base_latency_ms=base["latency_ms"],
            ref_drop=spec.ref_drop,
        ),
        "best_speedup": speed,
        "best_speedup_point": _point(speed_p, base),
        "best_size_reduction": size,
        "best_size_point": _point(size_p, base),
        "front": [_point(p, base) for p in final],
        "hv_history": by_trials,
        "hv_time_history": by_time,
        "step_seconds": run.step_seconds,
    }


def summarize_runs(
    runs: list[MethodRun],
    *,
    latency: dict[str, BenchLatency],
    spec: BenchSettings,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Score every run and every method (mean and spread over seeds) against the interleaved
    float baseline, and check the targets; plain JSON-ready data."""
    import onnxruntime as ort

    from search.measure.runtime import describe_device

    float_point = runs[0].points[0]
    base = {
        "accuracy": float_point.accuracy,
        "latency_ms": latency[float_point.extra["onnx"]].latency_ms,
        "size_bytes": float_point.size_bytes,
    }
    rows = [_run_row(run, latency=latency, base=base, spec=spec) for run in runs]
    methods = aggregate(rows)
    return {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "task": spec.task,
        "profile": spec.profile.name,
        "profile_source": getattr(spec, "profile_source", "") or spec.profile.name,
        "space": spec.space.name,
        "trials": spec.trials,
        "random_trials": spec.random_factor * spec.trials,
        "seed": spec.seed,
        "sampler_seeds": list(range(spec.seed, spec.seed + spec.seeds)),
        "default": spec.methods[0],
        "max_drop": spec.max_drop,
        "ref_drop": spec.ref_drop,
        "device": describe_device(),
        "onnxruntime": ort.__version__,
        "baseline": base,
        "runs": rows,
        "methods": methods,
        "targets": targets(methods, joint=spec.methods, random_n=spec.random_factor * spec.trials),
        "interleaved": {k: s.to_dict() for k, s in latency.items()},
        **extra,
    }


def _f(v: object, fmt: str, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, fmt) + unit


def _pm(s: dict[str, Any], fmt: str, unit: str = "") -> str:
    """``mean [low, high]`` of a :func:`search.bench.summary.stats` dict: the mean over seeds and
    its 95 % confidence interval (``n/of`` when some are missing)."""
    text = (
        f"{_f(s['mean'], fmt, unit)} [{_f(s.get('ci_low'), fmt)}, {_f(s.get('ci_high'), fmt)}]"
        if s["of"] > 1
        else _f(s["mean"], fmt, unit)
    )
    return text + (f" ({s['n']}/{s['of']})" if s["n"] < s["of"] else "")


def _header(data: dict[str, Any]) -> list[str]:
    base, pct = data["baseline"], data["max_drop"] * 100
    seeds = ", ".join(map(str, data["sampler_seeds"]))
    done = data.get("seeds_done", data["sampler_seeds"])
    if len(done) < len(data["sampler_seeds"]):
        seeds += f" (PARTIAL: only seed(s) {', '.join(map(str, done))} done)"
    return [
        f"# Benchmark: {data['task']} on {data['profile']}",
        "",
        f"{data['created']}, {data['device']}, onnxruntime {data['onnxruntime']}; space "
        f"`{data['space']}`, N = {data['trials']} trials, random search {data['random_trials']}; "
        f"task/teacher/training seed {data['seed']}, sampler seeds {seeds}; default search: "
        f"`{data['default']}`. Load average at the end: {data.get('load_average', '?')}.",
        f"Float baseline: accuracy {base['accuracy']:.4f}, p50 {base['latency_ms']:.3f} ms "
        f"(batch 1, interleaved), {base['size_bytes'] / 1e6:.2f} MB.",
        "",
        _confirmation_line(data),
        "",
        f"Hypervolume: normalized, reference point (latency = float baseline, accuracy = "
        f"baseline - {data['ref_drop']:.2f}); 1.0 would be zero latency at the baseline's "
        f"accuracy. Best speedup: over points at most {pct:g} accuracy point(s) below the "
        "float baseline (1.00x when none is: the float model). Latencies of all compared "
        "candidates are confirmed side by side in fresh processes and paired with the float "
        f"baseline in the same rounds ({_clock(data)}), as the study confirms its front. "
        "Mean [95 % confidence interval of the mean, Student's t] over seeds; methods without "
        "a sampler ran once.",
    ]


def _confirmation_line(data: dict[str, Any]) -> str:
    """How the compared latencies were confirmed: processes, and whether the machine was
    quiet."""
    c = data.get("confirmation") or {}
    if c.get("unconfirmed") or not c:
        return (
            "**Not yet confirmed**: these latencies are the studies' own (each paired with the "
            "baseline when it was measured); the final confirmation runs after the last seed."
        )
    state = (
        "**contended** (other processes used the cores: the speedups may be off; rerun on a "
        "quiet machine)"
        if c.get("contended")
        else "quiet (no other process used more than the threshold of the cores)"
    )
    wait = c.get("quiet_wait") or {}
    waited = f" after waiting {wait['waited_s']:.0f} s for a quiet machine" if wait else ""
    sessions = f" Intervals: {sessions_line(c['sessions'])}." if c.get("sessions") else ""
    return (
        f"Confirmation: every compared candidate timed with the baseline in {c.get('processes')} "
        f"fresh processes ({c.get('measured_by', 'here')}){waited}; the machine was {state}."
        + sessions
    )


def _clock(data: dict[str, Any]) -> str:
    clocks = {v.get("clock") for v in data.get("interleaved", {}).values()}
    if clocks == {"cpu"}:
        return "ratio of thread CPU times: ONNX Runtime runs on the calling thread"
    return "ratio of wall times" if clocks == {"wall"} else "ratio"


def _method_table(data: dict[str, Any]) -> list[str]:
    pct = data["max_drop"] * 100
    lines = [
        "",
        f"| method | seeds | trials | distillations | wall (s) | hypervolume | best speedup "
        f"(≤{pct:g} % drop) | best size reduction (≤{pct:g} % drop) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in data["methods"]:
        distilled = m.get("distillations") or {"mean": None, "of": 1, "n": 1}
        lines.append(
            f"| {m['title']} | {len(m['seeds'])} | {m['trials']} | "
            f"{_f(distilled['mean'], '.1f')} | {_pm(m['wall_s'], '.0f')} | "
            f"{_pm(m['hypervolume'], '.4f')} | {_pm(m['best_speedup'], '.2f', 'x')} | "
            f"{_pm(m['best_size_reduction'], '.2f', 'x')} |"
        )
    return lines


def _run_table(data: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Every run",
        "",
        "| method | seed | completed | distillations | hypervolume | best speedup [interval, "
        "processes] | its accuracy | its trial |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in data["runs"]:
        p = r["best_speedup_point"]
        acc = f"{p['accuracy']:.4f} ({-p['accuracy_drop']:+.4f})" if p else "–"
        interval = ""
        if p and p.get("speedup_interval"):
            lo, hi = p["speedup_interval"]
            interval = f" [{lo:.2f}, {hi:.2f}; {p.get('processes')}]"
        lines.append(
            f"| {r['method']} | {_f(r['seed'], 'd')} | {r['completed']} | "
            f"{r.get('distillations', '–')} | {r['hypervolume']:.4f} | "
            f"{_f(r['best_speedup'], '.2f', 'x')}{interval} | {acc} | "
            f"{p['label'] if p else '–'} |"
        )
    return lines


def _steps_table(data: dict[str, Any]) -> list[str]:
    """Mean seconds per trial step of each method (over its runs), pipeline order."""
    seen = dict.fromkeys(k for r in data["runs"] for k in r["step_seconds"])
    steps = [k for k in seen if k not in ("other", "trial")]
    steps += [k for k in ("other", "trial") if k in seen]
    lines = ["", "## Mean seconds per trial step", ""]
    lines += ["| method | " + " | ".join(steps) + " |", "|---|" + "---:|" * len(steps)]
    for m in data["methods"]:
        runs = [r["step_seconds"] for r in data["runs"] if r["method"] == m["method"]]
        runs = [s for s in runs if s]
        if runs:
            vals = [[s[k] for s in runs if k in s] for k in steps]
            cells = " | ".join(_f(sum(v) / len(v) if v else None, ".2f") for v in vals)
            lines.append(f"| {m['title']} | {cells} |")
    return lines


def markdown(data: dict[str, Any]) -> str:
    """The benchmark as a markdown page: methods (mean ± spread), targets, every run, the time
    split per step and every front."""
    lines = _header(data) + _method_table(data)
    lines += ["", "## Targets (means over seeds)", "", "| target | value | bar | met |"]
    lines.append("|---|---:|---:|---|")
    lines += [
        f"| {t['target']} | {_f(t['value'], '.3f')} | {t['bar']:g} | "
        f"{'yes' if t['met'] else 'NO'} |"
        for t in data["targets"]
    ]
    lines += _run_table(data) + _steps_table(data)
    lines += ["", "## Fronts (interleaved latency)", ""]
    for r in data["runs"]:
        pts = ", ".join(
            f"{p['label']} {p['accuracy']:.4f}/{_f(p['speedup'], '.2f', 'x')}" for p in r["front"]
        )
        seed = "" if r["seed"] is None else f", seed {r['seed']}"
        lines.append(f"- {r['title']}{seed}: {pts or 'no completed point'}")
    lines += [
        "",
        f"Teacher load/train: {data.get('teacher_load_s', 0):.1f} s; whole run: "
        f"{data.get('total_wall_s', 0):.1f} s.",
        "",
    ]
    return "\n".join(lines)


def write_bench(data: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``bench.json``, ``bench.md`` and ``bench.html`` (the plots) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / f"bench.{k}" for k in ("json", "md", "html")}
    paths["json"].write_text(json.dumps(data, indent=2, default=str))
    paths["md"].write_text(markdown(data))
    figure(data).write_html(paths["html"], include_plotlyjs=True)
    return paths
