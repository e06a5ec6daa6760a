"""The default thread count follows the cores this process can really use: its affinity, its
cgroup quota, and what other processes keep busy."""

from __future__ import annotations

import multiprocessing as mp
import time

from search.core import threads
from search.core.threads import _quota_in, choose_threads, cores, others_busy


def test_an_explicit_count_or_omp_num_threads_wins(monkeypatch):
    assert choose_threads(3) == threads.ThreadChoice(3, "--threads 3")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads().threads == 2 and "OMP_NUM_THREADS" in choose_threads().why


def test_cgroup_quotas_are_read_in_cores(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _quota_in(tmp_path, v2=True) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _quota_in(tmp_path, v2=True) == 1.5
    (tmp_path / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu.cfs_period_us").write_text("100000\n")
    assert _quota_in(tmp_path, v2=False) is None
    (tmp_path / "cpu.cfs_quota_us").write_text("50000\n")
    assert _quota_in(tmp_path, v2=False) == 0.5


def test_a_quota_caps_the_usable_cores(monkeypatch):
    monkeypatch.setattr(threads, "cgroup_quota", lambda: 1.0)
    monkeypatch.setattr(threads, "others_busy", lambda window_s=0.5: 0.0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.usable_cores() == min(cores(), 1.0)
    assert choose_threads().threads == 1


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_cores_other_processes_keep_busy_are_not_counted(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    spinners = [mp.Process(target=_spin, args=(4.0,)) for _ in range(cores())]
    for p in spinners:
        p.start()
    try:
        time.sleep(0.3)
        busy = others_busy(0.5)
        choice = choose_threads()
    finally:
        for p in spinners:
            p.join()
    assert busy is not None and busy >= 0.6 * cores()
    assert choice.threads == 1 and "other processes kept" in choice.why
