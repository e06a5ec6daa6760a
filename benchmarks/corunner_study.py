"""A study run beside two co-runners that train, then its front confirmed again, quietly, in
new processes: do the speedups the study reported hold?

1. Two co-runners (``tests/corunner.py``: a small CNN training, one thread each; the kind of
   load that moves a paired ratio, ``../shared/cases/latency-ratio-shifts-under-load``) start;
   the study runs beside them (``--task``, ``--trials``, the ``--hw`` profile with
   ``measure.quiet_wait_s`` set, so its end-of-run confirmation waits for a quiet machine).
   The co-runners stop when the study's last trial is done, so every trial is measured beside
   them and flagged busy, and the confirmation comes after them.
2. ``report --confirm`` three times, each in a new process, on the quiet machine: each trial's
   figure against the interval the run's confirmation reported.
3. ``--later S``: once more ``S`` seconds after the run's confirmation (an hour: 3600).

    python benchmarks/corunner_study.py --task mobilenet_digits --trials 4 --later 3600

Writes ``<out>/corunner_study.json`` and ``.md``: per trial, the study's figure (beside the
co-runners), the run's confirmed figure and interval, and every re-confirmation's figure.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CORUNNER = ROOT / "tests" / "corunner.py"


def _profile_file(out: Path, hw: str, quiet_wait_s: float) -> Path:
    """The profile as a YAML file with ``measure.quiet_wait_s`` set (report --confirm reads the
    study's profile file again)."""
    import yaml

    from search.config import load_profile

    profile = load_profile(hw)
    data = json.loads(profile.model_dump_json())
    data["measure"]["quiet_wait_s"] = quiet_wait_s
    data.pop("name", None)
    path = out / f"{profile.name}-quiet.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _run_beside_corunners(args: argparse.Namespace, profile: Path) -> float:
    """The study, with two co-runners until its last trial is done; returns its wall time."""
    study_dir = args.out / args.study
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(CORUNNER), "7200"], env=env) for _ in range(2)]
    cmd = [sys.executable, "-m", "search", "run", "--task", args.task, "--hw", str(profile),
           "--trials", str(args.trials), "--study", args.study, "--results-dir", str(args.out),
           "--threads", "1", "--seed", "0"]  # fmt: skip
    t0 = time.perf_counter()
    run = subprocess.Popen(cmd, env=env)
    try:
        while run.poll() is None:
            done = len(list(study_dir.glob("artifacts/*/trial.json")))
            if done >= args.trials and procs:
                for p in procs:
                    p.terminate()
                procs = []
            time.sleep(1)
    finally:
        for p in procs:
            p.kill()
    if run.returncode != 0:
        raise SystemExit(f"the study failed (exit {run.returncode})")
    return time.perf_counter() - t0


def _confirmed(args: argparse.Namespace) -> dict[str, Any]:
    import optuna

    storage = f"sqlite:///{args.out / args.study / 'study.db'}"
    study = optuna.load_study(study_name=args.study, storage=storage)
    rows = {}
    for t in study.trials:
        rec = t.user_attrs.get("record") or {}
        if rec:
            rows[str(t.number)] = {"study_relative": rec.get("latency_relative"),
                                   "busy": rec.get("busy")}  # fmt: skip
    return {"confirmed": study.user_attrs.get("confirmed"), "trials": rows}


def _reconfirm(args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "search", "report", "--study", args.study, "--results-dir",
           str(args.out), "--confirm", "--no-png"]  # fmt: skip
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return dict(_confirmed(args)["confirmed"])


def _against(first: dict[str, Any], again: dict[str, Any]) -> dict[str, Any]:
    rows = {}
    for n, row in again["trials"].items():
        low, high = first["trials"][n]["relative_ci"]
        rows[n] = {
            "relative": row["latency_relative"],
            "inside": low <= row["latency_relative"] <= high,
        }
    return {"at": again["at"], "contended": again["contended"], "trials": rows,
            "inside": sum(r["inside"] for r in rows.values()), "of": len(rows)}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    first = result["run"]["confirmed"]
    lines = [
        "# A study beside two training co-runners, confirmed again quietly",
        "",
        f"`{' '.join(result['command'])}`; {result['trials']} trials in "
        f"{result['wall_s'] / 60:.1f} min beside two co-runners (tests/corunner.py). The run's "
        f"confirmation: {first['processes']} fresh processes, "
        f"{'CONTENDED' if first['contended'] else 'quiet'} (waited "
        f"{(first.get('quiet_wait') or {}).get('waited_s', 0):.0f} s for a quiet machine).",
        "",
        "| trial | busy in the study | study speedup | confirmed speedup [interval] | "
        + " | ".join(f"re-confirmation {i + 1}" for i in range(len(result["again"])))
        + " |",
        "|---|---|---:|---:|" + "---:|" * len(result["again"]),
    ]
    for n, row in sorted(first["trials"].items(), key=lambda kv: int(kv[0])):
        study = result["run"]["trials"].get(n, {})
        low, high = row["relative_ci"]
        cells = []
        for again in result["again"]:
            r = again["trials"].get(n)
            cells.append(
                f"{1 / r['relative']:.2f}x {'in' if r['inside'] else 'OUT'}" if r else "–"
            )
        rel = study.get("study_relative")
        lines.append(
            f"| {n} | {study.get('busy')} | {f'{1 / rel:.2f}x' if rel else '–'} | "
            f"{1 / row['latency_relative']:.2f}x [{1 / high:.2f}, {1 / low:.2f}] | "
            + " | ".join(cells)
            + " |"
        )
    lines.append("")
    for i, again in enumerate(result["again"], 1):
        lines.append(
            f"Re-confirmation {i} ({again['at']}, {'contended' if again['contended'] else 'quiet'}"
            f"): {again['inside']} of {again['of']} inside the run's intervals."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="mobilenet_digits")
    parser.add_argument("--hw", default="cpu")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--study", default="corunners")
    parser.add_argument("--quiet-wait", type=float, default=600.0)
    parser.add_argument("--reconfirms", type=int, default=3)
    parser.add_argument("--later", type=float, default=0.0, help="seconds; 0: no later look")
    parser.add_argument("--out", type=Path, default=Path("results/corunner-study"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "corunner_study.json"
    if args.later and path.is_file():  # only the later look, for a study already run
        result = json.loads(path.read_text())
    else:
        import shutil

        shutil.rmtree(args.out / args.study, ignore_errors=True)
        profile = _profile_file(args.out, args.hw, args.quiet_wait)
        wall = _run_beside_corunners(args, profile)
        result = {"command": sys.argv, "trials": args.trials, "wall_s": wall,
                  "run": _confirmed(args), "again": []}  # fmt: skip
        first = result["run"]["confirmed"]
        for _ in range(args.reconfirms):
            result["again"].append(_against(first, _reconfirm(args)))
        path.write_text(json.dumps(result, indent=2, default=str))
    if args.later:
        import datetime

        at = datetime.datetime.fromisoformat(result["run"]["confirmed"]["at"])
        wait = args.later - (datetime.datetime.now(datetime.UTC) - at).total_seconds()
        if wait > 0:
            print(f"waiting {wait / 60:.0f} min for the later look", flush=True)
            time.sleep(wait)
        later = _against(result["run"]["confirmed"], _reconfirm(args))
        later["later_s"] = args.later
        result["again"].append(later)
        path.write_text(json.dumps(result, indent=2, default=str))
    (args.out / "corunner_study.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
