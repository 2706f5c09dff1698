from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from voxflow.sip.wheel import TimerWheel


@dataclass
class FakeHandle:
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeLoop:
    """Just enough of an event loop: ``time`` and ``call_at``, run by ``advance``."""

    now: float = 100.0
    early: float = 0.0  # wake timers this much before their time, as uvloop may
    late_by: float = 0.0  # run callbacks this much after their time: a busy loop
    wakes: int = 0
    pending: list[tuple[float, int, FakeHandle, Callable[[], None]]] = field(default_factory=list)
    seq: itertools.count[int] = field(default_factory=itertools.count)

    def time(self) -> float:
        return self.now

    def call_at(self, at: float, callback: Callable[[], None]) -> FakeHandle:
        handle = FakeHandle()
        heapq.heappush(self.pending, (at - self.early, next(self.seq), handle, callback))
        return handle

    def armed(self) -> int:
        return sum(1 for *_, handle, _cb in self.pending if not handle.cancelled)

    def advance(self, to: float) -> None:
        while self.pending and self.pending[0][0] <= to:
            at, _, handle, callback = heapq.heappop(self.pending)
            self.now = at + self.late_by
            if not handle.cancelled:
                self.wakes += 1
                callback()
        self.now = to


def wheel(loop: FakeLoop, fired: list[tuple[str, float]]) -> TimerWheel[str]:
    def fire(item: str) -> None:
        fired.append((item, loop.now))

    return TimerWheel(loop, fire)  # type: ignore[arg-type]


def test_fires_in_order_at_most_a_millisecond_early_and_one_slot_late() -> None:
    loop, fired = FakeLoop(), []
    timers = wheel(loop, fired)
    for item, delay in [("b", 0.5), ("a", 0.1234), ("c", 32.0), ("d", 0.5)]:
        timers.start(item, loop.now + delay)
    assert loop.armed() == 1  # one loop timer, for the earliest slot
    loop.advance(200.0)
    assert [item for item, _ in fired] == ["a", "b", "d", "c"]
    wanted = {"a": 100.1234, "b": 100.5, "c": 132.0, "d": 100.5}
    for item, at in fired:
        assert wanted[item] - 0.001 <= at <= wanted[item] + 0.01
    assert len(timers) == 0 and loop.armed() == 0


def test_a_loop_timer_that_wakes_a_little_early_fires_its_slot_at_once() -> None:
    loop, fired = FakeLoop(early=0.0009), []
    timers = wheel(loop, fired)
    timers.start("a", 100.5)
    loop.advance(101.0)
    assert [item for item, _ in fired] == ["a"] and loop.wakes == 1  # no spinning till 100.5


def test_a_congested_loop_reads_before_the_wheel_fires() -> None:
    loop, fired = FakeLoop(late_by=0.2), []
    timers = wheel(loop, fired)
    timers.start("a", 100.5)
    timers.start("b", 100.5)
    loop.advance(100.8)  # woke at 100.7, 200 ms late: waits 200 ms more, fires nothing yet
    assert fired == [] and len(timers) == 2
    timers.stop("a")  # meanwhile the loop read the response that stops "a"
    loop.advance(102.0)
    assert [item for item, _ in fired] == ["b"]  # the second wake fires, however late it is
    assert fired[0][1] == pytest.approx(101.1)
    loop.late_by = 0.0
    timers.start("c", 102.5)  # on time again: no waiting
    loop.advance(103.0)
    assert fired[-1] == ("c", pytest.approx(102.5))


def test_stop_and_restart() -> None:
    loop, fired = FakeLoop(), []
    timers = wheel(loop, fired)
    timers.start("a", 101.0)
    timers.start("b", 101.0)
    timers.stop("a")
    timers.stop("a")  # twice, or never started: nothing happens
    timers.stop("zzz")
    timers.start("b", 103.0)  # a restart replaces the earlier deadline
    timers.start("c", 100.5)  # earlier than the armed slot: the loop timer moves
    loop.advance(102.0)
    assert fired == [("c", 100.5)]
    loop.advance(104.0)
    assert fired == [("c", 100.5), ("b", 103.0)]


def test_a_firing_timer_may_start_and_stop_others() -> None:
    loop, fired = FakeLoop(), []
    timers: TimerWheel[str]

    def fire(item: str) -> None:
        fired.append((item, loop.now))
        if item == "a":
            timers.stop("b")  # due in the same slot
            timers.start("now", loop.now)  # due at once: fired in this same run
            timers.start("later", loop.now + 1)

    timers = TimerWheel(loop, fire)  # type: ignore[arg-type]
    timers.start("a", 100.5)
    timers.start("b", 100.5)
    loop.advance(100.5)
    assert [item for item, _ in fired] == ["a", "now"]
    loop.advance(102.0)
    assert [item for item, _ in fired] == ["a", "now", "later"]
    assert loop.armed() == 0


def test_a_failing_timer_does_not_stop_the_others(caplog: object) -> None:
    loop, fired = FakeLoop(), []

    def fire(item: str) -> None:
        if item == "bad":
            raise RuntimeError("boom")
        fired.append((item, loop.now))

    timers: TimerWheel[str] = TimerWheel(loop, fire)  # type: ignore[arg-type]
    timers.start("bad", 100.1)
    timers.start("good", 100.1)
    timers.start("later", 101.0)
    loop.advance(102.0)
    assert [item for item, _ in fired] == ["good", "later"]


async def test_on_a_real_event_loop() -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[list[tuple[str, float]]] = loop.create_future()
    fired: list[tuple[str, float]] = []
    wanted: dict[str, float] = {}

    def fire(item: str) -> None:
        fired.append((item, loop.time()))
        if len(fired) == 3:
            done.set_result(fired)

    timers: TimerWheel[str] = TimerWheel(loop, fire)
    for item, delay in [("x", 0.03), ("y", 0.01), ("z", 0.02)]:
        wanted[item] = loop.time() + delay
        timers.start(item, wanted[item])
    got = await done
    assert [item for item, _ in got] == ["y", "z", "x"]
    assert all(at >= wanted[item] - 0.001 for item, at in got)
    timers.close()
