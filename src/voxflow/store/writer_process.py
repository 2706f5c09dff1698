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
  process, on the event loop of the item, right after;
- the child is started on first use and stopped by :meth:`ProcessCommit.close` (on the
  database's dispose) once the items sent are done. If it dies, the items in flight fail
  (their requests get a 500, and an Idempotency-Key repeat finds a call that did commit) and
  the next item starts a new child. The child ignores SIGINT and SIGTERM, which the process
  group may get: it stops when its parent tells it to or closes the control pipe, or dies.

**No threads in this process.** Each event loop that hands items over has a *channel* of its
own to the child: a Unix socket pair whose far end is passed to the child over the control pipe
(``SCM_RIGHTS``). The loop writes to its end without blocking and reads the outcomes when the
socket is readable (``add_reader``), so an outcome is handled in the loop's next turn, with no
thread to wake and no wait for the GIL on the way (threads that carried the items and outcomes
cost the API process a sixth of its CPU and, waiting for the GIL behind a busy loop, held
outcomes back for milliseconds). The items of one turn of a loop are gathered and sent together,
so that a burst of requests costs few picklings and writes: at the end of the turn, or as soon as
``SEND_EVERY`` are gathered, or at once when the child has none of this loop's items (else it
would idle while a turn that starts dozens of requests runs; bench/api_accept.py: 9.8k ->
10.3k accepted calls/s).

The child waits on the control pipe and every channel, takes what is there (up to
``max_batch`` items) from all of them, commits it as one batch and answers each channel.

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
import signal
import socket
import struct
import threading
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import recv_handle, send_handle
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
    _Outcome,
    _settle,
)

log = logging.getLogger("voxflow.store")


class WriterProcessGone(RuntimeError):
    """The writer process ended while this item was in flight (it may have been committed)."""


# Messages on the control pipe (parent to child).
_NEW_CHANNEL = b"channel"  # followed by the channel's socket, passed with send_handle
_STOP = b"stop"  # finish what the channels send until they end, then exit
STOP_TIMEOUT_S = 30.0  # how long a stopping child may take to finish its queue
# A stopping child waits this long for a channel that has not ended (whose loop never ran
# again to end it) before it exits anyway.
STOP_GRACE_S = 5.0

# multiprocessing.connection's framing: a 4-byte big-endian signed length, or -1 and 8 bytes.
_LENGTH = struct.Struct("!i")
_LONG_LENGTH = struct.Struct("!Q")
_READ_SIZE = 1 << 16
# Items gathered on a loop are sent once there are this many, without waiting for the end of
# the loop's turn (fewer: more picklings and writes per item; more: the child waits longer).
SEND_EVERY = 8

# Writers not closed yet. At exit, multiprocessing terminates (SIGTERM, which the child
# ignores) and then joins its children: a child still waiting for its parent's next message
# would hold the exit up for ever. So every open writer is closed first (atexit runs the
# handlers registered last first, and multiprocessing registered its own at import).
_OPEN: weakref.WeakSet[ProcessCommit] = weakref.WeakSet()


@atexit.register
def _close_open_writers() -> None:
    for writer in list(_OPEN):
        writer.close()


# An item's outcome on the wire: its token, its value and its error (a plain tuple pickles in a
# tenth of the time of an _Outcome).
_Answer = tuple[int, Any, BaseException | None]


def _portable(token: int, outcome: _Outcome) -> _Answer:
    """An outcome that pickles: an error that does not becomes a RuntimeError with its text."""
    error = outcome.error
    if error is not None:
        try:
            pickle.dumps(error)
        except Exception:
            error = RuntimeError(repr(error))
    return (token, outcome.value, error)


def _frame(data: bytes) -> bytes:
    """``data`` as one message that Connection.recv_bytes reads."""
    if len(data) > 0x7FFFFFFF:
        return _LENGTH.pack(-1) + _LONG_LENGTH.pack(len(data)) + data
    return _LENGTH.pack(len(data)) + data


# ---------------------------------------------------------------------------- the child


def _child_main(
    url: str, control: Connection, refusals: tuple[type[Exception], ...], max_batch: int
) -> None:
    """The writer process: items from every channel, committed in batches, outcomes back,
    until told to stop (and every channel has ended) or the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logs.setup()  # as the parent's (VOXFLOW_LOG_LEVEL is inherited)
    db = Database(url)
    batches = Batches(db, refusals=refusals)
    channels: list[Connection] = []
    stopping = False
    try:
        while channels or not stopping:
            waiting: list[Any] = channels if stopping else [control, *channels]
            ready: list[Any] = wait(waiting, timeout=STOP_GRACE_S if stopping else None)
            if not ready:  # stopping, and the channels left sent nothing for a while
                return
            items: list[tuple[Connection, int, Work[Any]]] = []
            ended: list[Connection] = []  # answered (the parent reads on), then closed
            for conn in ready:
                if conn is control:
                    stopping = _read_control(control, channels)
                elif not _read_channel(conn, items, max_batch):
                    channels.remove(conn)
                    ended.append(conn)
            if items:
                _commit_and_answer(batches, items, channels)
            for conn in ended:
                conn.close()
    finally:
        for conn in channels:
            conn.close()
        batches.close()
        db.engine.dispose()


def _read_control(control: Connection, channels: list[Connection]) -> bool:
    """New channels, and whether the parent asked to stop (or is gone)."""
    while True:
        try:
            message = control.recv_bytes()
            if message != _NEW_CHANNEL:
                return True
            channels.append(Connection(recv_handle(control)))
        except (EOFError, OSError):
            return True
        if not control.poll(0):
            return False


def _read_channel(
    conn: Connection, items: list[tuple[Connection, int, Work[Any]]], max_batch: int
) -> bool:
    """What the channel has sent (up to ``max_batch`` items in all); False at its end (the
    parent sends nothing more; the items read before it are answered all the same)."""
    try:
        while True:
            sent: list[tuple[int, Work[Any]]] = pickle.loads(conn.recv_bytes())  # noqa: S301
            items.extend((conn, token, work) for token, work in sent)
            if len(items) >= max_batch or not conn.poll(0):
                return True
    except (EOFError, OSError):
        return False


def _commit_and_answer(
    batches: Batches,
    items: list[tuple[Connection, int, Work[Any]]],
    channels: list[Connection],
) -> None:
    outcomes = batches.commit([work for _, _, work in items])
    answers: dict[Connection, list[_Answer]] = {}
    for (conn, token, _), outcome in zip(items, outcomes, strict=True):
        answers.setdefault(conn, []).append(_portable(token, outcome))
    for conn, answer in answers.items():
        try:
            conn.send_bytes(pickle.dumps(answer))
        except OSError:  # that channel's loop is gone
            if conn in channels:
                channels.remove(conn)
                conn.close()


# ---------------------------------------------------------------------------- the parent


@dataclass
class _Waiting:
    future: asyncio.Future[Any]
    after_commit: AfterCommit[Any] | None


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
        self._lock = threading.Lock()  # for the child and the channels: loops of any thread
        self._closed = False
        self._child: _Child | None = None
        self._channels: dict[asyncio.AbstractEventLoop, _Channel] = {}
        db.on_dispose(self.close)
        _OPEN.add(self)

    async def run(self, work: Work[T], after_commit: AfterCommit[T] | None = None) -> T:
        loop = asyncio.get_running_loop()
        channel = self._channels.get(loop)
        if channel is None or channel.ended:
            channel = self._open_channel(loop)
        return await channel.submit(work, after_commit)

    def _open_channel(self, loop: asyncio.AbstractEventLoop) -> _Channel:
        with self._lock:
            if self._closed:
                raise WriterClosed("the database is closed")
            for other in [c for c in self._channels.values() if c.loop.is_closed()]:
                other.abort()  # its loop ended without closing it: the child sees it end
                del self._channels[other.loop]
            channel = self._running_child().channel(loop)
            self._channels[loop] = channel
            return channel

    def start(self) -> None:
        """Start the writer process now (``voxflow serve`` does, so that the first call does
        not wait for it)."""
        with self._lock:
            if not self._closed:
                self._running_child()

    def _running_child(self) -> _Child:
        """Under the lock: the child, a new one if there is none or the last one died."""
        child = self._child
        if child is None or child.gone or not child.process.is_alive():
            if child is not None:
                child.reap()
            child = self._child = _Child(self)
        return child

    def _forget(self, channel: _Channel) -> None:
        with self._lock:
            if self._channels.get(channel.loop) is channel:
                del self._channels[channel.loop]

    @property
    def pid(self) -> int | None:
        """The writer process's pid, while it runs."""
        child = self._child
        return child.process.pid if child is not None and not child.gone else None

    def close(self) -> None:
        """Finish the items handed over so far, then stop the writer process."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            channels, self._channels = list(self._channels.values()), {}
            child = self._child
        for channel in channels:
            channel.finish_soon()
        if child is not None:
            child.stop()


class _Child:
    """One writer process and the parent's end of its control pipe."""

    def __init__(self, owner: ProcessCommit) -> None:
        self.owner = owner
        self.gone = False  # it died, or was told to stop
        context = multiprocessing.get_context("spawn")
        here, there = context.Pipe(duplex=True)  # a Unix socket pair: it can pass sockets
        self.control = here
        self.process = context.Process(
            target=_child_main,
            args=(owner.db.url, there, owner.refusals, owner.max_batch),
            name="voxflow-api-writer",
            daemon=True,
        )
        self.process.start()
        there.close()
        log.info("writer process %d started", self.process.pid)

    def channel(self, loop: asyncio.AbstractEventLoop) -> _Channel:
        """Under the owner's lock: a new channel for ``loop``, its far end sent to the child."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.control.send_bytes(_NEW_CHANNEL)
            send_handle(self.control, theirs.fileno(), self.process.pid)
        except OSError:
            ours.close()
            self.gone = True
            raise WriterProcessGone("the writer process ended") from None
        finally:
            theirs.close()  # the child has its own copy now
        return _Channel(self, loop, ours)

    def lost(self) -> None:
        """A channel ended without being closed: the child died."""
        with self.owner._lock:
            if self.gone:
                return
            self.gone = True
        log.error("writer process %s ended", self.process.pid)

    def stop(self) -> None:
        """Called once nothing more can be handed over: the child finishes what the channels
        send until each ends, then exits."""
        self.gone = True
        with contextlib.suppress(OSError):
            self.control.send_bytes(_STOP)
        self.process.join(timeout=STOP_TIMEOUT_S)
        if self.process.is_alive():  # it never answered the stop: do not hang the shutdown
            log.error("writer process %d did not stop; killing it", self.process.pid)
            self.process.kill()
            self.process.join()
        self.control.close()

    def reap(self) -> None:
        """A dead child: collect its exit status."""
        with contextlib.suppress(OSError):
            self.control.close()
        self.process.join(timeout=0)


class _Channel:
    """One event loop's socket to the writer process; used on that loop's thread only."""

    def __init__(self, child: _Child, loop: asyncio.AbstractEventLoop, sock: socket.socket):
        self.child = child
        self.loop = loop
        self.sock = sock
        self.ended = False
        self._finishing = False
        self._tokens = itertools.count()
        self._waiting: dict[int, _Waiting] = {}
        self._gathered: list[tuple[int, Work[Any]]] = []  # not sent yet (see submit)
        self._flush_at_turn_end = False
        self._outbox = bytearray()  # what the socket did not take yet
        self._inbox = bytearray()
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._readable)

    def submit(self, work: Work[T], after_commit: AfterCommit[T] | None) -> asyncio.Future[T]:
        future: asyncio.Future[T] = self.loop.create_future()
        token = next(self._tokens)
        self._waiting[token] = _Waiting(future, after_commit)
        self._gathered.append((token, work))
        gathered = len(self._gathered)
        if gathered >= SEND_EVERY or gathered == len(self._waiting):
            # Gathered enough, or the child has nothing of this loop's to do: it starts now
            # rather than idle until the end of the turn (a turn that starts many requests
            # lasts milliseconds).
            self._flush()
        elif not self._flush_at_turn_end:
            # The items of the requests this loop handles in the same turn go together.
            self._flush_at_turn_end = True
            self.loop.call_soon(self._turn_ended)
        return future

    def _turn_ended(self) -> None:
        self._flush_at_turn_end = False
        self._flush()

    # Sending.

    def _flush(self) -> None:
        items, self._gathered = self._gathered, []
        if not items or self.ended:
            return
        try:
            data = pickle.dumps(items)
        except Exception:  # one of them does not pickle: fail that one, send the others
            items = self._picklable(items)
            if not items:
                return
            data = pickle.dumps(items)
        self._outbox += _frame(data)
        self._send()

    def _picklable(self, items: list[tuple[int, Work[Any]]]) -> list[tuple[int, Work[Any]]]:
        good: list[tuple[int, Work[Any]]] = []
        for token, work in items:
            try:
                pickle.dumps(work)
            except Exception as exc:
                self._fail([token], TypeError(f"work does not pickle: {exc!r}"))
            else:
                good.append((token, work))
        return good

    def _send(self) -> None:
        try:
            sent = self.sock.send(self._outbox)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lost()
            return
        del self._outbox[:sent]
        if self._outbox:
            self.loop.add_writer(self.sock.fileno(), self._writable)

    def _writable(self) -> None:
        self.loop.remove_writer(self.sock.fileno())
        self._send()  # (_finish hands over what is left itself, so nothing ends here)

    # Receiving.

    def _readable(self) -> None:
        try:
            data = self.sock.recv(_READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost()
            return
        self._inbox += data
        for message in self._messages():
            self._settle(pickle.loads(message))  # noqa: S301 (our own child)

    def _messages(self) -> list[bytes]:
        found: list[bytes] = []
        box = self._inbox
        start = 0
        while len(box) - start >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(box, start)
            head = _LENGTH.size
            if size == -1:
                if len(box) - start < head + _LONG_LENGTH.size:
                    break
                (size,) = _LONG_LENGTH.unpack_from(box, start + head)
                head += _LONG_LENGTH.size
            if len(box) - start - head < size:
                break
            found.append(bytes(box[start + head : start + head + size]))
            start += head + size
        del box[:start]
        return found

    def _settle(self, results: list[_Answer]) -> None:
        pairs: list[tuple[asyncio.Future[Any], _Outcome]] = []
        for token, value, error in results:
            waiting = self._waiting.pop(token, None)
            if waiting is not None:
                outcome = _Outcome(value, error)
                _after(waiting.after_commit, outcome)
                pairs.append((waiting.future, outcome))
        _settle(pairs)
        if self._finishing and not self._waiting:
            self._end()

    def _fail(self, tokens: list[int], error: BaseException) -> None:
        self._settle([(token, None, error) for token in tokens])

    # Ending.

    def finish_soon(self) -> None:
        """From any thread: send what is gathered, then end the channel once its outcomes are
        in (the child then knows this loop sends nothing more)."""
        if self.loop.is_closed():
            self.abort()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self._finish()
            return
        with contextlib.suppress(RuntimeError):  # closed meanwhile: nobody waits on it
            self.loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if self.ended:
            return
        self._finishing = True
        self._flush()
        if self.ended:
            return
        if self._outbox:
            # close() may be waiting on this thread for the child: hand the rest over now.
            self.loop.remove_writer(self.sock.fileno())
            try:
                self.sock.setblocking(True)
                self.sock.sendall(self._outbox)
                self._outbox.clear()
                self.sock.setblocking(False)
            except OSError:
                self._lost()
                return
        self._end_writing()

    def _end_writing(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)  # the child reads the end after the last item
        if not self._waiting:
            self._end()

    def _lost(self) -> None:
        """The socket ended or failed before this channel was finished: the child died (or was
        stopped)."""
        if self.ended:
            return
        lost = sorted(self._waiting)
        if not self._finishing:
            self.child.lost()
        if lost:
            log.error(
                "writer process %s ended with %d writes in flight",
                self.child.process.pid,
                len(lost),
            )
            self._fail(lost, WriterProcessGone("the writer process ended"))
        self._end()

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        with contextlib.suppress(Exception):  # the loop may be closing
            self.loop.remove_reader(self.sock.fileno())
            self.loop.remove_writer(self.sock.fileno())
        self.sock.close()
        self.child.owner._forget(self)

    def abort(self) -> None:
        """Its loop is closed: nobody waits for its outcomes; the child sees the socket end."""
        self.ended = True
        with contextlib.suppress(OSError):
            self.sock.close()
