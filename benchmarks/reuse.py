"""Does reusing distilled students pay? The same study with 1, 2, 3... precision plans per student.

Runs one study per ``plans_per_student`` value (1 = every trial distills its own student) with
the same task, space, profile and seed: the first value's study runs ``--trials`` trials, each
other one as many trials as end within the same total trial time. Then they are compared at
equal trial time: each study is cut at the total trial time of the fastest one, every point that
could be on a front is re-measured interleaved with the float baseline (the benchmark's
:func:`search.bench.measure.measure_interleaved`), and the bench's normalized hypervolume
(:func:`search.bench.metrics.hypervolume`, reference 5 points below the baseline) is computed.

    nice python benchmarks/reuse.py --trials 20 --plans 2,1      # digits, default space, cpu

Writes ``<out>/reuse.json`` and prints a table: trials, distillations, seconds, hypervolume.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _trials(study: Any) -> list[dict[str, Any]]:
    """Ended trials in order: state, seconds, whether it distilled, and its point if complete."""
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.datetime_complete is None:
            continue
        rec = t.user_attrs.get("record") or {}
        out.append(
            {
                "number": t.number,
                "state": t.state.name,
                "seconds": (t.datetime_complete - t.datetime_start).total_seconds(),
                # on_epoch records a validation metric per distillation epoch, reuse records none
                "distilled": bool(t.user_attrs.get("val_history")),
                "reused": (rec.get("reused_student") or {}).get("trial"),
                "accuracy": rec.get("accuracy"),
                "onnx": rec.get("measured_onnx"),
                "p50": rec.get("latency_p50_ms"),
            }
        )
    return out


def _run(
    args: argparse.Namespace, plans: int, studies: Path, budget_s: float | None = None
) -> dict[str, Any]:
    """One study of ``args.trials`` trials, or (with ``budget_s``) of as many trials as end
    within ``budget_s`` seconds of trial time: it is run one trial further at a time."""
    from search.config import load_profile, load_space
    from search.study import StudySpec, run_study

    space = load_space(args.space)
    distill = space.distill.model_copy(update={"plans_per_student": plans})
    name = f"plans{plans}"
    shutil.rmtree(studies / name, ignore_errors=True)
    spec = StudySpec(
        task=args.task,
        space=space.model_copy(update={"distill": distill}),
        profile=load_profile(args.hw),
        study_name=name,
        results_dir=studies,
        seed=args.seed,
        train_device=args.train_device,
    )
    start = time.perf_counter()
    if budget_s is None:
        study = run_study(spec, trials=args.trials, progress=False)
    else:
        n = 1
        while True:
            study = run_study(spec, trials=n, progress=False)
            if sum(t["seconds"] for t in _trials(study)) >= budget_s or n >= 3 * args.trials:
                break
            n += 1
    base = study.user_attrs["baseline"]
    return {
        "plans": plans,
        "wall_s": time.perf_counter() - start,
        "trials": _trials(study),
        "base_accuracy": base["accuracy"],
        "float_onnx": str(studies / name / "artifacts" / "baseline" / "model.onnx"),
    }


def _cut(run: dict[str, Any], budget_s: float) -> list[dict[str, Any]]:
    """The trials that had ended within ``budget_s`` of trial time."""
    kept, used = [], 0.0
    for t in run["trials"]:
        used += t["seconds"]
        if used > budget_s + 1e-9:
            break
        kept.append(t)
    return kept


def _points(trials: list[dict[str, Any]], latency: dict[str, Any]) -> list[Any]:
    from search.bench.metrics import Point

    return [
        Point(
            accuracy=t["accuracy"],
            latency_ms=latency[t["onnx"]].latency_ms,
            label=str(t["number"]),
        )
        for t in trials
        if t["state"] == "COMPLETE" and t["onnx"] in latency
    ]


def _score(runs: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Cut every run at the fastest one's trial time, re-measure interleaved, hypervolume."""
    from search.bench.measure import measure_interleaved
    from search.bench.metrics import hypervolume, near_front
    from search.config import load_profile
    from search.tasks import load_task

    budget = min(sum(t["seconds"] for t in r["trials"]) for r in runs)
    candidates = {"float": Path(runs[0]["float_onnx"])}
    for r in runs:
        done = [t for t in r["trials"] if t["state"] == "COMPLETE"]
        for point in near_front(_rough_points(done)):
            candidates[point.label] = Path(point.label)
    example = load_task(args.task, seed=args.seed, cache_dir=Path(args.out) / "studies")
    latency = measure_interleaved(
        candidates,
        reference="float",
        spec=load_profile(args.hw).measure_spec(),
        example_input=example.example_input.numpy(),
        rounds=args.rounds,
    )
    base_ms = latency["float"].latency_ms
    rows = []
    for r in runs:
        hv = {}
        for label, trials in (("at_equal_time", _cut(r, budget)), ("all", r["trials"])):
            hv[label] = hypervolume(
                _points(trials, latency), base_accuracy=r["base_accuracy"], base_latency_ms=base_ms
            )
        rows.append(
            {
                "plans_per_student": r["plans"],
                "trials": len(r["trials"]),
                "distillations": sum(t["distilled"] for t in r["trials"]),
                "reused": sum(t["reused"] is not None for t in r["trials"]),
                "trial_s": round(sum(t["seconds"] for t in r["trials"]), 1),
                "trials_within_budget": len(_cut(r, budget)),
                "hypervolume_at_equal_time": round(hv["at_equal_time"], 4),
                "hypervolume_all": round(hv["all"], 4),
            }
        )
    return [{"budget_s": round(budget, 1), "float_p50_ms": base_ms}, *rows]


def _rough_points(done: list[dict[str, Any]]) -> list[Any]:
    """Points with the latency each trial measured alone: enough to find the candidates."""
    from search.bench.metrics import Point

    return [
        Point(accuracy=t["accuracy"], latency_ms=t["p50"], label=t["onnx"])
        for t in done
        if t.get("p50")
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--space", default="default")
    parser.add_argument("--hw", default="cpu")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument(
        "--plans",
        default="2,1",
        help="plans_per_student values: the first runs --trials trials, the others as many as "
        "end in the same trial time",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=20, help="interleaved latency rounds")
    parser.add_argument("--train-device", default="auto")
    parser.add_argument("--out", default="results/bench/reuse")
    args = parser.parse_args(argv)
    out = Path(args.out)
    first, *others = (int(k) for k in args.plans.split(","))
    runs = [_run(args, first, out / "studies")]
    # The others only need to run as long as the first one's trials took (equal trial time).
    budget = sum(t["seconds"] for t in runs[0]["trials"])
    runs += [_run(args, k, out / "studies", budget_s=budget) for k in others]
    rows = _score(runs, args)
    (out / "reuse.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    print(f"equal trial time: {rows[0]['budget_s']} s; float p50 {rows[0]['float_p50_ms']:.3f} ms")
    keys = list(rows[1])
    print(" | ".join(keys))
    for row in rows[1:]:
        print(" | ".join(str(row[k]) for k in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
