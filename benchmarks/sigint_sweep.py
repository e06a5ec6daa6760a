"""Ctrl-C at random moments of a run's first seconds, under CPU load: does every run end cleanly?

Starts ``python -m search run`` on the tiny test task N times next to busy loops on every core,
sends SIGINT after a random delay in [0, --window] s, and checks each run ended cleanly: exit 130
(or 0 when the study had finished), the last stderr line the resume hint (or a plain
"interrupted" before start-up ended), no traceback, and the study consistent afterwards (it opens,
SQLite's integrity check passes, no trial left RUNNING). Every other run starts with SIGINT
ignored, as a background job of a shell script does: the case where Ctrl-C used to be lost.

    .venv/bin/python benchmarks/sigint_sweep.py            # 20 interrupts, about 4 minutes
    .venv/bin/python benchmarks/sigint_sweep.py --runs 5 --window 3

Run from the repository root; writes results/sigint-sweep/ (the study) and prints one line per
run and a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TASK = ["--task", "tests.tiny_task:make_random_task"]
DATA = ["--space", "tests/data/tiny_space.yaml", "--hw", "tests/data/tiny_cpu.yaml"]
HINT = "interrupted; rerun the same command to resume the study"


def _busy(seconds: float) -> subprocess.Popen:
    code = f"import time\nt = time.time()\nwhile time.time() - t < {seconds}: pass"
    return subprocess.Popen([sys.executable, "-c", code])


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def study_state(db: Path) -> dict[str, object]:
    """Integrity and trial states of the study's SQLite file (read-only)."""
    if not db.is_file():
        return {"exists": False, "ok": True}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        ok = con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        states = dict(con.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())
    finally:
        con.close()
    return {"exists": True, "ok": ok and not states.get("RUNNING"), "states": states}


def one_run(i: int, delay: float, *, results: Path, ignored: bool, trials: int) -> dict:
    args = [sys.executable, "-m", "search", "run", *TASK, *DATA, "--trials", str(trials)]
    args += ["--study", "sweep", "--results-dir", str(results), "--no-progress"]
    loads = [_busy(delay + 30) for _ in range(os.cpu_count() or 2)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    p = subprocess.Popen(
        args,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_sigint if ignored else None,  # noqa: PLW1509 - what a script does
    )
    try:
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        sent = time.time()
        try:
            _, err = p.communicate(timeout=60)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
            rc = "IGNORED"
    finally:
        for load in loads:
            load.kill()
            load.wait()
    lines = err.strip().splitlines()
    last = lines[-1] if lines else ""
    state = study_state(results / "sweep" / "study.db")
    results.mkdir(parents=True, exist_ok=True)
    # A Ctrl-C before the package's first statement (interpreter start-up, a few tens of ms)
    # is answered by CPython itself; counted apart, never as clean.
    before_our_code = "KeyboardInterrupt" in err and str(REPO / "search") not in err
    clean = (
        (rc == 130 and last == HINT and lines.count(HINT) == 1 or rc == 0)
        and "Traceback" not in err
        and bool(state["ok"])
    )
    if not clean:  # keep the evidence
        (results / f"unclean-{i}.log").write_text(err)
    return {
        "run": i,
        "delay_s": delay,
        "sigint_ignored_at_start": ignored,
        "rc": rc,
        "ended_after_s": round(time.time() - sent, 1),
        "last_line": last,
        "traceback": "Traceback" in err,
        "study": state,
        "before_our_code": before_our_code,
        "clean": clean,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--window", type=float, default=10.0, help="latest SIGINT, seconds")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--trials", type=int, default=200, help="--trials of each run")
    parser.add_argument("--results-dir", type=Path, default=REPO / "results" / "sigint-sweep")
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    results = []
    for i in range(args.runs):
        delay = round(rnd.uniform(0.0, args.window), 2)
        r = one_run(i, delay, results=args.results_dir, ignored=i % 2 == 1, trials=args.trials)
        results.append(r)
        print(json.dumps(r), flush=True)
    clean = sum(r["clean"] for r in results)
    print(f"clean: {clean}/{len(results)} (exit 130 with one resume line, no traceback, study ok)")
    return 0 if clean == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
