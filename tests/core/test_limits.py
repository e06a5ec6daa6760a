"""Work in a forked child under a memory and a time limit never takes the caller down."""

from __future__ import annotations

import time

from search.core.limits import run_limited


def test_the_value_comes_back_as_json():
    result = run_limited(lambda: {"a": [1, 2]}, memory_bytes=1 << 30, timeout_s=30)
    assert result.ok and result.value == {"a": [1, 2]}


def test_running_out_of_memory_is_an_error_not_a_crash():
    result = run_limited(lambda: len(bytearray(3 << 30)), memory_bytes=1 << 30, timeout_s=30)
    assert not result.ok and result.error == "out of memory (limit 1.0 GB)"


def test_a_child_past_its_time_is_killed():
    start = time.perf_counter()
    result = run_limited(lambda: time.sleep(30), memory_bytes=1 << 30, timeout_s=1)
    assert not result.ok and result.error == "timeout after 1 s"
    assert time.perf_counter() - start < 10


def test_an_exception_is_one_line_with_file_and_line():
    def fails():
        raise ValueError("no\nmore")

    result = run_limited(fails, memory_bytes=1 << 30, timeout_s=30)
    assert not result.ok and result.error.startswith("ValueError: no at test_limits.py:")


def test_torch_runs_in_the_child_after_the_parent_used_its_threads():
    import torch

    torch.randn(256, 256) @ torch.randn(256, 256)  # the parent's OpenMP pool exists now
    result = run_limited(
        lambda: float((torch.ones(64, 64) @ torch.ones(64, 64)).sum()),
        memory_bytes=1 << 30,
        timeout_s=60,
    )
    assert result.ok and result.value == 64.0**3


def test_an_isolated_child_and_what_it_started_die_at_the_timeout(tmp_path):
    import subprocess

    pid_file = tmp_path / "grandchild"

    def starts_a_sleeper():
        proc = subprocess.Popen(["sleep", "60"])
        pid_file.write_text(str(proc.pid))
        proc.wait()

    result = run_limited(starts_a_sleeper, memory_bytes=1 << 30, timeout_s=1, isolate=True)
    assert not result.ok and result.limit == "time"
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(pid)


def test_resident_memory_is_bounded_where_address_space_is_not():
    import os

    from search.core.limits import tree_resident_bytes

    def touches(n: int):
        def work():
            block = bytearray(n)  # zero pages become resident as they are written
            for i in range(0, n, 4096):
                block[i] = 1
            return n

        return work

    limit = tree_resident_bytes(os.getpid()) + (300 << 20)  # the child starts with ours
    small = run_limited(touches(50 << 20), memory_bytes=None, resident_bytes=limit, timeout_s=60)
    assert small.ok and small.value == 50 << 20
    big = run_limited(touches(1 << 30), memory_bytes=None, resident_bytes=limit, timeout_s=60)
    assert not big.ok and big.limit == "memory", big


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False
