"""The one 20 ms media clock that every RTP session of the process ticks on.

One asyncio task, not one timer per call: at tick ``n`` it wakes at the absolute deadline
``start + n * period`` (never "last wake + period", so lateness never accumulates into drift)
and calls every subscriber's ``on_tick(n, now)`` synchronously, in subscription order. A wake-up
that comes late runs the missed ticks back to back so the packet rate stays right on average; a
stall of more than ``max_lag_ticks`` (a blocked loop, a suspended VM) is not replayed as a burst:
the clock jumps to the current tick and counts the ticks it skipped.

:class:`TickSchedule` is the pure arithmetic; :class:`MediaClock` is the task around it. Both
take time from the outside (``time`` and ``sleep_until``) so tests run without real sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

# Subscribers served between two chances for the event loop to run due timers.
YIELD_EVERY = 32

log = logging.getLogger("voxflow.media.clock")

PERIOD_S = 0.020
MAX_LAG_TICKS = 5


class TickSubscriber(Protocol):
    def on_tick(self, tick_index: int, now: float) -> None:
        """Do this tick's work (send one frame); must not block."""
        ...


@dataclass
class ClockStats:
    ticks: int = 0  # ticks dispatched
    skipped: int = 0  # ticks dropped after a stall
    late_ticks: int = 0  # ticks dispatched a whole period or more after their deadline
    max_lateness_s: float = 0.0  # worst wake-up delay after a deadline


class TickSchedule:
    """Which tick indexes are due at a given time, on absolute deadlines from ``start``."""

    def __init__(
        self, start: float, period_s: float = PERIOD_S, max_lag_ticks: int = MAX_LAG_TICKS
    ) -> None:
        self.start = start
        self.period_s = period_s
        self.max_lag_ticks = max_lag_ticks
        self.next_index = 0
        self.skipped = 0

    def deadline(self, index: int | None = None) -> float:
        """The absolute time of tick ``index`` (by default the next one)."""
        return self.start + (self.next_index if index is None else index) * self.period_s

    def due(self, now: float) -> range:
        """The ticks to run now, in order; consumes them."""
        if now < self.deadline():
            return range(0)
        # floor() can land one short of an exact deadline; now >= deadline() said it is due.
        latest = max(math.floor((now - self.start) / self.period_s), self.next_index)
        behind = latest - self.next_index
        if behind > self.max_lag_ticks:
            self.skipped += behind
            self.next_index = latest
        ticks = range(self.next_index, latest + 1)
        self.next_index = latest + 1
        return ticks


class MediaClock:
    """The shared tick source. ``start()`` inside the running loop; ``await stop()`` at exit."""

    def __init__(
        self,
        *,
        period_s: float = PERIOD_S,
        max_lag_ticks: int = MAX_LAG_TICKS,
        time: Callable[[], float] | None = None,
        sleep_until: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.period_s = period_s
        self.max_lag_ticks = max_lag_ticks
        self._time = time
        self._sleep_until = sleep_until or _sleep_until
        self._subscribers: list[TickSubscriber] = []
        self._task: asyncio.Task[None] | None = None
        self._schedule: TickSchedule | None = None
        self.stats = ClockStats()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def time(self) -> float:
        """The clock's notion of now (the event loop's monotonic time unless injected)."""
        return self._time() if self._time is not None else asyncio.get_running_loop().time()

    def subscribe(self, subscriber: TickSubscriber) -> None:
        if subscriber not in self._subscribers:
            self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: TickSubscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def start(self) -> None:
        """Start ticking (idempotent); tick 0 is due immediately."""
        if self.running:
            return
        self._schedule = TickSchedule(self.time(), self.period_s, self.max_lag_ticks)
        self._task = asyncio.get_running_loop().create_task(self._run(self._schedule))

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task])  # unlike ``await task``, lets our own cancellation through

    async def _run(self, schedule: TickSchedule) -> None:
        while True:
            now = self.time()
            for index in schedule.due(now):
                await self._dispatch(schedule, index, now)
            self.stats.skipped = schedule.skipped
            await self._sleep_until(schedule.deadline())

    async def _dispatch(self, schedule: TickSchedule, index: int, now: float) -> None:
        lateness = now - schedule.deadline(index)
        self.stats.ticks += 1
        self.stats.max_lateness_s = max(self.stats.max_lateness_s, lateness)
        if lateness >= self.period_s:
            self.stats.late_ticks += 1
        for count, subscriber in enumerate(tuple(self._subscribers)):  # it may (un)subscribe
            if count and count % YIELD_EVERY == 0:
                # Let due timers run between slices of a large tick: a keypress planned for
                # now must not wait until every call's frame has gone out (~6 ms at 500 calls).
                await asyncio.sleep(0)
            try:
                subscriber.on_tick(index, now)
            except Exception:
                # One broken call must not silence every other call: drop it and carry on.
                log.exception(
                    "media clock subscriber failed; unsubscribed", extra={"action": "tick"}
                )
                self.unsubscribe(subscriber)


async def _sleep_until(deadline: float) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, deadline - loop.time()))
