"""Fixtures shared by every test tier.

``database`` is a freshly migrated database, once on SQLite and once on PostgreSQL (a real server
started for the test session). ``server`` is voxflow on a real loopback socket over that database;
``api`` and ``api_b`` are clients of two different accounts on it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ApiClient, MovableClock, PostgresServer, RunningServer, start_server
from voxflow.store.db import Database

PG_REQUIRED = os.environ.get("VOXFLOW_TEST_POSTGRES") == "required"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer.start()
    except (RuntimeError, OSError) as exc:
        if PG_REQUIRED:
            pytest.fail(f"PostgreSQL is required but could not start: {exc}")
        pytest.skip(f"PostgreSQL not available: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_template(postgres: PostgresServer) -> str:
    name = postgres.create_database()
    db = Database(postgres.url(name))
    db.upgrade()
    db.dispose()
    return name


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    with db.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "voxflow.db"
        shutil.copy(template, path)
        db = Database(f"sqlite:///{path}")
    else:
        pg: PostgresServer = request.getfixturevalue("postgres")
        name = pg.create_database(template=request.getfixturevalue("pg_template"))
        db = Database(pg.url(name))
    db.upgrade()  # a no-op on the migrated template; proves upgrade is idempotent
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture
def server(database: Database) -> Iterator[RunningServer]:
    running = start_server(database)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def api(server: RunningServer) -> Iterator[ApiClient]:
    client = server.client("alice")
    yield client
    client.close()


@pytest.fixture
def api_b(server: RunningServer) -> Iterator[ApiClient]:
    client = server.client("bob")
    yield client
    client.close()


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def clocked(database: Database, clock: MovableClock) -> Iterator[RunningServer]:
    """voxflow on a loopback socket whose clock the test moves (``clock``)."""
    running = start_server(database, clock)
    try:
        yield running
    finally:
        running.stop()
