"""Opening an Optuna storage: one password-free line on failure, safe when workers start together.

- Every URL this package prints goes through :func:`redact_url` (``postgresql://user:***@host/db``),
  and a driver's own words go through :func:`scrub`, because drivers echo URL parts (psycopg
  repeats the database name and query options).
- Two workers opening a new database at the same instant both create Optuna's tables: the slower
  one fails with ``table studies already exists`` (SQLite), ``UNIQUE constraint failed:
  alembic_version.version_num`` or PostgreSQL's ``duplicate key value violates unique constraint
  "pg_type_typname_nsp_index"`` (optuna 5.0 ``RDBStorage.__init__`` checks, then creates;
  nothing is atomic). A second attempt finds everything in place, so :func:`open_storage`
  retries on exactly those errors, and for SQLite also holds a host lock while it creates the
  schema.
- SQLite ignores the ``SELECT ... FOR UPDATE`` that Optuna uses to pop an enqueued trial or fail a
  stale one, and Python's sqlite3 runs that SELECT outside any transaction, so two workers could
  pop the same enqueued trial. SQLAlchemy's documented remedy is applied: SQLAlchemy emits the
  BEGIN itself, as ``BEGIN IMMEDIATE``, so each transaction holds the write lock from its start.
- With ``heartbeat_s`` the storage records heartbeats and fails RUNNING trials whose heartbeat is
  older than ``grace_s`` (database server clock), enqueueing a retry with the same parameters
  (``RetryHeartbeatStaleTrialCallback``); :mod:`search.distributed.budget` drives it from the
  ask/tell loop, which ``study.optimize`` would otherwise do.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import optuna

from search.errors import SearchError

if TYPE_CHECKING:
    import sqlite3

    from sqlalchemy.engine import Connection
    from sqlalchemy.pool import ConnectionPoolEntry

# The words of a lost schema-creation race, per backend; nothing else is retried.
_RACE = re.compile(
    r"already exists|UNIQUE constraint failed|duplicate key value|database is locked",
    re.IGNORECASE,
)
# What to install for a missing driver module.
_DRIVERS = {
    "psycopg": "pip install -e '.[postgres]' (psycopg 3, the driver of postgresql:// URLs)",
    "psycopg2": "pip install psycopg2-binary, or use a postgresql:// URL with '.[postgres]'",
    "MySQLdb": "pip install mysqlclient",
    "pymysql": "pip install pymysql",
}


class StorageError(SearchError):
    """The storage cannot be opened: bad URL, missing driver, server unreachable, refused."""


def redact_url(url: str) -> str:
    """``url`` with its password shown as ``***``; an unparsable URL that may hold one keeps
    only its scheme."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        if "@" not in url:
            return url
        return url.split("://", 1)[0] + "://***" if "://" in url else "***"


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")


def redact_text(text: str) -> str:
    """``text`` (a command line, say) with every URL in it shown by :func:`redact_url`."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def _passwords(url: str) -> list[str]:
    """Every spelling of the URL's password that a message could contain, longest first."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        pw = make_url(url).password
    except (ArgumentError, ValueError):
        pw = None
    if pw is None:  # unparsable: what sits between 'user:' and the last '@'
        rest = url.split("://", 1)[-1].rsplit("@", 1)
        pw = rest[0].split(":", 1)[1] if len(rest) == 2 and ":" in rest[0] else None
    if not pw:
        return []
    pw = str(pw)
    spellings = {pw, unquote(pw), quote(pw, safe=""), quote(unquote(pw), safe="")}
    return sorted(spellings, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` with the URL's password replaced by ``***`` wherever a driver echoed it."""
    for pw in _passwords(url):
        text = text.replace(pw, "***")
    return text


def _why(e: BaseException) -> str:
    """The first thing a user needs: the missing driver module, else the error's first lines."""
    if isinstance(e, ModuleNotFoundError) or "DB access module" in str(e):
        cause = e if isinstance(e, ModuleNotFoundError) else (e.__cause__ or e.__context__)
        missing = getattr(cause, "name", None) or "?"
        hint = _DRIVERS.get(missing, f"pip install the package that provides {missing!r}")
        return f"its database driver is not installed (No module named {missing!r}; {hint})"
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # SQLAlchemy puts "(psycopg.OperationalError) connection failed: ..." first; keep it whole.
    return " ".join(lines[:2]) if lines else type(e).__name__


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL; None for other backends and memory."""
    if not url.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


def storage_exists(url: str, *, default: bool = False) -> bool:
    """False only for a SQLite file that is not there yet (opening it would create it).

    Raises:
        StorageError: the folder of that file does not exist (unless ``default``: the study's
            own folder, created with the study).
    """
    path = sqlite_path(url)
    if path is not None and not default and not path.parent.is_dir():
        raise StorageError(
            f"cannot open storage {redact_url(url)}: folder {path.parent} does not exist"
        )
    return path is None or path.is_file()


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_sqlite_file(url: str, path: Path) -> None:
    """An existing path of a SQLite URL must be a regular file holding a SQLite database (or be
    empty: SQLite makes a new database of an empty file)."""
    shown = redact_url(url)
    if path.is_dir():
        raise StorageError(f"cannot open storage {shown}: {path} is a folder, not a database")
    if not path.is_file():
        raise StorageError(f"cannot open storage {shown}: {path} is not a regular file")
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as e:
        raise StorageError(f"cannot open storage {shown}: {(e.strerror or e)}") from None
    if head and head != _SQLITE_MAGIC:
        raise StorageError(f"cannot open storage {shown}: {path} is not a SQLite database")


def check_storage(url: str, *, default: bool = False, timeout_s: float = 10.0) -> None:
    """Refuse a storage URL that cannot work, creating nothing (no file, no table).

    - SQLite: not in memory (nothing would be kept, and no other worker could join); the
      file's folder exists (unless ``default``: the study's own folder, made with the study);
      an existing path is a SQLite database file.
    - Any other URL: it parses, its driver is installed, and its server accepts a connection
      within ``timeout_s`` (PostgreSQL's ``connect_timeout``).

    Raises:
        StorageError: one line, the URL's password masked.
    """
    if url.startswith("sqlite"):
        try:
            path = sqlite_path(url)
        except Exception as e:  # noqa: BLE001 - an unparsable URL is the user's to fix
            msg = f"cannot open storage {redact_url(url)}: {_why(e)}"
            raise StorageError(scrub(msg, url)) from None
        if path is None:
            raise StorageError(
                f"--storage {redact_url(url)} is an in-memory database: nothing would be kept; "
                "name a file (sqlite:///path/study.db) or a server"
            )
        storage_exists(url, default=default)  # the folder
        if path.exists() or path.is_symlink():
            _check_sqlite_file(url, path)
        return
    import sqlalchemy

    try:
        connect_args = {"connect_timeout": int(timeout_s)} if url.startswith("postgres") else {}
        engine = sqlalchemy.create_engine(url, connect_args=connect_args)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except Exception as e:  # noqa: BLE001 - every failure to connect is the user's to fix
        msg = f"cannot open storage {redact_url(url)}: {_why(e)}"
        raise StorageError(scrub(msg, url)) from None


def open_existing_storage(url: str, *, study: str) -> optuna.storages.RDBStorage:
    """The storage of an existing study (report, export): like :func:`open_storage`, but a
    SQLite file that does not exist is refused instead of created.

    Raises:
        StorageError: a bad URL, an unreachable server, or no database at a SQLite path.
    """
    check_storage(url)
    path = sqlite_path(url)
    if path is not None and (not path.is_file() or path.stat().st_size == 0):
        raise StorageError(
            f"no study {study!r} in {redact_url(url)}: {path} does not exist or is empty"
        )
    return open_storage(url)


@contextlib.contextmanager
def _creation_lock(url: str) -> Iterator[None]:
    """A host lock while a SQLite file's schema is created (a no-op for other backends). The
    lock file lies in the host's lock folder, never beside the database."""
    path = sqlite_path(url)
    if path is None:
        yield
        return
    from search.distributed.host_locks import host_lock

    with host_lock("sqlite", str(path.resolve())):
        yield


def _serialize_sqlite(storage: optuna.storages.RDBStorage) -> None:
    """Make each SQLite transaction ``BEGIN IMMEDIATE`` (see the module docstring)."""
    from sqlalchemy import event

    engine = storage.engine
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(
        dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry
    ) -> None:  # the DBAPI connection of the sqlite dialect
        dbapi_connection.isolation_level = None  # sqlite3 issues no BEGIN of its own

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections pooled while Optuna created the schema lack the hook


def _engine_kwargs(url: str) -> dict[str, Any]:
    # SQLite under concurrent writers (other workers, the dashboard) needs a patient lock.
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}


def _heartbeat_kwargs(heartbeat_s: int | None, grace_s: int | None) -> dict[str, Any]:
    if not heartbeat_s:
        return {}
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    return {
        "heartbeat_interval": int(heartbeat_s),
        "grace_period": int(grace_s or 6 * heartbeat_s),
        "heartbeat_stale_trial_callback": retry,
    }


def _rdb_storage(url: str, *, attempts: int = 5, **kwargs: Any) -> optuna.storages.RDBStorage:
    """``RDBStorage(url, **kwargs)`` that survives other workers creating the schema at once."""
    from sqlalchemy import exc as sa_exc

    for attempt in range(attempts):
        try:
            with _creation_lock(url):
                return optuna.storages.RDBStorage(url, **kwargs)
        except (sa_exc.OperationalError, sa_exc.IntegrityError, sa_exc.ProgrammingError) as e:
            if attempt == attempts - 1 or not _RACE.search(str(e)):
                raise
            time.sleep(0.05 + random.random() * 0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def open_storage(
    url: str, *, heartbeat_s: int | None = None, grace_s: int | None = None
) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at ``url``, created if missing (tables, SQLite file).

    Args:
        url: An SQLAlchemy URL: ``sqlite:///path/study.db``, ``postgresql://user:pw@host/db``
            (psycopg 3; ``pip install -e '.[postgres]'``), ``postgresql+psycopg2://...``.
        heartbeat_s: Record a heartbeat of each running trial every this many seconds, so any
            worker can fail a trial whose worker died; None: no heartbeats (report, export).
        grace_s: A RUNNING trial whose last heartbeat is older than this is failed and retried
            once with the same parameters (default: 6 heartbeats).

    Raises:
        StorageError: one line with the URL's password masked.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = _rdb_storage(
                url, engine_kwargs=_engine_kwargs(url), **_heartbeat_kwargs(heartbeat_s, grace_s)
            )
        _serialize_sqlite(storage)
    except Exception as e:  # noqa: BLE001 - every failure to open storage is the user's to fix
        msg = f"cannot open storage {redact_url(url)}: {_why(e)}"
        raise StorageError(scrub(msg, url)) from None
    return storage
