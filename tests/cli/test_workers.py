"""Workers as users start them: real processes of ``python -m search run`` on one study.

- Three workers on PostgreSQL (one ``run --workers 2`` and one plain ``run``, each with its own
  results folder, sharing an artifact store), ``--trials 6``: exactly 6 counted trials; the
  teacher is trained, and the baseline and sensitivity pass measured, once; a worker killed with
  SIGKILL mid-trial has its trial failed by another within the grace period and retried with the
  same parameters; ``export`` from another results folder writes the chosen trial.
- Two workers started at the same instant on a new SQLite study both join
  (``shared/cases/sqlite-two-workers-start``).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.distributed.budget import is_counted
from search.distributed.claims import is_claim_study
from tests.conftest import DATA, REPO

pytestmark = pytest.mark.slow

TINY = ["--space", str(DATA / "tiny_space.yaml"), "--hw", str(DATA / "tiny_cpu.yaml")]
GRACE = 4


def _run(*args: str) -> list[str]:
    return [sys.executable, "-m", "search", "run", *TINY, "--no-progress", *args]


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _kill_mid_trial(study: optuna.Study, proc: subprocess.Popen) -> tuple[int, datetime.datetime]:
    """SIGKILL ``proc`` a moment into a trial it runs once two other workers run trials (so
    they are past their start, where a dead process on this host is noticed at once: only the
    heartbeat can tell them now); its number and the time."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        trials = study.get_trials(deepcopy=False)
        others = {t.user_attrs.get("pid") for t in trials} - {proc.pid, None}
        mine = [
            t
            for t in trials
            if t.state == TrialState.RUNNING and t.user_attrs.get("pid") == proc.pid
        ]
        if len(others) >= 2 and mine and "config" in mine[0].user_attrs:
            # Sampled, not yet measured: a trial reusing a student can finish within a second.
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return mine[0].number, datetime.datetime.now()
        time.sleep(0.1)
    pytest.fail("the worker to kill never ran a trial")


def test_three_workers_on_postgresql_share_one_study(pg_url, tmp_path):
    store = tmp_path / "shared-store"  # a shared mount, in real life
    common = ["--task", "tests.tiny_task:make_task", "--study", "s", "--storage", pg_url,
              "--artifacts", str(store), "--trials", "6", "--threads", "1",
              "--heartbeat", "1", "--grace", str(GRACE)]  # fmt: skip
    victim = _start(_run(*common, "--results-dir", str(tmp_path / "w1")), tmp_path / "w1.log")
    time.sleep(1.0)  # the victim claims the setup and asks for the first trial
    pair = _start(
        _run(*common, "--results-dir", str(tmp_path / "w2"), "--workers", "2"),
        tmp_path / "w2.log",
    )
    study = None
    while study is None:
        try:
            study = optuna.load_study(study_name="s", storage=pg_url)
        except Exception:  # noqa: BLE001 - not created yet
            time.sleep(0.2)
    killed, killed_at = _kill_mid_trial(study, victim)
    assert pair.wait(timeout=600) == 0, (tmp_path / "w2.log").read_text()
    logs = (tmp_path / "w1.log").read_text() + (tmp_path / "w2.log").read_text()

    trials = study.get_trials(deepcopy=False)
    assert sum(is_counted(t) for t in trials) == 6
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    dead = trials[killed]
    assert dead.state == TrialState.FAIL and not dead.user_attrs.get("fail_reason")
    assert dead.datetime_complete - killed_at < datetime.timedelta(seconds=GRACE + 3)
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert retry.params == dead.params and is_counted(retry)
    assert retry.user_attrs["pid"] != victim.pid and retry.user_attrs["retry_of"] == killed

    assert "searchpw" not in logs and "search:***@127.0.0.1" in logs  # the spawner's line
    # One setup: teacher trained once (the others downloaded it), one baseline, one pass.
    assert logs.count("trained in") == 1, logs
    assert logs.count("baseline: accuracy") == 1, logs
    assert logs.count("sensitivity (accuracy drop") == 1, logs
    setup = [n for n in optuna.get_all_study_names(pg_url) if is_claim_study(n)]
    assert setup == ["s:claim:setup:0"]
    attrs = study.user_attrs
    teachers = [tmp_path / w / "teachers" / "tiny-resnet-seed0.pt" for w in ("w1", "w2")]
    assert _sha(teachers[0]) == _sha(teachers[1])
    assert attrs["teacher"]["threads"] == 1 and len(attrs["data_sha256"]) == 64
    seed = attrs["quantize_seed"]
    seeded = [t for t in trials if t.system_attrs.get("fixed_params") == seed and is_counted(t)]
    assert len(seeded) == 1
    # Workers that start together draw different parameters (the sampler is seeded per trial).
    drawn = [tuple(sorted(t.params.items())) for t in trials if is_counted(t)]
    assert len(set(drawn)) == len(drawn)

    # Another machine: neither worker's disk, only the storage and the shared store.
    for w in ("w1", "w2"):
        shutil.rmtree(tmp_path / w)
    out = tmp_path / "exported"
    cmd = [sys.executable, "-m", "search", "export", "--study", "s", "--storage", pg_url,
           "--results-dir", str(tmp_path / "elsewhere"), "--pick", "knee",
           "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    chosen = int(done.stdout.split("trial ", 1)[1].split()[0])
    files = trials[chosen].user_attrs["files"]
    measured = Path(trials[chosen].user_attrs["record"]["measured_onnx"]).name
    assert _sha(out / measured) == files[measured]["sha256"]
    assert not [p for p in out.iterdir() if b"searchpw" in p.read_bytes()]


def test_two_workers_started_together_on_a_new_sqlite_study_both_join(tmp_path):
    """The untrained tiny task loads at once, so both open the new file at the same moment."""
    args = ["--task", "tests.tiny_task:make_random_task", "--study", "dual", "--trials", "2",
            "--threads", "1", "--results-dir", str(tmp_path)]  # fmt: skip
    procs = [_start(_run(*args), tmp_path / f"{w}.log") for w in "ab"]
    codes = [p.wait(timeout=600) for p in procs]
    logs = [(tmp_path / f"{w}.log").read_text() for w in "ab"]
    assert codes == [0, 0], logs
    assert all("results: " in log and "error" not in log for log in logs), logs
    study = optuna.load_study(study_name="dual", storage=f"sqlite:///{tmp_path}/dual/study.db")
    assert sum(is_counted(t) for t in study.trials) == 2
    assert "".join(logs).count("baseline: accuracy") == 1
