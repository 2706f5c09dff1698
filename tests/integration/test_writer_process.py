"""The API's writer in a process of its own (store.writer_process), on a real SQLite file.

Work items cross a socket, so they are module-level functions given by ``functools.partial``; a
file the test creates stands in for a threading.Event across the two processes.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, select

from voxflow.errors import ApiError
from voxflow.services.calls import LINK_DOES_NOT_EXIST, LINK_ID_EMPTY
from voxflow.store.db import Database
from voxflow.store.group_commit import WriterClosed, writer_for
from voxflow.store.writer_process import SEND_EVERY, ProcessCommit, WriterProcessGone

_meta = MetaData()
_rows = Table(
    "writer_process_test_rows",
    _meta,
    Column("id", Integer, primary_key=True),
    Column("name", String(32), nullable=False),
)
WAIT_S = 60  # a bound on waits for the other process, never reached when things work


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'voxflow.db'}")
    database.upgrade()
    _meta.create_all(database.engine)
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def writer(db: Database) -> Iterator[ProcessCommit]:
    w = writer_for(db, refusals=(ApiError,))
    assert isinstance(w, ProcessCommit)
    yield w
    w.close()


def names(db: Database) -> list[str]:
    with db.read() as conn:
        return list(conn.execute(select(_rows.c.name).order_by(_rows.c.id)).scalars())


def _insert(name: str, conn: Connection) -> tuple[str, int]:
    conn.execute(_rows.insert().values(name=name))
    return name, os.getpid()


def _insert_then_refuse(name: str, conn: Connection) -> None:
    conn.execute(_rows.insert().values(name=name))
    raise ApiError(LINK_DOES_NOT_EXIST, LINK_ID_EMPTY)


def _hold(started: str, release: str, conn: Connection) -> str:
    """Hold the writer (and its transaction) until ``release`` exists."""
    Path(started).touch()
    deadline = time.monotonic() + WAIT_S
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.002)
    return "held"


class _Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("cannot cross")
        self.lock = threading.Lock()  # a lock does not pickle


def _fail_unpicklably(conn: Connection) -> None:
    raise _Unpicklable


def _exit_now(conn: Connection) -> None:
    os._exit(3)  # the writer process dies in the middle of a batch


async def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.005)


def test_items_run_in_the_writer_process_and_come_back_after_their_commit(
    writer: ProcessCommit, db: Database
) -> None:
    async def main() -> list[bool]:
        seen = []
        for i in range(5):
            name, pid = await writer.run(functools.partial(_insert, f"n{i}"))
            assert pid != os.getpid() and pid == writer.pid
            seen.append(name in names(db))  # committed: another connection sees it
        return seen

    assert asyncio.run(main()) == [True] * 5


def test_a_refusal_comes_back_whole_and_costs_only_its_item(
    writer: ProcessCommit, db: Database, tmp_path: Path
) -> None:
    started, release = tmp_path / "started", tmp_path / "release"

    async def main() -> list[Any]:
        holder = asyncio.ensure_future(
            writer.run(functools.partial(_hold, str(started), str(release)))
        )
        await _wait_for(started)
        works = [
            functools.partial(_insert, "a"),
            functools.partial(_insert_then_refuse, "refused"),
            functools.partial(_insert, "c"),
        ]
        pending = [asyncio.ensure_future(writer.run(w)) for w in works]
        await asyncio.sleep(0.05)  # queued behind the holder: they form one batch
        release.touch()
        assert await holder == "held"
        return list(await asyncio.gather(*pending, return_exceptions=True))

    results = asyncio.run(main())
    assert results[0][0] == "a" and results[2][0] == "c"
    refusal = results[1]
    assert isinstance(refusal, ApiError)
    assert [(i.status, i.message) for i in refusal.items] == [
        (400, LINK_DOES_NOT_EXIST),
        (400, LINK_ID_EMPTY),
    ]
    assert names(db) == ["a", "c"]


def test_an_error_that_does_not_pickle_comes_back_as_its_text(
    writer: ProcessCommit, db: Database
) -> None:
    async def main() -> tuple[BaseException | None, tuple[str, int]]:
        failed = asyncio.ensure_future(writer.run(_fail_unpicklably))
        stored = asyncio.ensure_future(writer.run(functools.partial(_insert, "kept")))
        errors = await asyncio.gather(failed, return_exceptions=True)
        return errors[0], await stored

    error, (name, _) = asyncio.run(main())
    assert isinstance(error, RuntimeError)
    assert str(error) == "_Unpicklable('cannot cross')"
    assert name == "kept"  # the other item of its batch ran again alone
    assert names(db) == ["kept"]


def test_after_commit_runs_in_this_process(writer: ProcessCommit) -> None:
    seen: list[tuple[str, int]] = []

    async def main() -> None:
        await writer.run(functools.partial(_insert, "x"), seen.append)

    asyncio.run(main())
    assert seen == [("x", writer.pid)]


def test_the_writer_process_holds_the_databases_write_lock_file(
    writer: ProcessCommit, db: Database, tmp_path: Path
) -> None:
    """While the child is in a write transaction, the lock file next to the database is locked
    (this process's writers would queue on it); it is free again after the commit."""
    started, release = tmp_path / "started", tmp_path / "release"
    lock_path = str(db.engine.url.database) + ".write-lock"

    def try_lock() -> bool:
        fd = os.open(lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)  # closing drops a lock we took
        return True

    async def main() -> tuple[bool, bool]:
        holder = asyncio.ensure_future(
            writer.run(functools.partial(_hold, str(started), str(release)))
        )
        await _wait_for(started)
        during = try_lock()
        release.touch()
        await holder
        return during, try_lock()

    assert asyncio.run(main()) == (False, True)


def test_a_dead_writer_process_fails_its_items_and_a_new_one_takes_over(
    writer: ProcessCommit, db: Database
) -> None:
    async def main() -> None:
        first = writer.pid
        await writer.run(functools.partial(_insert, "before"))
        with pytest.raises(WriterProcessGone):
            await asyncio.wait_for(writer.run(_exit_now), WAIT_S)
        name, pid = await asyncio.wait_for(writer.run(functools.partial(_insert, "after")), WAIT_S)
        assert name == "after" and pid != first

    asyncio.run(main())
    assert names(db) == ["before", "after"]


def test_a_killed_writer_process_fails_what_is_in_flight(
    writer: ProcessCommit, db: Database, tmp_path: Path
) -> None:
    started, release = tmp_path / "started", tmp_path / "release"

    async def main() -> None:
        holder = asyncio.ensure_future(
            writer.run(functools.partial(_hold, str(started), str(release)))
        )
        await _wait_for(started)
        queued = asyncio.ensure_future(writer.run(functools.partial(_insert, "queued")))
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGKILL)
        for item in (holder, queued):
            with pytest.raises(WriterProcessGone):
                await asyncio.wait_for(item, WAIT_S)

    asyncio.run(main())
    assert names(db) == []  # the transaction never committed


def test_items_handed_over_in_one_turn_of_the_loop_and_not_sent_yet_go_before_close(
    writer: ProcessCommit, db: Database
) -> None:
    """close() from the loop's own thread, right after run() was called: the items are still
    gathered for the end of the turn, and close sends them before it stops the child."""

    async def main() -> list[Any]:
        pending = [
            asyncio.ensure_future(writer.run(functools.partial(_insert, str(i)))) for i in range(5)
        ]
        await asyncio.sleep(0)  # run() has gathered each item; the turn's flush has not run
        writer.close()
        done = list(await asyncio.gather(*pending))
        await asyncio.sleep(0.05)  # the turn's flush has run by now: it found nothing to send
        assert writer.pid is None  # and no new writer process was started for it
        return done

    assert [name for name, _ in asyncio.run(main())] == [str(i) for i in range(5)]
    assert names(db) == [str(i) for i in range(5)]


def test_a_turn_of_the_loop_sends_its_first_item_at_once_then_every_few(
    writer: ProcessCommit, db: Database
) -> None:
    """The child has nothing of this loop's: the first item goes at once, so that it does not
    idle while the turn goes on; the next SEND_EVERY go together as soon as they are gathered;
    the rest wait for the end of the turn."""
    count = 1 + SEND_EVERY + 3

    async def main() -> tuple[int, list[Any]]:
        pending = [
            asyncio.ensure_future(writer.run(functools.partial(_insert, str(i))))
            for i in range(count)
        ]
        await asyncio.sleep(0)  # each run() has handed its item over; the turn has not ended
        unsent = len(writer._channels[asyncio.get_running_loop()]._gathered)
        return unsent, list(await asyncio.gather(*pending))

    unsent, done = asyncio.run(main())
    assert unsent == 3
    assert [name for name, _ in done] == [str(i) for i in range(count)]
    assert names(db) == [str(i) for i in range(count)]


def test_close_finishes_what_is_queued_and_stops_the_process(
    writer: ProcessCommit, db: Database
) -> None:
    async def main() -> list[Any]:
        writer.start()  # as voxflow serve does
        pid = writer.pid
        assert pid is not None
        pending = [
            asyncio.ensure_future(writer.run(functools.partial(_insert, str(i)))) for i in range(20)
        ]
        await asyncio.sleep(0)  # every item is handed over (sent at the end of this turn)
        await asyncio.to_thread(writer.close)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the process has ended (and was reaped)
        return list(await asyncio.gather(*pending))

    results = asyncio.run(main())
    assert [name for name, _ in results] == [str(i) for i in range(20)]
    assert names(db) == [str(i) for i in range(20)]

    async def late() -> None:
        await writer.run(functools.partial(_insert, "late"))

    with pytest.raises(WriterClosed):
        asyncio.run(late())


def test_sigterm_to_the_process_group_does_not_stop_the_writer(writer: ProcessCommit) -> None:
    """The child ignores SIGTERM and SIGINT (a service manager or a terminal sends them to the
    whole group): it stops when its parent closes the pipe, after the queued items."""

    async def main() -> None:
        await writer.run(functools.partial(_insert, "first"))
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGTERM)
        os.kill(writer.pid, signal.SIGINT)
        name, _ = await asyncio.wait_for(writer.run(functools.partial(_insert, "second")), WAIT_S)
        assert name == "second"

    asyncio.run(main())


EXIT_SCRIPT = """
import asyncio, functools, sys
from voxflow.store.db import Database
from voxflow.store.group_commit import writer_for
from voxflow.errors import ApiError
sys.path.insert(0, {tests!r})
from integration.test_writer_process import _insert, _meta

db = Database({url!r})
_meta.create_all(db.engine)
writer = writer_for(db, refusals=(ApiError,))
print(asyncio.run(writer.run(functools.partial(_insert, "x")))[0], flush=True)
# No close(), no dispose(): the interpreter's exit must still end the writer process.
"""


def test_a_process_that_exits_without_closing_its_writer_still_exits(tmp_path: Path) -> None:
    """At exit multiprocessing terminates and joins its children; the child ignores SIGTERM, so
    without the module's exit handler the parent would wait for it for ever."""
    url = f"sqlite:///{tmp_path / 'voxflow.db'}"
    Database(url).upgrade()
    tests = str(Path(__file__).resolve().parents[1])
    script = EXIT_SCRIPT.format(tests=tests, url=url)
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=WAIT_S
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "x"


def _echo(payload: str, conn: Connection) -> tuple[int, int]:
    return len(payload), os.getpid()


def test_event_loops_of_two_threads_share_one_writer_process(writer: ProcessCommit) -> None:
    """Each loop has a channel of its own to the one child; the outcomes go back to their loop."""
    barrier = threading.Barrier(2)

    def in_thread(tag: str) -> list[tuple[str, int]]:
        async def main() -> list[tuple[str, int]]:
            barrier.wait()
            runs = [writer.run(functools.partial(_insert, f"{tag}{i}")) for i in range(20)]
            return list(await asyncio.gather(*runs))

        return asyncio.run(main())

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(in_thread, ["a", "b"])
    assert [name for name, _ in a] == [f"a{i}" for i in range(20)]
    assert [name for name, _ in b] == [f"b{i}" for i in range(20)]
    assert {pid for _, pid in a + b} == {writer.pid}


def test_a_loop_that_ended_without_closing_leaves_the_writer_working(
    writer: ProcessCommit, db: Database
) -> None:
    async def once(name: str) -> int:
        _, pid = await writer.run(functools.partial(_insert, name))
        return pid

    first = asyncio.run(once("first"))  # that loop is closed now, its channel left open
    assert asyncio.run(once("second")) == first  # a new channel to the same child
    # The closed loop's channel was ended when the new one opened, so the child, told to stop,
    # does not wait STOP_GRACE_S for it.
    assert len(writer._channels) == 1
    writer.close()
    assert names(db) == ["first", "second"]


def test_messages_larger_than_the_socket_buffer_cross_whole(writer: ProcessCommit) -> None:
    """Items the socket does not take at once wait in the channel's outbox for the loop to find
    the socket writable; the child reads each message whole."""
    big = "x" * (4 << 20)

    async def main() -> list[tuple[int, int]]:
        return list(
            await asyncio.gather(
                *(writer.run(functools.partial(_echo, big + str(i))) for i in range(3))
            )
        )

    assert [size for size, _ in asyncio.run(main())] == [len(big) + 1] * 3


def test_the_api_process_runs_no_thread_for_the_writer(writer: ProcessCommit) -> None:
    before = {t.ident for t in threading.enumerate()}

    async def main() -> None:
        for i in range(3):
            await writer.run(functools.partial(_insert, str(i)))

    asyncio.run(main())
    assert {t.ident for t in threading.enumerate()} <= before
