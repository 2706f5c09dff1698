"""Writes of many requests, committed together: group commit on SQLite.

A request that writes hands a *work* function (``work(conn) -> value``) to a :class:`Writer`
and awaits its value. The value arrives only after the transaction that ran the work has
committed, so an answer built from it is never sent for a write that could still be lost.

SQLite (:class:`GroupCommit`): one writer thread with its own connection takes every work item
that is waiting (up to ``max_batch``), runs each in its own ``SAVEPOINT`` inside one
``BEGIN IMMEDIATE`` transaction, in arrival order, and commits once. Work items run one after
the other in that transaction, so a check made by one sees the rows of the items before it.

- A *refusal* (an exception of the ``refusals`` types, e.g. a validation error) rolls back to
  the item's savepoint: that item alone gets the exception, the others go on.
- Any other exception, or a failed commit, rolls the whole transaction back; then each item of
  the batch runs once more in a transaction of its own, so that only the item that fails again
  gets the error and no item's rows are half written.

The writer's connection runs with ``synchronous = FULL``: the commit returns after the WAL is
on disk, so an answer survives a power loss, not only a crash of the process. Group commit is
what makes that affordable: one fsync per batch instead of one per request.

The dialer records calls through group commit on both backends (``savepoints=False``: a status
move is never refused, so an item needs no savepoint of its own; an item that fails rolls the
batch back and every item runs again alone). Its writes are many short transactions on rows no
API request waits for; one thread committing them in batches keeps the number of threads that
want the GIL (and the event loop's wait for it) small, and pays one commit per batch.

PostgreSQL for the API (:class:`OwnTransactions`): each work item runs in its own transaction on
a pool of threads; the server interleaves concurrent transactions (and groups their commits)
itself, and many API processes may write at once. A unique constraint broken by a transaction that
committed first rolls the item back and runs it once more: its checks then see the other row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from voxflow.store.db import Database

log = logging.getLogger("voxflow.store")

T = TypeVar("T")
Work = Callable[[Connection], T]
AfterCommit = Callable[[T], None]

MAX_BATCH = 256
_SAVEPOINT = "SAVEPOINT voxflow_item"
_RELEASE = "RELEASE voxflow_item"
_ROLLBACK_TO = "ROLLBACK TO voxflow_item"


class WriterClosed(RuntimeError):
    """Work was handed to a writer after its database was disposed."""


class Writer(Protocol):
    async def run(self, work: Work[T], after_commit: AfterCommit[T] | None = None) -> T:
        """Run ``work`` in a write transaction; its value once that transaction committed.

        ``after_commit(value)`` runs right after the commit (to tell others about the new
        rows), on the writer's thread or, for a writer process, on the item's event loop; it
        must be quick, and what it raises is only logged.
        """
        ...

    def start(self) -> None:
        """Start now what would start with the first item (a thread, a process)."""
        ...

    def close(self) -> None: ...


def writer_for(
    db: Database, *, refusals: tuple[type[Exception], ...], process: bool = True
) -> Writer:
    """Group commit on SQLite (in a writer process for a database file, unless ``process`` is
    False; in a thread for an in-memory one), a transaction per item on PostgreSQL."""
    if db.is_sqlite:
        if process and not db.in_memory:
            from voxflow.store.writer_process import ProcessCommit

            return ProcessCommit(db, refusals=refusals)
        return GroupCommit(db, refusals=refusals)
    return OwnTransactions(db)


@dataclass
class _Outcome:
    value: Any = None
    error: BaseException | None = None


@dataclass
class _Item:
    work: Work[Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    after_commit: AfterCommit[Any] | None = None


def _after(after_commit: AfterCommit[Any] | None, outcome: _Outcome) -> None:
    if after_commit is None or outcome.error is not None:
        return
    try:
        after_commit(outcome.value)
    except Exception:
        log.exception("after-commit hook failed (the write is committed)")


def _settle(pairs: list[tuple[asyncio.Future[Any], _Outcome]]) -> None:
    for future, outcome in pairs:
        if future.done():  # the request was cancelled (its client went away)
            continue
        if outcome.error is not None:
            future.set_exception(outcome.error)
        else:
            future.set_result(outcome.value)


class Batches:
    """The core of group commit: a batch of work items in one transaction, on a connection of
    its own. It runs where the writer runs: a thread (:class:`GroupCommit`) or a process of its
    own (:mod:`voxflow.store.writer_process`)."""

    def __init__(
        self, db: Database, *, refusals: tuple[type[Exception], ...], savepoints: bool = True
    ) -> None:
        self.db = db
        self.refusals = refusals
        self.savepoints = savepoints
        self._conn: Connection | None = None

    def commit(self, works: list[Work[Any]]) -> list[_Outcome]:
        """One outcome per work item, in order; never raises."""
        try:
            return self._commit(works)
        except Exception as exc:  # never leave a request waiting for nothing
            log.exception("the writer failed a batch of %d", len(works))
            return [_Outcome(error=exc) for _ in works]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.invalidated or self._conn.closed:
            conn = self.db.engine.connect()
            if self.db.is_sqlite:
                # On the driver, outside any transaction: SQLite refuses to change it inside one.
                cursor = conn.connection.cursor()
                cursor.execute("PRAGMA synchronous = FULL")
                # Each item's SAVEPOINT keeps the pages it changes in a sub-journal: in memory,
                # not a temporary file written for every call.
                cursor.execute("PRAGMA temp_store = MEMORY")
                cursor.close()
            self._conn = conn
        return self._conn

    def _commit(self, works: list[Work[Any]]) -> list[_Outcome]:
        try:
            with self.db.write_on(self._connection()) as conn:
                return [self._in_savepoint(conn, work) for work in works]
        except Exception as exc:
            self._drop_connection()
            if len(works) == 1:
                return [_Outcome(error=exc)]
            log.warning("a batch of %d writes rolled back (%r); each runs alone", len(works), exc)
            return [self._alone(work) for work in works]

    def _in_savepoint(self, conn: Connection, work: Work[Any]) -> _Outcome:
        if not self.savepoints:  # what an item raises fails the batch (and _commit retries)
            return _Outcome(value=work(conn))
        cursor = conn.connection.cursor()
        try:
            cursor.execute(_SAVEPOINT)
            try:
                value = work(conn)
            except self.refusals as refusal:
                cursor.execute(_ROLLBACK_TO)
                cursor.execute(_RELEASE)
                return _Outcome(error=refusal)
            cursor.execute(_RELEASE)
            return _Outcome(value=value)
        finally:
            cursor.close()

    def _alone(self, work: Work[Any]) -> _Outcome:
        try:
            with self.db.write_on(self._connection()) as conn:
                return _Outcome(value=work(conn))
        except Exception as exc:
            if not isinstance(exc, self.refusals):
                self._drop_connection()
            return _Outcome(error=exc)

    def _drop_connection(self) -> None:
        # After a failure the connection's state is unknown: start the next batch on a new one.
        if self._conn is not None:
            with contextlib.suppress(Exception):  # it is being thrown away
                self._conn.close()
            self._conn = None


class GroupCommit:
    """One writer thread, one transaction and one commit for every waiting item."""

    def __init__(
        self,
        db: Database,
        *,
        refusals: tuple[type[Exception], ...],
        max_batch: int = MAX_BATCH,
        savepoints: bool = True,
        name: str = "voxflow-writer",
    ) -> None:
        self.db = db
        self.max_batch = max_batch
        self.name = name
        self._batches = Batches(db, refusals=refusals, savepoints=savepoints)
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        db.on_dispose(self.close)

    async def run(self, work: Work[T], after_commit: AfterCommit[T] | None = None) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        # Under the lock: no item can be queued behind the stop mark that close() puts.
        with self._lock:
            if self._closed:
                raise WriterClosed("the database is closed")
            self._start_locked()
            self._queue.put(_Item(work, loop, future, after_commit))
        return await future

    def start(self) -> None:
        with self._lock:
            if not self._closed:
                self._start_locked()

    def _start_locked(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Finish the items queued so far, then stop the writer thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join()

    # ------------------------------------------------------------ the writer thread

    def _main(self) -> None:
        try:
            while True:
                batch, stop = self._next_batch()
                if batch:
                    outcomes = self._batches.commit([item.work for item in batch])
                    for item, outcome in zip(batch, outcomes, strict=True):
                        _after(item.after_commit, outcome)
                    _deliver([(item.loop, item.future) for item in batch], outcomes)
                if stop:
                    return
        finally:
            self._batches.close()

    def _next_batch(self) -> tuple[list[_Item], bool]:
        first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False


def _deliver(
    waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]], outcomes: list[_Outcome]
) -> None:
    """Hand each outcome to its future, on the future's event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], _Outcome]]]
    by_loop = defaultdict(list)
    for (loop, future), outcome in zip(waiting, outcomes, strict=True):
        by_loop[loop].append((future, outcome))
    for loop, pairs in by_loop.items():
        # A closed loop raises RuntimeError: nobody waits for these answers any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, pairs)


class OwnTransactions:
    """PostgreSQL: each item in its own transaction, on a bounded pool of threads."""

    def __init__(self, db: Database, workers: int = 16) -> None:
        self.db = db
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="voxflow-write")
        db.on_dispose(self.close)

    async def run(self, work: Work[T], after_commit: AfterCommit[T] | None = None) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._once, work, after_commit)

    def _once(self, work: Work[T], after_commit: AfterCommit[T] | None) -> T:
        try:
            with self.db.write() as conn:
                value = work(conn)
        except IntegrityError:
            with self.db.write() as conn:
                value = work(conn)
        _after(after_commit, _Outcome(value=value))
        return value

    def start(self) -> None:
        return None  # its threads start with the first items

    def close(self) -> None:
        self._pool.shutdown(wait=True)
