"""A study run beside two co-runners that train (cache and memory traffic, not busy loops): the
trials they touched are flagged, the front is confirmed once they are gone, and a quiet
re-confirmation in new processes lands inside the intervals the study reported; or, where the
machine never went quiet, the confirmation says it was contended."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from search.config import load_profile, load_space

CORUNNER = Path(__file__).resolve().parents[1] / "corunner.py"


def _stop_when_a_trial_is_done(study_dir: Path, procs: list[subprocess.Popen]) -> threading.Thread:
    """Stop the co-runners once the first trial's files exist: that trial was measured beside
    them, the end-of-run confirmation comes after them."""

    def watch() -> None:
        deadline = time.time() + 900
        while time.time() < deadline and not list(study_dir.glob("artifacts/*/trial.json")):
            time.sleep(0.5)
        for p in procs:
            p.terminate()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_a_study_beside_training_corunners_reports_what_a_quiet_reconfirmation_finds(
    teacher_cache, tiny_space, tiny_profile
):
    from search.measure.target import LocalTarget
    from search.study import StudySpec, run_study
    from search.study.confirm import confirm_front

    profile = load_profile(str(tiny_profile))
    # The end-of-run confirmation waits for the co-runners to be gone (up to a minute); five
    # processes, not the default three, keep the interval's own chance misses rare in CI.
    measure = dataclasses.replace(
        profile.measure, quiet_wait_s=60.0, confirm_rounds=20, confirm_processes=5
    )
    spec = StudySpec(
        task="tests.tiny_task:make_task",
        space=load_space(str(tiny_space)),
        profile=profile.model_copy(update={"measure": measure}),
        study_name="corunners",
        results_dir=teacher_cache,
    )
    procs = [subprocess.Popen([sys.executable, str(CORUNNER), "900"]) for _ in range(2)]
    try:
        time.sleep(2)  # the co-runners are training before the study measures anything
        watcher = _stop_when_a_trial_is_done(spec.study_dir, procs)
        study = run_study(spec, trials=2, progress=False)
        watcher.join(timeout=5)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    first = next(t for t in study.trials if t.user_attrs.get("record"))
    # The load watch saw the co-runners: the first trial's latency is flagged.
    assert first.user_attrs["record"]["busy"] is True
    confirmed = study.user_attrs["confirmed"]
    assert confirmed["processes"] >= 3 and confirmed["quiet_wait"] is not None
    if confirmed["contended"]:
        # The machine never went quiet (other work besides the co-runners): the figures are
        # flagged as such, which is what the report then says.
        assert confirmed["load"]["busy"] is True
        pytest.skip("the machine stayed busy after the co-runners ended: confirmation flagged")
    # Second looks, later, in new processes: each trial lands inside its reported interval.
    # A 95 % interval misses now and then by design (stop 32's CI run met one), so a trial must
    # land inside in at least two of three looks: an interval that did not cover the variation
    # between processes (one process's, or one measured beside the co-runners) misses in most
    # of them. The looks follow each other within seconds: the variation between sessions
    # hours apart is the bench's re-confirmation's to check (bench --reconfirm).
    target = LocalTarget(spec.profile.measure_spec())
    looks = [confirm_front(study, target=target, study_dir=spec.study_dir) for _ in range(3)]
    assert looks[0]["previous"]["of"] == len(confirmed["trials"]) >= 1
    for n, row in confirmed["trials"].items():
        low, high = row["relative_ci"]
        now = [look["trials"][n]["latency_relative"] for look in looks]
        assert sum(low <= x <= high for x in now) >= 2, (n, [low, high], now)
