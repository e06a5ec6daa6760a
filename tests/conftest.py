from __future__ import annotations

import os
from collections.abc import Iterator
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
    """``measure(path)`` on this machine as ``profile`` says, like a study's context uses."""
    from search.measure.target import LocalTarget

    target = LocalTarget(profile.measure_spec())
    latency = eval_inputs[:1] if latency_input is None else latency_input
    return lambda path: target.measure(path, eval_inputs=eval_inputs, latency_input=latency)


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
