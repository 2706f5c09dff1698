"""The writer behind initiateCall (store.group_commit), on SQLite and PostgreSQL.

On SQLite the items that wait together share one transaction: these tests line a batch up
behind an item that holds the writer, then check that a refused item or a failing item costs
only itself, that the items of a batch see each other in order, that a failed commit answers
no one with success and writes nothing, and that a value is handed back only after its commit.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, event, func, select

from voxflow.store.db import Database
from voxflow.store.group_commit import Batches, GroupCommit, Writer, writer_for

_meta = MetaData()
_rows = Table(
    "group_commit_test_rows",
    _meta,
    Column("id", Integer, primary_key=True),
    Column("name", String(32), nullable=False),
)


class Refused(Exception):
    pass


@pytest.fixture
def writer(database: Database) -> Iterator[Writer]:
    _meta.create_all(database.engine)
    w = writer_for(database, refusals=(Refused,), process=False)
    yield w
    w.close()


def names(db: Database) -> list[str]:
    with db.read() as conn:
        return list(conn.execute(select(_rows.c.name).order_by(_rows.c.id)).scalars())


def insert(name: str) -> Callable[[Connection], str]:
    def work(conn: Connection) -> str:
        conn.execute(_rows.insert().values(name=name))
        return name

    return work


def insert_then(name: str, error: Exception) -> Callable[[Connection], str]:
    def work(conn: Connection) -> str:
        conn.execute(_rows.insert().values(name=name))
        raise error

    return work


async def batch(writer: Writer, works: list[Callable[[Connection], Any]]) -> list[Any]:
    """Run ``works`` so that, on SQLite, they wait together and form one batch.

    A first item holds the writer thread until every other item has been queued.
    """
    started, release = threading.Event(), threading.Event()

    def hold(_conn: Connection) -> str:
        started.set()
        release.wait(30)
        return "held"

    holder = asyncio.ensure_future(writer.run(hold))
    await asyncio.sleep(0)
    await asyncio.to_thread(started.wait, 30)
    pending = [asyncio.ensure_future(writer.run(w)) for w in works]
    await asyncio.sleep(0)  # every item is in the queue once its task has started
    release.set()
    assert await holder == "held"
    return list(await asyncio.gather(*pending, return_exceptions=True))


def test_a_refused_item_in_a_batch_leaves_the_others(writer: Writer, database: Database) -> None:
    works = [insert("a"), insert_then("refused", Refused("no")), insert("c")]
    results = asyncio.run(batch(writer, works))
    assert results[0] == "a" and results[2] == "c"
    assert isinstance(results[1], Refused)
    assert sorted(names(database)) == ["a", "c"]  # PostgreSQL: in any order


def test_items_of_a_batch_see_the_items_before_them(writer: Writer, database: Database) -> None:
    if not database.is_sqlite:
        pytest.skip("PostgreSQL runs each item in a transaction of its own, concurrently")

    def count_then_insert(name: str) -> Callable[[Connection], tuple[int, int]]:
        def work(conn: Connection) -> tuple[int, int]:
            seen = conn.execute(select(func.count()).select_from(_rows)).scalar_one()
            conn.execute(_rows.insert().values(name=name))
            return int(seen), id(conn.get_transaction())

        return work

    results = asyncio.run(batch(writer, [count_then_insert(str(i)) for i in range(6)]))
    # One transaction, items in arrival order: each counted the rows of the items before it.
    assert [seen for seen, _ in results] == [0, 1, 2, 3, 4, 5]
    assert len({transaction for _, transaction in results}) == 1
    assert names(database) == [str(i) for i in range(6)]


def test_an_unexpected_error_fails_only_its_item_and_leaves_no_half_rows(
    writer: Writer, database: Database
) -> None:
    works = [insert("a"), insert_then("broken", RuntimeError("bug")), insert("c")]
    results = asyncio.run(batch(writer, works))
    assert results[0] == "a" and results[2] == "c"
    assert isinstance(results[1], RuntimeError)
    assert sorted(names(database)) == ["a", "c"]  # PostgreSQL: in any order


def test_a_failed_commit_answers_no_one_and_writes_nothing(
    writer: Writer, database: Database
) -> None:
    def refuse_commit(conn: Connection) -> None:
        # Only transactions that wrote a row (not the item that holds the writer).
        if conn.execute(select(func.count()).select_from(_rows)).scalar_one():
            raise OSError("disk full")

    event.listen(database.engine, "commit", refuse_commit)
    try:
        results = asyncio.run(batch(writer, [insert("a"), insert("b"), insert("c")]))
    finally:
        event.remove(database.engine, "commit", refuse_commit)
    assert all(isinstance(r, OSError) for r in results), results
    assert names(database) == []
    # The writer recovers: the next items are committed.
    assert asyncio.run(batch(writer, [insert("d")])) == ["d"]
    assert names(database) == ["d"]


def test_a_value_arrives_only_after_its_commit(writer: Writer, database: Database) -> None:
    async def main() -> list[bool]:
        seen: list[bool] = []
        for i in range(5):
            name = await writer.run(insert(f"n{i}"))
            # Another connection sees the row the moment the value is back: it was committed.
            seen.append(name in names(database))
        return seen

    assert asyncio.run(main()) == [True] * 5


def test_the_sqlite_writer_commits_with_synchronous_full(database: Database) -> None:
    if not database.is_sqlite:
        pytest.skip("SQLite only")
    batches = Batches(database, refusals=(Refused,))  # the core of every group-commit writer
    try:
        conn = batches._connection()
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2  # FULL
    finally:
        batches.close()


@pytest.mark.parametrize("used", [False, True])
def test_work_handed_to_a_closed_writer_is_refused(
    writer: Writer, database: Database, used: bool
) -> None:
    if used:  # the writer thread has run (and stopped) before
        assert asyncio.run(batch(writer, [insert("early")])) == ["early"]
    writer.close()

    async def main() -> None:
        await asyncio.wait_for(writer.run(insert("late")), 30)

    with pytest.raises(RuntimeError):
        asyncio.run(main())
    assert "late" not in names(database)


@pytest.fixture
def recorder(database: Database) -> Iterator[GroupCommit]:
    """The dialer's writer: group commit on both backends, no savepoint per item."""
    _meta.create_all(database.engine)
    w = GroupCommit(database, refusals=(), savepoints=False, name="test-recorder")
    yield w
    w.close()


def test_the_dialers_writer_commits_a_batch_in_one_transaction(
    recorder: GroupCommit, database: Database
) -> None:
    def insert_in(name: str) -> Callable[[Connection], int]:
        def work(conn: Connection) -> int:
            conn.execute(_rows.insert().values(name=name))
            return id(conn.get_transaction())

        return work

    results = asyncio.run(batch(recorder, [insert_in(str(i)) for i in range(5)]))
    assert len(set(results)) == 1  # PostgreSQL as well: one transaction, one commit
    assert names(database) == [str(i) for i in range(5)]  # in arrival order


def test_the_dialers_writer_fails_only_the_failing_item_without_savepoints(
    recorder: GroupCommit, database: Database
) -> None:
    works = [insert("a"), insert_then("broken", RuntimeError("bug")), insert("c")]
    results = asyncio.run(batch(recorder, works))
    # The batch rolled back whole and each item ran again alone: only the broken one failed.
    assert results[0] == "a" and results[2] == "c"
    assert isinstance(results[1], RuntimeError)
    assert names(database) == ["a", "c"]
