"""Group commit in a process of its own: the API's writer on a SQLite file.

An API process that accepts calls spends its core on HTTP, XML and validation; committing a
call (the checks that read the store, the inserts, the commit) costs as much again, in Python
under the same GIL. :class:`ProcessCommit` moves that half to a child process, so the two run on
two cores, and keeps every promise of :class:`~voxflow.store.group_commit.GroupCommit`:

- a work item is a picklable callable (a module-level function or a ``functools.partial`` of
  one, with picklable arguments) that runs as ``work(conn)`` in the child's write transaction,
  one savepoint per item, the items waiting together in one transaction and one commit
  (``synchronous = FULL``); a refusal rolls back only its own item;
- a value (or a refusal) comes back only after the commit; ``after_commit`` runs in this
  process, on the receiving thread, right after;
- the child is started on first use and stopped by :meth:`ProcessCommit.close` (on the
  database's dispose) once the queued items are done. If it dies, the items in flight fail
  (their requests get a 500, and an Idempotency-Key repeat finds a call that did commit) and
  the next item starts a new child. The child ignores SIGINT and SIGTERM, which the process
  group may get: it stops when its parent closes the pipe, or dies.

The items handed over during one turn of an event loop (the requests it read in that turn) are
gathered and passed on together at the end of the turn, so that a burst of requests costs one
wake-up, one pickling and one message, not one each (this cut the API process's CPU per call
by a sixth). Two threads in this process carry them: a sender (pickles what waits, sends it as
one message) and a receiver (reads outcomes, hands them to their event loops). Both spend
their time in system calls, which run without the GIL.

SQLite writers of several processes (this child, the dialer's writers in the parent, other
voxflow commands) queue on the database's write-lock file (see :class:`voxflow.store.db.Database`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import multiprocessing
import multiprocessing.util  # its exit handler is registered before ours (see _OPEN)
import pickle
import queue
import signal
import threading
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any

from voxflow import logs
from voxflow.store.db import Database
from voxflow.store.group_commit import (
    MAX_BATCH,
    AfterCommit,
    Batches,
    T,
    Work,
    WriterClosed,
    _after,
    _deliver,
    _Outcome,
)

log = logging.getLogger("voxflow.store")


class WriterProcessGone(RuntimeError):
    """The writer process ended while this item was in flight (it may have been committed)."""


@dataclass
class _Waiting:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    after_commit: AfterCommit[Any] | None


_STOP = None  # the message that asks the child to finish and exit
STOP_TIMEOUT_S = 30.0  # how long a stopping child may take to finish its queue

# Writers not closed yet. At exit, multiprocessing terminates (SIGTERM, which the child
# ignores) and then joins its children: a child still waiting for its parent's next message
# would hold the exit up for ever. So every open writer is closed first (atexit runs the
# handlers registered last first, and multiprocessing registered its own at import).
_OPEN: weakref.WeakSet[ProcessCommit] = weakref.WeakSet()


@atexit.register
def _close_open_writers() -> None:
    for writer in list(_OPEN):
        writer.close()


def _portable(outcome: _Outcome) -> _Outcome:
    """An outcome that pickles: an error that does not becomes a RuntimeError with its text."""
    if outcome.error is not None:
        try:
            pickle.dumps(outcome.error)
        except Exception:
            return _Outcome(error=RuntimeError(repr(outcome.error)))
    return outcome


def _child_main(
    url: str, pipe: Pipe, refusals: tuple[type[Exception], ...], max_batch: int
) -> None:
    """The writer process: batches from the pipe, committed, outcomes back, until told to stop
    or the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logs.setup()  # as the parent's (VOXFLOW_LOG_LEVEL is inherited)
    db = Database(url)
    batches = Batches(db, refusals=refusals)
    try:
        while True:
            try:
                items = pickle.loads(pipe.recv_bytes())  # noqa: S301 (our own pipe)
            except EOFError:  # the parent is gone
                return
            stop = items is _STOP
            if stop:
                items = []
            while not stop and len(items) < max_batch and pipe.poll(0):
                more = pickle.loads(pipe.recv_bytes())  # noqa: S301
                if more is _STOP:
                    stop = True
                else:
                    items.extend(more)
            if items:
                outcomes = batches.commit([work for _, work in items])
                answer = [
                    (token, _portable(o)) for (token, _), o in zip(items, outcomes, strict=True)
                ]
                try:
                    pipe.send_bytes(pickle.dumps(answer))
                except OSError:  # the parent is gone
                    return
            if stop:
                return
    finally:
        batches.close()
        db.engine.dispose()


class ProcessCommit:
    """Group commit in a child process (SQLite files); the same interface as GroupCommit."""

    def __init__(
        self,
        db: Database,
        *,
        refusals: tuple[type[Exception], ...],
        max_batch: int = MAX_BATCH,
    ) -> None:
        if not db.is_sqlite:
            raise ValueError("ProcessCommit is for SQLite")
        self.db = db
        self.refusals = refusals
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._closed = False
        self._tokens = itertools.count()
        self._waiting: dict[int, _Waiting] = {}
        self._child: _Child | None = None
        # Items handed over in this turn of each event loop, sent together at its end.
        self._gathering: dict[asyncio.AbstractEventLoop, list[tuple[int, Work[Any]]]] = {}
        db.on_dispose(self.close)
        _OPEN.add(self)

    async def run(self, work: Work[T], after_commit: AfterCommit[T] | None = None) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._closed:
                raise WriterClosed("the database is closed")
            token = next(self._tokens)
            self._waiting[token] = _Waiting(loop, future, after_commit)
            gathering = self._gathering.setdefault(loop, [])
            gathering.append((token, work))
            if len(gathering) == 1:
                # The items of the requests this loop handles in the same turn go together.
                loop.call_soon(self._flush, loop)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._hand_over(self._gathering.pop(loop, []))

    def _hand_over(self, items: list[tuple[int, Work[Any]]]) -> None:
        """Under the lock: to the sender of a running child (a new one if the last died)."""
        if items:
            self._running_child().outbox.put(items)

    def start(self) -> None:
        """Start the writer process now (``voxflow serve`` does, so that the first call does
        not wait for it)."""
        with self._lock:
            if not self._closed:
                self._running_child()

    def _running_child(self) -> _Child:
        child = self._child
        if child is None or child.gone:
            child = self._child = _Child(self)
        return child

    @property
    def pid(self) -> int | None:
        """The writer process's pid, once it runs."""
        child = self._child
        return child.process.pid if child is not None and not child.gone else None

    def close(self) -> None:
        """Finish the items queued so far, then stop the writer process."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for loop in list(self._gathering):  # not flushed yet: its loop may have ended
                self._hand_over(self._gathering.pop(loop))
            child = self._child
        if child is not None:
            child.stop()

    # Called by a child's threads.

    def _settle(self, results: list[tuple[int, _Outcome]]) -> None:
        with self._lock:
            waiting = [self._waiting.pop(token, None) for token, _ in results]
        done = [(w, o) for w, (_, o) in zip(waiting, results, strict=True) if w is not None]
        for w, outcome in done:
            _after(w.after_commit, outcome)
        _deliver([(w.loop, w.future) for w, _ in done], [o for _, o in done])

    def _fail(self, tokens: list[int], error: BaseException) -> None:
        self._settle([(token, _Outcome(error=error)) for token in tokens])


class _Child:
    """One writer process and the two threads that talk to it."""

    def __init__(self, owner: ProcessCommit) -> None:
        self.owner = owner
        self.gone = False  # set under the owner's lock: nothing is queued here after it
        self.outbox: queue.SimpleQueue[list[tuple[int, Work[Any]]] | None] = queue.SimpleQueue()
        self._in_flight: set[int] = set()
        self._flight_lock = threading.Lock()
        context = multiprocessing.get_context("spawn")
        here, there = context.Pipe(duplex=True)
        self.pipe = here
        self.process = context.Process(
            target=_child_main,
            args=(owner.db.url, there, owner.refusals, owner.max_batch),
            name="voxflow-api-writer",
            daemon=True,
        )
        self.process.start()
        there.close()
        log.info("writer process %d started", self.process.pid)
        self._sender = threading.Thread(target=self._send, name="voxflow-writer-send", daemon=True)
        self._receiver = threading.Thread(
            target=self._receive, name="voxflow-writer-receive", daemon=True
        )
        self._sender.start()
        self._receiver.start()

    def stop(self) -> None:
        """Called once nothing more can be queued: the child finishes what it has, then ends."""
        self.outbox.put(None)
        self._sender.join()
        self.process.join(timeout=STOP_TIMEOUT_S)
        if self.process.is_alive():  # it never answered the stop: do not hang the shutdown
            log.error("writer process %d did not stop; killing it", self.process.pid)
            self.process.kill()
            self.process.join()
        self._receiver.join()  # it ends at the pipe's end of file, now that the child is gone
        with contextlib.suppress(OSError):
            self.pipe.close()

    def _send(self) -> None:
        while True:
            first = self.outbox.get()
            items: list[tuple[int, Work[Any]]] = []
            stop = first is None
            if first is not None:
                items.extend(first)
            while not stop and len(items) < self.owner.max_batch:
                try:
                    more = self.outbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                else:
                    items.extend(more)
            if items:
                self._send_items(items)
            if stop:
                if not self.gone:
                    with contextlib.suppress(OSError):
                        self.pipe.send_bytes(pickle.dumps(_STOP))
                return

    def _send_items(self, items: list[tuple[int, Work[Any]]]) -> None:
        try:
            data = pickle.dumps(items)
        except Exception:  # one of them does not pickle: fail that one, send the others
            good: list[tuple[int, Work[Any]]] = []
            for token, work in items:
                try:
                    pickle.dumps(work)
                except Exception as exc:
                    self.owner._fail([token], TypeError(f"work does not pickle: {exc!r}"))
                else:
                    good.append((token, work))
            if not good:
                return
            items, data = good, pickle.dumps(good)
        tokens = [token for token, _ in items]
        with self._flight_lock:
            if not self.gone:
                self._in_flight.update(tokens)
        if self.gone:
            self.owner._fail(tokens, WriterProcessGone("the writer process ended"))
            return
        try:
            self.pipe.send_bytes(data)
        except OSError:
            self._gone()

    def _receive(self) -> None:
        while True:
            try:
                results: list[tuple[int, _Outcome]] = pickle.loads(  # noqa: S301 (our own pipe)
                    self.pipe.recv_bytes()
                )
            except (EOFError, OSError):
                self._gone()
                return
            with self._flight_lock:
                self._in_flight.difference_update(token for token, _ in results)
            self.owner._settle(results)

    def _gone(self) -> None:
        """The pipe closed: after a stop that is the end; otherwise the child died."""
        with self.owner._lock, self._flight_lock:
            first = not self.gone
            self.gone = True
            lost, self._in_flight = sorted(self._in_flight), set()
        if lost:
            log.error(
                "writer process %s ended with %d writes in flight", self.process.pid, len(lost)
            )
            self.owner._fail(lost, WriterProcessGone("the writer process ended"))
        if first:
            self.outbox.put(None)  # the sender fails what is still queued, then ends
