"""Workers as users start them: real processes of ``python -m search run`` on one study.

- Three workers on PostgreSQL (one ``run --workers 2`` and one plain ``run``, each with its own
  results folder, sharing an artifact store), ``--trials 6``, with the shortest ``--heartbeat``
  and ``--grace`` allowed, beside a co-runner that keeps the cores busy: exactly 6 counted
  trials; the teacher is trained, and the baseline and sensitivity pass measured, once; a worker
  killed with SIGKILL mid-trial has its trial failed by another after the grace period and
  retried with the same parameters; a worker frozen (SIGSTOP) mid-trial past the grace period
  is judged dead, then goes on and tells its result late without a traceback
  (``shared/cases/pg-live-worker-crash-after-stale``); every result a worker printed is in the
  study; ``export`` from another results folder writes the chosen trial.
- Two workers started at the same instant on a new SQLite study both join
  (``shared/cases/sqlite-two-workers-start``).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
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
from search.distributed.worker import MIN_GRACE_S, MIN_HEARTBEAT_S
from tests.conftest import DATA, REPO, cores_loaded

pytestmark = pytest.mark.slow

TINY = ["--space", str(DATA / "tiny_space.yaml"), "--hw", str(DATA / "tiny_cpu.yaml")]
HEARTBEAT, GRACE = MIN_HEARTBEAT_S, MIN_GRACE_S  # the shortest allowed: the hardest case


def _run(*args: str) -> list[str]:
    return [sys.executable, "-m", "search", "run", *TINY, "--no-progress", *args]


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mid_trial(study: optuna.Study, pids: set[int], busy_others: int) -> tuple[int, int]:
    """(pid, trial number) of a worker among ``pids`` a moment into a trial, once
    ``busy_others`` other workers have run trials (so they are past their start, where a dead
    process on this host is noticed at once: only the heartbeat can tell them now)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        trials = study.get_trials(deepcopy=False)
        seen = {t.user_attrs.get("pid") for t in trials} - {None}
        for t in trials:
            pid = t.user_attrs.get("pid")
            if t.state != TrialState.RUNNING or pid not in pids or "config" not in t.user_attrs:
                continue  # sampled, not yet measured: a trial reusing a student ends in a second
            if len(seen - {pid}) >= busy_others:
                return pid, t.number
        time.sleep(0.1)
    pytest.fail("no worker ran a trial")


def _printed_results(logs: str) -> set[int]:
    """The trials whose result a worker printed ("trial N: accuracy ...")."""
    return {int(n) for n in re.findall(r"trial (\d+): accuracy ", logs)}


def test_three_workers_on_postgresql_share_one_study(pg_url, tmp_path):
    store = tmp_path / "shared-store"  # a shared mount, in real life
    common = ["--task", "tests.tiny_task:make_task", "--study", "s", "--storage", pg_url,
              "--artifacts", str(store), "--trials", "6", "--threads", "1",
              "--heartbeat", str(HEARTBEAT), "--grace", str(GRACE)]  # fmt: skip
    with cores_loaded(processes=1):  # a co-runner keeps a core busy all along
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
        _, killed = _mid_trial(study, {victim.pid}, busy_others=2)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        killed_at = datetime.datetime.now()
        # Freeze one of the pair's workers mid-trial until another judges it dead, then let it
        # go on: a live worker whose heartbeats stopped for longer than --grace.
        frozen, late = _mid_trial(study, _children(pair.pid), busy_others=1)
        os.kill(frozen, signal.SIGSTOP)
        try:
            while study.get_trials(deepcopy=False)[late].state == TrialState.RUNNING:
                time.sleep(0.5)
        finally:
            os.kill(frozen, signal.SIGCONT)
        assert pair.wait(timeout=900) == 0, (tmp_path / "w2.log").read_text()
    logs = (tmp_path / "w1.log").read_text() + (tmp_path / "w2.log").read_text()
    assert "Traceback" not in (tmp_path / "w2.log").read_text()

    trials = study.get_trials(deepcopy=False)
    assert sum(is_counted(t) for t in trials) == 6
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    dead = trials[killed]
    assert dead.state == TrialState.FAIL and not dead.user_attrs.get("fail_reason")
    assert dead.datetime_complete - killed_at < datetime.timedelta(seconds=GRACE + 15)
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert retry.params == dead.params and is_counted(retry)
    assert retry.user_attrs["pid"] != victim.pid and retry.user_attrs["retry_of"] == killed
    # The frozen worker's trial was judged dead; its result, told late, is in the study.
    assert trials[late].state == TrialState.FAIL and not is_counted(trials[late])
    (told,) = [t for t in trials if t.user_attrs.get("late_result_of") == late]
    assert told.state == TrialState.COMPLETE and told.params == trials[late].params
    assert told.user_attrs["pid"] == frozen and "record" in told.user_attrs
    assert f"trial {late}: finished after another worker judged it dead" in logs
    for n in _printed_results(logs):  # no result a worker finished is lost
        assert trials[n].state == TrialState.COMPLETE and "record" in trials[n].user_attrs

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


def _children(pid: int) -> set[int]:
    """The pids of ``pid``'s child processes (the workers ``run --workers`` started)."""
    found = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        if re.search(rf"^PPid:\s+{pid}$", text, re.MULTILINE):
            found.add(int(status.parent.name))
    return found


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
