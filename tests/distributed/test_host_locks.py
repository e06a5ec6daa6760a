"""Threads per worker, other workers on this machine, and the host's timing lock."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest
import torch

from search.core import threads
from search.core.threads import resolve_threads
from search.distributed import host_locks
from search.distributed.host_locks import CpuLock, Paced, WorkerRegistry

FORK = mp.get_context("fork")


@pytest.fixture(autouse=True)
def own_lock_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SEARCH_LOCK_DIR", str(tmp_path / "locks"))


def test_threads_come_from_the_flag_then_omp_num_threads_then_the_free_cpus(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads(1) == 1
    assert resolve_threads(None) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads, "others_busy", lambda window_s=0.5: 0.0)  # a quiet machine
    assert resolve_threads(None) == threads.cores() >= 1


def test_apply_threads_limits_torch(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", str(before))  # restored after the test
    try:
        threads.apply_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def _registered(ready, stop, n_threads, study="s"):
    with WorkerRegistry(threads=n_threads, study=study):
        ready.set()
        stop.wait(60)


def test_a_worker_is_told_when_another_of_its_study_shares_its_cores():
    ready, stop = FORK.Event(), FORK.Event()
    other = FORK.Process(target=_registered, args=(ready, stop, 64))
    other.start()
    assert ready.wait(30)
    with WorkerRegistry(threads=1, study="s") as me:
        (found,) = me.others()
        assert found["pid"] == other.pid and found["threads"] == 64
        note = me.sharing_note()
        assert note.startswith("1 other worker(s) of this study on this machine: 65 torch")
        assert "oversubscribed" in note
        stop.set()
        other.join()
        assert me.others() == [] and me.sharing_note() is None
    assert list(host_locks.lock_dir().glob("worker-*.lock")) == []


def test_workers_of_other_studies_are_not_in_the_note():
    ready, stop = FORK.Event(), FORK.Event()
    other = FORK.Process(target=_registered, args=(ready, stop, 64, "another-study"))
    other.start()
    assert ready.wait(30)
    try:
        with WorkerRegistry(threads=1, study="s") as me:
            assert len(me.others()) == 1 and me.sharing_note() is None
    finally:
        stop.set()
        other.join()


def test_a_worker_killed_without_cleaning_up_is_not_counted():
    ready, stop = FORK.Event(), FORK.Event()
    other = FORK.Process(target=_registered, args=(ready, stop, 1))
    other.start()
    assert ready.wait(30)
    other.kill()  # its lock file stays, its lock goes with the process
    other.join()
    assert len(list(host_locks.lock_dir().glob("worker-*.lock"))) == 1
    with WorkerRegistry(threads=1, study="s") as me:
        assert me.others() == []
    assert list(host_locks.lock_dir().glob("worker-*.lock")) == []


def _trainer(q, started, stop):
    lock, spans = CpuLock(), []
    started.set()
    while not stop.is_set():
        lock.pace()
        t0 = time.monotonic()
        time.sleep(0.005)  # a training batch
        spans.append((t0, time.monotonic()))
    lock.release()
    q.put(spans)


def test_no_worker_trains_while_another_times_a_model():
    q, started, stop = FORK.Queue(), FORK.Event(), FORK.Event()
    trainers = [FORK.Process(target=_trainer, args=(q, started, stop)) for _ in range(2)]
    for p in trainers:
        p.start()
    assert started.wait(30)
    time.sleep(0.2)
    lock, windows = CpuLock(), []
    for _ in range(5):
        with lock.timing():
            s0 = time.monotonic()
            time.sleep(0.05)
            windows.append((s0, time.monotonic()))
        time.sleep(0.05)
    stop.set()
    spans = [s for _ in trainers for s in q.get(timeout=30)]
    for p in trainers:
        p.join()
    assert len(spans) > 20  # training went on between the timings
    overlaps = [(a, b) for a, b in spans for s0, s1 in windows if a < s1 and b > s0]
    assert overlaps == []


def test_paced_data_reads_like_the_dataset_and_yields_every_few_items():
    data = torch.utils.data.TensorDataset(torch.arange(40.0), torch.arange(40))
    paced = Paced(data, CpuLock(), every=16)
    assert len(paced) == 40 and paced.tensors is data.tensors
    assert [paced[i][1].item() for i in range(40)] == list(range(40))
    assert paced.lock._held is not None  # held while training; timing() releases it first
    paced.lock.release()


def test_a_refused_run_says_one_line_even_beside_workers_of_its_study(tmp_path, capfd):
    """``shared/cases/workers-bad-task-error-twice``: the notes (training on the CPU, other
    workers of this study here) wait until the task has passed its checks, so a task that
    fails to load is one line, also while another worker of the same study runs here."""
    from search.cli.main import Run, build_parser, main
    from tests.conftest import DATA

    task = tmp_path / "t_raises.py"
    task.write_text("def make_task(*, seed, cache_dir):\n    raise ValueError('no data')\n")
    argv = ["run", "--task", f"{task}:make_task", "--hw", str(DATA / "tiny_cpu.yaml"),
            "--space", str(DATA / "tiny_space.yaml"), "--study", "s",
            "--results-dir", str(tmp_path / "res")]  # fmt: skip
    spec, _ = Run.spec(build_parser().parse_args(argv))
    ready, stop = FORK.Event(), FORK.Event()
    other = FORK.Process(target=_registered, args=(ready, stop, 1, spec.study_key))
    other.start()
    assert ready.wait(30)
    try:
        assert main(argv) == 2
    finally:
        stop.set()
        other.join()
    out, err = capfd.readouterr()
    assert not out.strip() and len(err.strip().splitlines()) == 1, out + err
    assert "no data" in err and not (tmp_path / "res").exists()
