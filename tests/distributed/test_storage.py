"""Opening storage: password-free one-line errors, the driver of postgresql:// URLs, workers
creating a new storage at the same instant, and SQLite transactions that really serialise."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import warnings

import optuna
import pytest
from sqlalchemy.engine import make_url

from search.distributed.storage import StorageError, open_storage, redact_url, scrub
from tests.conftest import REPO

FORK = mp.get_context("fork")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/study.db"
    return request.getfixturevalue("pg_url")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:S3cret@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
        ("sqlite:///results/s/study.db", "sqlite:///results/s/study.db"),
        ("not-a-url", "not-a-url"),
        ("postgresql://u:S3cret@h:abc/db", "postgresql://***"),
    ],
)
def test_urls_are_shown_without_their_password(url, shown):
    assert redact_url(url) == shown


def test_a_password_echoed_by_a_driver_is_scrubbed_in_every_spelling():
    url = "postgresql://u:p%40ss@h/p@ss?sslmode=p%40ss"
    assert scrub('database "p@ss" does not exist; sslmode "p%40ss"', url) == (
        'database "***" does not exist; sslmode "***"'
    )


def test_a_missing_driver_names_the_module_and_how_to_install_it():
    with pytest.raises(StorageError) as e:
        open_storage("postgresql+psycopg2://u:S3cret@127.0.0.1:1/db")
    msg = str(e.value)
    assert "No module named 'psycopg2'" in msg and "S3cret" not in msg
    assert msg.startswith("cannot open storage postgresql+psycopg2://u:***@127.0.0.1:1/db")


def test_plain_postgresql_urls_use_psycopg_3(pg_url):
    storage = open_storage(pg_url)
    assert storage.engine.dialect.driver == "psycopg"
    study = optuna.create_study(storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(study.trials) == 2


def test_a_storage_error_prints_the_url_without_its_password(pg_url, tmp_path):
    wrong = make_url(pg_url).set(password="Wr0ngSecret").render_as_string(hide_password=False)
    cmd = [sys.executable, "-m", "search", "report", "--study", "s", "--storage", wrong]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "Wr0ngSecret" not in out.stderr + out.stdout
    shown = redact_url(wrong)
    assert shown.startswith("postgresql://search:***@127.0.0.1:")
    assert out.stderr.strip().splitlines() == [
        f"error: cannot open storage {shown}: (psycopg.OperationalError) connection failed: "
        + out.stderr.split("connection failed: ", 1)[1].strip()
    ]
    assert "password authentication failed" in out.stderr


def _open(url, barrier, q):
    barrier.wait()
    try:
        optuna.create_study(study_name="s", storage=open_storage(url), load_if_exists=True)
        q.put("ok")
    except Exception as e:  # noqa: BLE001 - the message is the test's evidence
        q.put(f"{type(e).__name__}: {e}")


def test_workers_creating_a_new_storage_at_once_all_join(url):
    """Optuna creates its tables without any lock: without the retry and the SQLite creation
    lock, 15 of 20 pairs of processes failed here ('table studies already exists')."""
    for _ in range(2 if url.startswith("sqlite") else 1):
        b, q = FORK.Barrier(4), FORK.Queue()
        ps = [FORK.Process(target=_open, args=(url, b, q)) for _ in range(4)]
        for p in ps:
            p.start()
        assert [q.get(timeout=120) for _ in ps] == ["ok"] * 4
        for p in ps:
            p.join()
        if url.startswith("sqlite"):
            os.remove(url.removeprefix("sqlite:///"))


def _ask(url, name, barrier, q):
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    barrier.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q.put(study.ask()._trial_id)


def test_an_enqueued_trial_is_popped_by_one_worker_only(url):
    """SQLite ignores Optuna's SELECT ... FOR UPDATE; without BEGIN IMMEDIATE 20 of 30 rounds of
    four workers popped the one enqueued trial twice or more."""
    for _ in range(3):
        study = optuna.create_study(storage=open_storage(url))
        study.enqueue_trial({"x": 0.5})
        enqueued = study.trials[0]._trial_id
        name = study.study_name
        b, q = FORK.Barrier(4), FORK.Queue()
        ps = [FORK.Process(target=_ask, args=(url, name, b, q)) for _ in range(4)]
        for p in ps:
            p.start()
        got = [q.get(timeout=120) for _ in ps]
        for p in ps:
            p.join()
        assert got.count(enqueued) == 1, got
        optuna.delete_study(study_name=name, storage=url)
