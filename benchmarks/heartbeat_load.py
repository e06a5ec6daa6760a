"""How late do a live worker's heartbeats come on a busy machine? (the lower bounds of
``--heartbeat`` and ``--grace``, docs/distributed.md).

Starts ``--workers`` processes on one study; each asks a trial, starts its
:class:`~search.distributed.budget.Heartbeat` and keeps its main thread busy in pure Python
(the GIL held as much as Python code can hold it; torch and ONNX Runtime release it) while
writing a user attribute now and then, as a trial does. ``--load`` busy-looping co-runner
processes share the cores. A monitor reads, from the database server's clock, how old each
running trial's heartbeat is (what the stale check compares with ``--grace``), every 0.2 s.

    .venv/bin/python benchmarks/heartbeat_load.py --load 8 --seconds 60 --heartbeat 2
    .venv/bin/python benchmarks/heartbeat_load.py --storage postgresql://... --mode old

``--mode old`` runs the stale check in the heartbeat thread, as before the split. Without
``--storage`` a throwaway PostgreSQL is started (tests/pg.py, Debian's binaries), else SQLite.
Prints one JSON line: the largest heartbeat age seen and the largest gap between beats.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402

from search.distributed import budget  # noqa: E402
from search.distributed.storage import open_storage  # noqa: E402

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


class OldHeartbeat(budget.Heartbeat):
    """Beat and stale check in one thread, one after the other (before the split)."""

    def start(self) -> budget.Heartbeat:
        import threading

        if self._interval:
            self._storage.record_heartbeat(self._trial_id)

            def run() -> None:
                while not self._stop.wait(self._interval):
                    try:
                        self._storage.record_heartbeat(self._trial_id)
                        budget.fail_stale(self._study)
                    except Exception:  # noqa: BLE001, S110
                        pass

            t = threading.Thread(target=run, daemon=True)
            t.start()
            self._threads.append(t)
        return self


def _worker(url: str, heartbeat: int, seconds: float, mode: str, out: mp.Queue) -> None:
    storage = open_storage(url, heartbeat_s=heartbeat, grace_s=10_000)  # nothing fails here
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="hb", storage=storage)
    beats: list[float] = []
    record = storage.record_heartbeat

    def recorded(trial_id: int) -> None:
        record(trial_id)
        beats.append(time.monotonic())

    storage.record_heartbeat = recorded  # type: ignore[method-assign]
    trial = budget._ask(study)  # noqa: SLF001
    budget.own(trial)  # as next_trial does: a trial without a pid is failed after the grace
    beat = (OldHeartbeat if mode == "old" else budget.Heartbeat)(study, trial).start()
    end = time.monotonic() + seconds
    n, x = 0, 0
    while time.monotonic() < end:
        for i in range(200_000):  # pure Python: holds the GIL between bytecode switches
            x = (x * 31 + i) % 1_000_003
        n += 1
        if n % 5 == 0:
            trial.set_user_attr("step", n)
    beat.stop()
    frozen = storage.get_trial(trial._trial_id)  # noqa: SLF001
    if frozen.state != optuna.trial.TrialState.RUNNING:  # failed as stale by another worker
        print(f"trial {trial.number} is {frozen.state.name} since {frozen.datetime_complete}",
              file=sys.stderr)  # fmt: skip
    else:
        study.tell(trial, [0.0, 0.0])
    gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
    out.put(max(gaps) if gaps else float("nan"))


def _ages(engine: Engine) -> list[float]:
    import sqlalchemy as sa

    now = "now()" if engine.dialect.name == "postgresql" else "CURRENT_TIMESTAMP"
    query = sa.text(
        f"SELECT h.heartbeat, {now} FROM trial_heartbeats h JOIN trials t "
        "ON t.trial_id = h.trial_id WHERE t.state = 'RUNNING'"
    )
    with engine.connect() as c:
        rows = c.execute(query).fetchall()
    out = []
    for beat, current in rows:
        current = current if not isinstance(current, str) else None
        if current is not None:
            out.append((current.replace(tzinfo=None) - beat).total_seconds())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--storage", default=None)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--load", type=int, default=8, help="busy co-runner processes")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--heartbeat", type=int, default=2)
    parser.add_argument("--trials", type=int, default=30, help="finished trials in the study")
    parser.add_argument("--mode", choices=("new", "old"), default="new")
    args = parser.parse_args()
    server = None
    url = args.storage
    if url is None:
        from tests import pg

        bin_dir = pg.find_bin_dir()
        if bin_dir is not None:
            server = pg.start(bin_dir)
            url = server.url
        else:
            url = f"sqlite:///{tempfile.mkdtemp()}/hb.db"
    study = optuna.create_study(
        study_name="hb", storage=open_storage(url), directions=["maximize", "minimize"]
    )
    blob = {"record": {f"k{i}": i * 0.5 for i in range(200)}, "config": "x" * 2000}
    for _ in range(args.trials):  # what the stale check reads: a study with finished trials
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE, values=[0.5, 1.0], user_attrs=blob
            )  # fmt: skip
        )
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(url, args.heartbeat, args.seconds, args.mode, out))
        for _ in range(args.workers)
    ]
    worst = 0.0
    engine = open_storage(url).engine
    try:
        for p in procs:
            p.start()
        end = time.monotonic() + args.seconds + 600
        while any(p.is_alive() for p in procs) and time.monotonic() < end:
            try:
                worst = max([worst, *_ages(engine)])
            except Exception:  # noqa: BLE001, S110 - the tables may not exist yet
                pass
            time.sleep(0.2)
        gaps = [out.get(timeout=5) for p in procs if p.exitcode == 0]
    finally:
        for p in load:
            p.kill()
        for p in procs:
            p.join(timeout=10)
        if server is not None:
            server.stop()
    print(json.dumps({
        "mode": args.mode, "heartbeat_s": args.heartbeat, "load": args.load,
        "workers": args.workers, "failed": [p.exitcode for p in procs if p.exitcode],
        "max_heartbeat_age_s": round(worst, 2),
        "max_gap_between_beats_s": round(max(gaps), 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
