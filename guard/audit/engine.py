"""SQLAlchemy engines for the audit store: SQLite (``sqlite:///path``) or PostgreSQL
(``postgresql+psycopg://user@host:port/db``).

SQLite: WAL journal, ``synchronous=FULL`` (a commit is on disk when it returns), a busy timeout,
and writes that start with ``BEGIN IMMEDIATE`` (take the write lock first, so two processes never
deadlock upgrading a read lock). Connections open the file with ``mode=rw``: a database file that
disappeared (or a directory that was removed) is an error, never a fresh empty file created behind
the operator's back; only :func:`create_sqlite_file` creates the file. Connections are pooled
(closing the last connection of a WAL database checkpoints it, which would cost several fsyncs per
transaction), and each checkout checks that the path still names the file the connection opened, so
a pooled connection never writes into a deleted file.

PostgreSQL: pooled connections checked before use, a short connect timeout so that a store that is
down is noticed quickly, and commits that are on disk when they return: a server, database or role
default of ``synchronous_commit = off`` (a commit acknowledged before its WAL is flushed, lost if
the database crashes) is raised to ``local`` for the store's sessions; stronger settings are kept.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import QueuePool

from guard.errors import ConfigError

CONNECT_TIMEOUT_S = 5
IMMEDIATE = "guard_begin_immediate"  # execution option: start the transaction with the write lock


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for another backend."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        raise ConfigError(f"the audit store needs a SQLite file, not {url!r}")
    return Path(parsed.database)


def create_engine_for(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a useful text
        raise ConfigError(f"invalid audit store URL {url!r}: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(sqlite_path(url))  # type: ignore[arg-type]
    if backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = create_engine(
            parsed,
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=5,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
        )
        event.listen(engine, "connect", _durable_commits)
        return engine
    raise ConfigError(f"unsupported audit store URL {url!r}: use sqlite:///path or postgresql+psycopg://...")


def _durable_commits(dbapi_conn, record) -> None:
    """A new PostgreSQL session: ``synchronous_commit = off`` becomes ``local`` (see the module)."""
    with dbapi_conn.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        if cursor.fetchone()[0] == "off":
            cursor.execute("SET synchronous_commit TO local")
    dbapi_conn.commit()


def _open_sqlite(path: Path, mode: str) -> sqlite3.Connection:
    uri = f"file:{quote(str(path.absolute()))}?mode={mode}"
    conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def create_sqlite_file(path: Path) -> None:
    """Create the database file (its directory must exist) and switch it to WAL."""
    _open_sqlite(path, "rwc").close()


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _sqlite_engine(path: Path) -> Engine:
    engine = create_engine(
        "sqlite://",
        creator=lambda: _open_sqlite(path, "rw"),
        poolclass=QueuePool,
        pool_size=4,
        max_overflow=8,
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, record) -> None:
        record.info["file_id"] = _file_id(path)

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, record, proxy) -> None:
        if record.info.get("file_id") != _file_id(path) or record.info.get("file_id") is None:
            raise DisconnectionError(f"{path} is no longer the file this connection opened")

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # pysqlite's own transaction handling is off (isolation_level=None)
        immediate = conn.get_execution_options().get(IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
