"""The database handle: one engine, short transactions, migrations on demand.

SQLite runs in WAL mode with a busy timeout; write transactions start with ``BEGIN IMMEDIATE``
so that two writers queue on the lock instead of failing when a reader upgrades. PostgreSQL
runs the same SQL with its default READ COMMITTED isolation.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

SQLITE_BUSY_TIMEOUT_MS = 30_000
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class DatabaseError(Exception):
    """The database cannot be opened or migrated; the message is one line for the operator."""


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and pick the psycopg 3 driver for it."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    # Let SQLAlchemy's begin event decide when a transaction starts (see _sqlite_begin).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    # Writers take the write lock up front. Readers run without BEGIN: each statement is then
    # atomic on its own (WAL gives it a snapshot), which is all a read here needs and saves a
    # round of BEGIN/COMMIT on every request.
    if conn.get_execution_options().get("write", False):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class _FileLock:
    """An exclusive ``flock`` on a file, taken by one thread of this process at a time (the
    caller holds the process's own lock). Waiting for it sleeps in the kernel, without the GIL,
    and wakes the moment the holder lets go."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> None:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise DatabaseError(f"cannot open the database's write lock: {exc}") from None
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *_exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalise_url(url)
        try:
            parsed = make_url(self.url)
        except ArgumentError as exc:
            raise DatabaseError(f"invalid database URL {url!r}: {exc}") from None
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        # SQLite in memory lives in this process only (and in one connection per thread).
        self.in_memory = self.is_sqlite and parsed.database in (None, "", ":memory:")
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.is_sqlite:
            if parsed.database and not self.in_memory:
                try:
                    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise DatabaseError(f"cannot open the database: {exc}") from None
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            kwargs["pool_size"] = 16
            kwargs["max_overflow"] = 32
        else:
            kwargs["pool_size"] = 16
            kwargs["max_overflow"] = 16
            kwargs["pool_pre_ping"] = True
        try:
            self.engine: Engine = create_engine(self.url, **kwargs)
        except (ArgumentError, ImportError) as exc:
            raise DatabaseError(f"cannot use database URL {url!r}: {exc}") from None
        # SQLite has one writer at a time. Queuing this process's writers on a lock is fair and
        # immediate; left to SQLite's busy handler they would poll with sleeps of up to 100 ms.
        # Writers of other processes on the same file (the API's writer process, a second
        # voxflow command) queue on an advisory lock on a file next to it, for the same reason.
        self._write_lock = threading.Lock() if self.is_sqlite else None
        self._file_lock: _FileLock | None = None
        if self.is_sqlite and not self.in_memory and parsed.database:
            self._file_lock = _FileLock(Path(parsed.database + ".write-lock"))
        self._other_processes: AbstractContextManager[None] = self._file_lock or nullcontext()
        self._on_dispose: list[Callable[[], None]] = []
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read: on SQLite each statement is atomic; on PostgreSQL one transaction."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction, committed when the block ends without an exception."""
        if self._write_lock is None:
            with self.engine.connect() as conn, conn.begin():
                yield conn
            return
        # The lock first: a writer waiting for it holds no pooled connection.
        with self._write_lock, self._other_processes, self.engine.connect() as conn:
            writer = conn.execution_options(write=True)
            with writer.begin():
                yield writer

    @contextmanager
    def write_on(self, conn: Connection) -> Iterator[Connection]:
        """A write transaction on a connection the caller holds (a dedicated writer's)."""
        if self._write_lock is None:
            with conn.begin():
                yield conn
            return
        with self._write_lock, self._other_processes:
            writer = conn.execution_options(write=True)
            with writer.begin():
                yield writer

    def upgrade(self) -> None:
        """Apply every migration that has not been applied yet."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        try:
            with self.engine.connect() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                conn.commit()
        except DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise DatabaseError(f"cannot migrate the database: {reason}") from None
        except OSError as exc:
            raise DatabaseError(f"cannot open the database: {exc}") from None

    def on_dispose(self, close: Callable[[], None]) -> None:
        """Run ``close`` when the database is disposed (writer threads that use it)."""
        self._on_dispose.append(close)

    def dispose(self) -> None:
        while self._on_dispose:
            self._on_dispose.pop()()
        self.engine.dispose()
        if self._file_lock is not None:
            self._file_lock.close()
