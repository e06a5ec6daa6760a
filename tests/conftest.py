from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent

torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def own_lock_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Host locks and the worker registry of this test session only (children inherit it):
    another test run, or a study of the developer's, on the same machine is not "another
    worker" of these tests (it would add a note to stderr and share the timing lock)."""
    old = os.environ.get("SEARCH_LOCK_DIR")
    os.environ["SEARCH_LOCK_DIR"] = str(tmp_path_factory.mktemp("locks"))
    yield
    if old is None:
        os.environ.pop("SEARCH_LOCK_DIR", None)
    else:
        os.environ["SEARCH_LOCK_DIR"] = old


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


def digits_default_space():
    """The default space as a study on the digits ResNet resolves it: ``prune.groups:
    quantize`` becomes the precision groups that own prunable layers (fc is the output layer),
    so it can be sampled outside a study."""
    from search.config import load_space

    space = load_space("default")
    groups = {g: p for g, p in space.quantize.groups.items() if g != "fc"}
    return space.model_copy(update={"prune": space.prune.resolved(groups)})


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


# ------------------------------------------------- a real PostgreSQL for the distributed tests


PG_URL_ENV = "SEARCH_TEST_PG_URL"


def _no_postgres(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the PostgreSQL tests: {why}", pytrace=False)
    pytest.skip(f"no PostgreSQL server: {why} (apt-get install postgresql, or set {PG_URL_ENV})")


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A PostgreSQL server: ``$SEARCH_TEST_PG_URL`` if set, else a throwaway one started from
    Debian's binaries; skipped without one, except under CI (``$CI`` set), where it fails."""
    if url := os.environ.get(PG_URL_ENV):
        yield url
        return
    try:
        import psycopg  # noqa: F401 - the driver SQLAlchemy 2.1 picks for postgresql://
    except ImportError:
        _no_postgres("psycopg is not installed (pip install -e '.[postgres]')")
    from tests import pg

    bin_dir = pg.find_bin_dir()
    if bin_dir is None:
        _no_postgres("no initdb found")
    try:
        server = pg.start(bin_dir)
    except RuntimeError as e:
        _no_postgres(str(e))
    yield server.url
    server.stop()


@pytest.fixture
def pg_url(pg_server_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on the server for one test (studies never collide), dropped after."""
    import re

    import sqlalchemy as sa

    name = "t_" + re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:50]
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield pg_server_url.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as c:
        c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def trial_record(**fields):
    """A :class:`~search.record.TrialRecord` with only ``fields`` set (objectives default to 0)."""
    from search.record import TrialRecord

    return TrialRecord.from_json({"accuracy": 0.0, "latency_paired_ms": 0.0, **fields})
