"""A second look at a finished benchmark: its confirmed candidates timed again, later, in new
processes, and whether each lands inside the interval the benchmark gave it.

``python -m search bench --reconfirm results/bench/<task>-<hw>`` reads ``bench.json``, times every
candidate the benchmark confirmed with the float baseline again on the same profile
(:func:`search.bench.measure.confirm_candidates`), and appends to ``reconfirm.json`` and
``reconfirm.md``: for every candidate its new ratio and whether it lies in the old interval,
and for each run's best point its speedup then and now. Run an hour after the benchmark, it is
the check that the numbers it reports hold.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from search.errors import SearchError

LATENCY_INPUT = "latency_input.npy"


def reconfirm(
    out_dir: Path, *, profile_name: str | None = None, quiet_wait_s: float = 0.0
) -> dict:
    """Time the candidates of the benchmark in ``out_dir`` again and compare; returns what was
    appended to ``reconfirm.json``.

    Raises:
        SearchError: no finished, confirmed benchmark there, or its files are gone.
    """
    from search.bench.measure import confirm_candidates
    from search.config import load_profile
    from search.measure.target import close_target, open_target

    data = _load(out_dir)
    old = data["interleaved"]
    paths = {k: Path(k) for k in old}
    missing = [k for k, p in paths.items() if not p.is_file()]
    if missing:
        raise SearchError(f"bench files are gone ({missing[0]} and {len(missing) - 1} more)")
    profile = load_profile(profile_name or data.get("profile_source") or data["profile"])
    target = open_target(
        profile.measure_spec(),
        agent=profile.agent,
        runtime=profile.runtime,  # a runtime of its own (openvino): an agent started from it
        token_env=profile.agent_token_env,
    )
    reference = next(k for k, v in old.items() if v["relative"] == 1.0 and v["ci_low"] == 1.0)
    feed = out_dir / LATENCY_INPUT
    try:
        new, info = confirm_candidates(
            paths,
            reference=reference,
            target=target,
            latency_input=np.load(feed, allow_pickle=False) if feed.is_file() else None,
            quiet_wait_s=quiet_wait_s,
        )
    finally:
        close_target(target)
    rows = _compared(old, new, reference)
    by_processes = [r["inside_processes"] for r in rows.values() if "inside_processes" in r]
    result = {
        "at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "bench_created": data["created"],
        "hours_after": _hours(data),
        "confirmation": info,
        "inside": sum(r["inside"] for r in rows.values()),
        "of": len(rows),
        # Inside the interval over the processes alone, before the widening between sessions.
        "inside_processes": sum(by_processes) if by_processes else None,
        "of_processes": len(by_processes),
        "candidates": rows,
        "best": _best(data, rows),
    }
    history = _history(out_dir)
    history.append(result)
    (out_dir / "reconfirm.json").write_text(json.dumps(history, indent=2, default=str))
    (out_dir / "reconfirm.md").write_text(markdown(history))
    return result


def _compared(
    old: dict[str, Any], new: dict[str, Any], reference: str
) -> dict[str, dict[str, Any]]:
    """Each candidate's ratio before (with its interval) and now, and whether now is inside
    (``inside_processes``: inside the interval over the processes alone, where it was widened
    by the variation between sessions)."""
    rows = {}
    for k in old:
        if k == reference:
            continue
        now = new[k].relative
        rows[k] = {
            "before": old[k]["relative"],
            "interval": [old[k]["ci_low"], old[k]["ci_high"]],
            "now": now,
            "inside": bool(old[k]["ci_low"] <= now <= old[k]["ci_high"]),
        }
        if old[k].get("process_ci"):
            low, high = old[k]["process_ci"]
            rows[k]["inside_processes"] = bool(low <= now <= high)
    return rows


def _load(out_dir: Path) -> dict[str, Any]:
    path = Path(out_dir) / "bench.json"
    if not path.is_file():
        raise SearchError(f"no bench.json in {out_dir}: pass the folder a benchmark wrote")
    data = json.loads(path.read_text())
    if (data.get("confirmation") or {}).get("unconfirmed") or "interleaved" not in data:
        raise SearchError(f"the benchmark in {out_dir} has not been confirmed yet (unfinished)")
    return dict(data)


def _hours(data: dict[str, Any]) -> float | None:
    try:
        then = time.mktime(time.strptime(data["created"], "%Y-%m-%d %H:%M:%S"))
    except (KeyError, ValueError):
        return None
    return round((time.time() - then) / 3600, 2)


def _best(data: dict[str, Any], rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run's best point within the drop: its speedup and interval then, and now."""
    out = []
    for run in data["runs"]:
        p = run.get("best_speedup_point")
        key = (p or {}).get("onnx")
        if not p or key not in rows:
            continue
        r = rows[key]
        out.append(
            {
                "method": run["method"],
                "seed": run["seed"],
                "speedup": 1 / r["before"],
                "interval": [1 / r["interval"][1], 1 / r["interval"][0]],
                "now": 1 / r["now"],
                "inside": r["inside"],
            }
        )
    return out


def _history(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / "reconfirm.json"
    return list(json.loads(path.read_text())) if path.is_file() else []


def markdown(history: list[dict[str, Any]]) -> str:
    """Every re-confirmation of a benchmark, newest last."""
    lines = ["# Re-confirmations of the benchmark", ""]
    for r in history:
        c = r["confirmation"]
        state = "CONTENDED" if c.get("contended") else "quiet"
        lines += [
            f"## {r['at']} ({r['hours_after']} h after the benchmark of {r['bench_created']})",
            "",
            f"{r['inside']} of {r['of']} candidates landed inside the interval the benchmark "
            f"gave them{_processes_only(r)}; {c.get('processes')} fresh processes, machine "
            f"{state}.",
            "",
            "| method | seed | best speedup then [interval] | now | inside |",
            "|---|---:|---:|---:|---|",
        ]
        lines += [
            f"| {b['method']} | {b['seed'] if b['seed'] is not None else '–'} | "
            f"{b['speedup']:.2f}x [{b['interval'][0]:.2f}, {b['interval'][1]:.2f}] | "
            f"{b['now']:.2f}x | {'yes' if b['inside'] else 'NO'} |"
            for b in r["best"]
        ]
        lines.append("")
    return "\n".join(lines)


def _processes_only(r: dict[str, Any]) -> str:
    n = r.get("inside_processes")
    if n is None:
        return ""
    return (
        f" ({n} of {r.get('of_processes', r['of'])} inside the interval over the processes alone)"
    )
