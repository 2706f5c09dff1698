"""store.raw against the real databases: IN lists (constant and per execution), literals,
UPDATE with and without RETURNING, each giving what SQLAlchemy's own execution gives, and the
key of an inserted row (SQLite's rowid, PostgreSQL's RETURNING)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    case,
    func,
    select,
)

from voxflow.store.db import Database
from voxflow.store.raw import RawStatement

meta = MetaData()
items = Table(
    "raw_items",
    meta,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),
    Column("at", DateTime, nullable=True),
)
numbered = Table(
    "raw_numbered",
    meta,
    Column("id", Integer, primary_key=True),  # the database numbers the rows
    Column("kind", String(16), nullable=False),
)
AT = datetime(2026, 1, 2, 3, 4, 5, 678000)


@pytest.fixture
def conn(database: Database) -> Iterator[Connection]:
    meta.create_all(database.engine)
    try:
        with database.engine.begin() as connection:
            connection.execute(
                items.insert(),
                [{"id": i, "kind": "ab"[i % 2], "at": AT if i < 3 else None} for i in range(6)],
            )
            yield connection
            connection.rollback()
    finally:
        meta.drop_all(database.engine)


BY_IDS = select(items.c.id).where(
    items.c.kind.in_(["a", "b", "c"]), items.c.id.in_(bindparam("ids", expanding=True))
)


@pytest.mark.parametrize("ids", [[], [4], [1, 2, 3], [0, 1, 2, 3, 4, 5, 99]])
def test_a_list_parameter_of_any_length_beside_a_constant_list(
    conn: Connection, ids: list[int]
) -> None:
    raw = RawStatement(BY_IDS.order_by(items.c.id))
    assert raw.rows(conn, {"ids": ids}) == [
        tuple(r) for r in conn.execute(BY_IDS.order_by(items.c.id), {"ids": ids})
    ]
    assert sorted(r[0] for r in raw.rows(conn, {"ids": ids})) == sorted(i for i in ids if i < 6)


def test_literals_and_a_constant_list_take_their_values(conn: Connection) -> None:
    stmt = select(
        func.coalesce(func.sum(case((items.c.at > bindparam("since"), 1), else_=0)), 0),
        func.count(),
    ).where(items.c.kind.in_(["a"]))
    raw = RawStatement(stmt)
    since = datetime(2026, 1, 1)
    assert raw.rows(conn, {"since": since}) == [(2, 3)]  # "a": ids 0, 2, 4; "at" set for 0 and 2
    assert raw.rows(conn, {"since": since}) == [tuple(conn.execute(stmt, {"since": since}).one())]


def test_an_insert_gives_the_key_the_database_gave_its_row(conn: Connection) -> None:
    conn.execute(numbered.insert(), [{"kind": "x"}, {"kind": "y"}])  # keys already taken
    raw = RawStatement(numbered.insert())
    keys = {kind: raw.inserted_id(conn, {"kind": kind}) for kind in ("a", "b", "a")}
    rows = conn.execute(select(numbered.c.id, numbered.c.kind).order_by(numbered.c.id)).all()
    assert len(rows) == 5
    assert {kind: key for key, kind in rows if kind in "ab"} == keys  # the second "a" wins
    assert len({key for key, _ in rows}) == 5


def test_an_update_sets_the_columns_given_and_returns_the_new_row(conn: Connection) -> None:
    move = RawStatement(
        items.update()
        .where(items.c.id == bindparam("item"), items.c.kind.in_(["a"]))
        .returning(items.c.id, items.c.kind, items.c.at)
    )
    later = datetime(2026, 5, 6, 7, 8, 9, 10000)
    assert move.rows(conn, {"kind": "c", "at": later, "item": 2}) == [(2, "c", later)]
    assert move.rows(conn, {"kind": "c", "item": 2}) == []  # no longer "a"
    assert move.rows(conn, {"kind": "c", "item": 1}) == []  # "b"
    assert move.rows(conn, {"kind": "z", "item": 4}) == [(4, "z", None)]  # "at" not set
    plain = RawStatement(items.update().where(items.c.kind == bindparam("was")))
    assert plain.execute(conn, {"kind": "b", "was": "c"}) == 1
    assert conn.execute(select(items.c.kind).order_by(items.c.id)).scalars().all() == [
        "a",
        "b",
        "b",
        "b",
        "z",
        "b",
    ]


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 1, 2, 3, 4, 5, 678000),
        datetime(2026, 1, 2, 3, 4, 5),  # no microseconds: still written with .000000
        datetime(999, 12, 31, 23, 59, 59, 1),
        datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),  # aware: SQLAlchemy's own processor
    ],
)
def test_a_datetime_is_stored_exactly_as_sqlalchemy_stores_it(
    conn: Connection, at: datetime
) -> None:
    conn.execute(items.insert(), {"id": 100, "kind": "a", "at": at})
    RawStatement(items.insert()).insert(conn, {"id": 101, "kind": "a", "at": at})
    stored = select(func.cast(items.c.at, String)).where(items.c.id.in_([100, 101]))
    by_core, by_raw = conn.execute(stored.order_by(items.c.id)).scalars()
    assert by_raw == by_core
    found = RawStatement(select(items.c.at).where(items.c.id == bindparam("id")))
    assert found.first(conn, {"id": 101}) == found.first(conn, {"id": 100})
