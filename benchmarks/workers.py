"""Wall time of one study run by 1 and by N local workers for the same trial count.

Each run is ``python -m search run --workers N --threads T`` on a fresh SQLite study in its own
results folder, with the teacher trained once beforehand and copied in (so every run measures
the search, not the first teacher training). Runs alternate (1, N, 1, N, ...) so that load from
other users hits both alike; the 1-minute load average is printed before and after each.

    python benchmarks/workers.py                         # tiny task, 8 trials, 1 vs 2 workers
    python benchmarks/workers.py --trials 12 --workers 3 --repeats 2
    python benchmarks/workers.py --task digits --space default --hw cpu --trials 6
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY = ["--task", "tests.tiny_task:make_task", "--space", "tests/data/tiny_space.yaml",
        "--hw", "tests/data/tiny_cpu.yaml"]  # fmt: skip


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(cmd: list[str], log: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, all processes) of ``cmd``."""
    start, cpu = time.perf_counter(), _cpu()
    with open(log, "w") as out:
        code = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        sys.exit(f"{' '.join(cmd)} exited {code}; see {log}")
    return time.perf_counter() - start, _cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="N, compared with 1")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each worker")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--task", default=None, help="default: the tests' tiny task")
    parser.add_argument("--space", default="tests/data/tiny_space.yaml")
    parser.add_argument("--hw", default="tests/data/tiny_cpu.yaml")
    args = parser.parse_args()
    task = ["--task", args.task, "--space", args.space, "--hw", args.hw] if args.task else TINY
    work = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    base = [sys.executable, "-m", "search", "run", *task, "--no-progress",
            "--threads", str(args.threads)]  # fmt: skip
    # The teacher, once: a one-trial study in a cache folder.
    _run([*base, "--trials", "1", "--study", "warm", "--results-dir", str(work / "cache")],
         work / "warm.log")  # fmt: skip
    print(f"{args.trials} trials, --threads {args.threads}, {os.cpu_count()} cores, logs: {work}")
    times: dict[int, list[float]] = {1: [], args.workers: []}
    for rep in range(args.repeats):
        for n in (1, args.workers):
            results = work / f"r{rep}-w{n}"
            shutil.copytree(work / "cache" / "teachers", results / "teachers")
            before = os.getloadavg()[0]
            cmd = [*base, "--trials", str(args.trials), "--workers", str(n), "--study", "s",
                   "--results-dir", str(results)]  # fmt: skip
            wall, cpu = _run(cmd, results.with_suffix(".log"))
            times[n].append(wall)
            print(f"{n} worker(s): {wall:6.1f} s wall, {cpu:6.1f} s CPU   (load average "
                  f"{before:.1f} -> {os.getloadavg()[0]:.1f})")  # fmt: skip
    one, many = min(times[1]), min(times[args.workers])
    print(f"best of {args.repeats}: 1 worker {one:.1f} s, {args.workers} workers {many:.1f} s "
          f"({one / many:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
