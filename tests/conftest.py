from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent

torch.set_num_threads(2)


@pytest.fixture
def tiny_space() -> Path:
    return DATA / "tiny_space.yaml"


@pytest.fixture
def tiny_profile() -> Path:
    return DATA / "tiny_cpu.yaml"


@pytest.fixture(scope="session")
def teacher_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One results dir per test session, so the tiny teacher is trained once."""
    return tmp_path_factory.mktemp("results")


# Measurements as short as a test can afford: the numbers are checked for shape, not speed.
QUICK = {"min_runs": 5, "min_seconds": 0.0, "warmup_runs": 1, "warmup_seconds": 0.0}


def quick_profile(name: str = "cpu", **update: object):
    """A built-in (or YAML path) profile with quick measurements and ``update`` applied."""
    import dataclasses

    from search.config import load_profile

    profile = load_profile(name)
    measure = dataclasses.replace(profile.measure, **QUICK)
    return profile.model_copy(update={"measure": measure, **update})


def local_measure(profile, eval_inputs, latency_input=None):
    """``measure(path)`` on this machine as ``profile`` says, like a study's context uses;
    ``eval_inputs`` are the context's (validation, then test where the task has one)."""
    from search.measure.target import LocalTarget

    target = LocalTarget(profile.measure_spec())
    latency = eval_inputs[:1] if latency_input is None else latency_input
    return lambda path: target.measure(path, eval_inputs=eval_inputs, latency_input=latency)


@contextmanager
def cores_loaded(processes: int = 4):
    """``processes`` busy-looping Python processes, started here and killed on exit."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)
    ]
    try:
        time.sleep(0.5)  # let the scheduler spread them over the cores
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
