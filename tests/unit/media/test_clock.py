from __future__ import annotations

import asyncio

import pytest

from voxflow.media.clock import MediaClock, TickSchedule

PERIOD = 0.02


class FakeTime:
    """Time that only moves when the clock sleeps: to the deadline, plus any scripted delay."""

    def __init__(self, start: float = 1000.0, delays: dict[int, float] | None = None) -> None:
        self.now = start
        self.sleeps = 0
        self.delays = delays or {}  # sleep number -> how late that wake-up comes

    def time(self) -> float:
        return self.now

    async def sleep_until(self, deadline: float) -> None:
        self.now = max(self.now, deadline) + self.delays.get(self.sleeps, 0.0)
        self.sleeps += 1
        await asyncio.sleep(0)


class Recorder:
    def __init__(self, wanted: int) -> None:
        self.ticks: list[tuple[int, float]] = []
        self.wanted = wanted
        self.done = asyncio.Event()

    def on_tick(self, tick_index: int, now: float) -> None:
        if len(self.ticks) < self.wanted:  # the clock may run on until the test stops it
            self.ticks.append((tick_index, now))
        if len(self.ticks) >= self.wanted:
            self.done.set()


async def run_clock(fake: FakeTime, *recorders: Recorder, **kwargs: float) -> MediaClock:
    clock = MediaClock(time=fake.time, sleep_until=fake.sleep_until, **kwargs)  # type: ignore[arg-type]
    for recorder in recorders:
        clock.subscribe(recorder)
    clock.start()
    await asyncio.wait_for(recorders[0].done.wait(), timeout=10)
    await clock.stop()
    return clock


# ---------------------------------------------------------------- the pure schedule


def test_schedule_on_time() -> None:
    schedule = TickSchedule(10.0, PERIOD)
    assert list(schedule.due(10.0)) == [0]
    assert list(schedule.due(10.0)) == []
    assert list(schedule.due(10.019)) == []
    assert list(schedule.due(10.02)) == [1]
    assert schedule.deadline() == pytest.approx(10.04)


def test_schedule_catches_up_a_short_delay() -> None:
    schedule = TickSchedule(0.0, PERIOD, max_lag_ticks=5)
    schedule.due(0.0)
    assert list(schedule.due(0.075)) == [1, 2, 3]
    assert schedule.deadline() == pytest.approx(0.08)
    assert schedule.skipped == 0


def test_schedule_skips_after_a_stall() -> None:
    schedule = TickSchedule(0.0, PERIOD, max_lag_ticks=5)
    schedule.due(0.0)
    assert list(schedule.due(1.005)) == [50]  # ticks 1-49 are dropped, not burst out
    assert schedule.skipped == 49
    assert list(schedule.due(1.02)) == [51]


def test_schedule_deadlines_do_not_drift() -> None:
    schedule = TickSchedule(12345.678, PERIOD)
    for _ in range(500_000):  # almost three hours of ticks, each taken exactly at its deadline
        assert len(schedule.due(schedule.deadline())) == 1
    assert schedule.deadline() == pytest.approx(12345.678 + 500_000 * PERIOD, abs=1e-9)
    assert schedule.skipped == 0


# ---------------------------------------------------------------- the clock task, fake time


async def test_ticks_on_absolute_deadlines() -> None:
    fake = FakeTime(start=50.0)
    recorder = Recorder(wanted=100)
    clock = await run_clock(fake, recorder)
    assert [i for i, _ in recorder.ticks] == list(range(100))
    for index, now in recorder.ticks:
        assert now == pytest.approx(50.0 + index * PERIOD, abs=1e-9)
    assert clock.stats.ticks >= 100
    assert clock.stats.skipped == 0
    assert not clock.running


async def test_late_wake_is_caught_up_without_drift() -> None:
    fake = FakeTime(start=0.0, delays={10: 0.05})  # the wake-up for tick 11 comes 50 ms late
    recorder = Recorder(wanted=30)
    clock = await run_clock(fake, recorder)
    indexes = [i for i, _ in recorder.ticks]
    assert indexes == list(range(30))  # nothing lost: 2 extra ticks run back to back
    # Tick 11 (due at 0.22) wakes at 0.27, when ticks 12 (0.24) and 13 (0.26) are due too.
    burst = [i for i, now in recorder.ticks if now == pytest.approx(0.22 + 0.05)]
    assert burst == [11, 12, 13]
    # After the burst the grid is the original one: start + n * 20 ms.
    assert recorder.ticks[20][1] == pytest.approx(20 * PERIOD)
    assert clock.stats.late_ticks == 2
    assert clock.stats.max_lateness_s == pytest.approx(0.05)


async def test_long_stall_skips_and_counts() -> None:
    fake = FakeTime(start=0.0, delays={5: 1.0})  # a one-second stall after tick 5
    recorder = Recorder(wanted=12)
    clock = await run_clock(fake, recorder, max_lag_ticks=5)
    indexes = [i for i, _ in recorder.ticks]
    assert indexes[:6] == [0, 1, 2, 3, 4, 5]
    assert indexes[6] == 56  # 0.12 s + 1 s late: tick 56 is the current one
    assert indexes[7:] == list(range(57, 62))
    assert clock.stats.skipped == 50
    assert indexes == sorted(indexes)


async def test_one_failing_subscriber_does_not_stop_the_others() -> None:
    class Broken:
        calls = 0

        def on_tick(self, tick_index: int, now: float) -> None:
            self.calls += 1
            raise RuntimeError("boom")

    fake = FakeTime()
    broken = Broken()
    recorder = Recorder(wanted=5)
    clock = MediaClock(time=fake.time, sleep_until=fake.sleep_until)
    clock.subscribe(broken)
    clock.subscribe(recorder)
    clock.start()
    await recorder.done.wait()
    await clock.stop()
    assert broken.calls == 1
    assert clock.subscriber_count == 1
    assert len(recorder.ticks) >= 5


async def test_subscribe_and_unsubscribe_inside_a_tick() -> None:
    fake = FakeTime()
    late = Recorder(wanted=3)

    class Once:
        def __init__(self, clock: MediaClock) -> None:
            self.clock = clock
            self.ticks: list[int] = []

        def on_tick(self, tick_index: int, now: float) -> None:
            self.ticks.append(tick_index)
            self.clock.unsubscribe(self)
            self.clock.subscribe(late)

    clock = MediaClock(time=fake.time, sleep_until=fake.sleep_until)
    once = Once(clock)
    clock.subscribe(once)
    clock.subscribe(once)  # idempotent
    clock.start()
    clock.start()  # idempotent
    await late.done.wait()
    await clock.stop()
    await clock.stop()
    assert once.ticks == [0]
    assert [i for i, _ in late.ticks[:3]] == [1, 2, 3]  # joined during tick 0: from the next


# ---------------------------------------------------------------- real time, sanity only


async def test_real_time_ticks_are_monotonic_and_counted() -> None:
    clock = MediaClock()
    recorder = Recorder(wanted=10)
    clock.subscribe(recorder)
    clock.start()
    await asyncio.wait_for(recorder.done.wait(), timeout=30)
    await clock.stop()
    indexes = [i for i, _ in recorder.ticks]
    times = [now for _, now in recorder.ticks]
    assert indexes == sorted(set(indexes))
    assert times == sorted(times)
    assert clock.stats.ticks >= len(recorder.ticks)
    assert len(indexes) + clock.stats.skipped >= indexes[-1] + 1
