"""The dialer's loop against the real store: woken at once by an accepted call (in process,
and across processes by LISTEN/NOTIFY on PostgreSQL), and its graceful stop."""

from __future__ import annotations

import asyncio
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from tests.integration.test_dialer_sandbox import FakeClock, events_of, initiate, setup
from tests.support import RunningServer
from voxflow.clock import SystemClock
from voxflow.domain.dispatch import TrunkPace
from voxflow.scheduling.dialer import Dialer, DialerSettings, LegPlan
from voxflow.services.call_leases import CallLeases, Pacing
from voxflow.services.call_records import CallRecords, DueCall
from voxflow.store import tables as t
from voxflow.store.db import Database
from voxflow.telephony.sandbox import SandboxLeg, SandboxSettings

# A dialer that would not look at the store again for an hour unless something wakes it.
SLEEPY = DialerSettings(recheck_s=3600)
# Generous: the call is placed within a second or so once the dialer is woken.
PLACED_WITHIN_S = 60


def quick(call: DueCall) -> LegPlan:
    return LegPlan(SandboxLeg(SandboxSettings(answer_after_s=0)), hold_s=0)


async def wait_status(server: RunningServer, call_id: str, status: str) -> None:
    async def poll() -> None:
        while (await asyncio.to_thread(events_of, server, call_id))[0] != status:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), PLACED_WITHIN_S)


async def first_round(dialer: Dialer) -> None:
    while dialer.last_round is None:
        await asyncio.sleep(0.01)


async def test_an_accepted_call_wakes_the_dialer_in_the_same_process(
    server: RunningServer,
) -> None:
    api = setup(server)
    dialer = Dialer(CallRecords(server.db, SystemClock()), quick, settings=SLEEPY)
    runner = asyncio.create_task(dialer.run())
    try:
        await first_round(dialer)  # now asleep for an hour
        call_id = await asyncio.to_thread(initiate, api, "441111")
        await wait_status(server, call_id, "completed")
    finally:
        await dialer.stop()
        await runner


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
async def test_notify_wakes_a_dialer_in_another_process(server: RunningServer) -> None:
    api = setup(server)
    # The dialer's own connection pool, as in another process: the API's in-process
    # announcement does not reach it, only NOTIFY does.
    elsewhere = Database(server.db.url)
    dialer = Dialer(
        CallRecords(elsewhere, SystemClock()), quick, settings=SLEEPY, listen_url=elsewhere.url
    )
    runner = asyncio.create_task(dialer.run())
    try:
        await first_round(dialer)
        await asyncio.sleep(0.5)  # LISTEN is issued by its own task; give it its moment
        call_id = await asyncio.to_thread(initiate, api, "441111")
        await wait_status(server, call_id, "completed")
    finally:
        await dialer.stop()
        await runner
        elsewhere.dispose()


async def test_stop_releases_claims_still_waiting_for_their_slot(server: RunningServer) -> None:
    api = setup(server)
    with server.db.write() as conn:
        conn.execute(t.accounts.update().values(sandbox=False))
    first, second = initiate(api, "441111"), initiate(api, "442222")
    pacing = Pacing(
        trunks={"slow": TrunkPace(cps=0.01, max_calls=10)},  # one call per 100 s
        default_trunk="slow",
        horizon=timedelta(seconds=200),
    )
    dialer = Dialer(CallRecords(server.db, FakeClock()), quick, pacing=pacing)
    assert await dialer.dial_due() == 2
    await wait_status(server, first, "completed")
    [(pk, waiting)] = list(dialer.waiting.items())  # the second waits ~100 s for its slot
    await dialer.stop()
    assert waiting.done()
    status, events = events_of(server, second)
    assert status == "queued" and [k for k, _ in events] == ["queued", "released"]
    with server.db.read() as conn:
        owner = conn.execute(select(t.calls.c.lease_owner).where(t.calls.c.id == pk)).scalar()
    assert owner is None


async def test_stop_hangs_up_calls_that_outlive_the_grace_and_says_so(
    server: RunningServer,
) -> None:
    api = setup(server)
    call_id = initiate(api, "441111")
    legs: list[SandboxLeg] = []

    def long(call: DueCall) -> LegPlan:
        legs.append(SandboxLeg(SandboxSettings(answer_after_s=0)))
        return LegPlan(legs[-1], hold_s=3600)

    dialer = Dialer(
        CallRecords(server.db, FakeClock()), long, settings=DialerSettings(shutdown_s=0.1)
    )
    await dialer.dial_due()
    await wait_status(server, call_id, "answered")
    await dialer.stop()
    status, events = events_of(server, call_id)
    assert status == "completed"
    assert events[-1] == (
        "completed",
        {
            "by": dialer.owner,
            "hangup": "shutdown",
            "reason": "hung up at shutdown: the call outlived shutdown_s (0.1 s)",
        },
    )
    assert legs[0]._hung_up.is_set()


async def test_catch_up_dials_oldest_first_at_the_trunks_pace(server: RunningServer) -> None:
    api = setup(server)
    with server.db.write() as conn:
        conn.execute(t.accounts.update().values(sandbox=False))
    clock = FakeClock()
    made = [initiate(api, f"4480{i}", delay=1) for i in range(5)]
    # They fell due while the dialer was away, in this order: 4, 2, 0, 3, 1.
    for call_id, ago in zip(made, (30, 10, 40, 20, 50), strict=True):
        with server.db.write() as conn:
            conn.execute(
                t.calls.update()
                .where(t.calls.c.call_id == call_id)
                .values(due_at=clock.at - timedelta(seconds=ago))
            )
    pacing = Pacing(trunks={"t": TrunkPace(cps=20, max_calls=10)}, default_trunk="t")
    dialer = Dialer(CallRecords(server.db, clock), quick, pacing=pacing)
    while await dialer.dial_due():  # each round claims what is within the 1 s horizon
        pass
    await asyncio.gather(*dialer.active)
    dialing = {}
    for call_id in made:
        status, events = events_of(server, call_id)
        assert status == "completed"
        [detail] = [d for kind, d in events if kind == "dialing"]
        dialing[call_id] = detail
    order = sorted(made, key=lambda c: datetime.fromisoformat(str(dialing[c]["slot"])))
    assert order == [made[4], made[2], made[0], made[3], made[1]]
    slots = [datetime.fromisoformat(str(dialing[c]["slot"])) for c in order]
    assert [b - a for a, b in itertools.pairwise(slots)] == [timedelta(milliseconds=50)] * 4
    assert slots[0] == clock.at
    # The wait from due to dialing is on the record: at least the time it fell due before.
    assert dialing[made[4]]["queue_wait_ms"] >= 50_000


async def test_two_dialers_on_one_store_place_every_call_exactly_once(
    server: RunningServer,
) -> None:
    api = setup(server)
    made = [initiate(api, f"449{i:03d}") for i in range(40)]
    placed: list[str] = []

    def counting(call: DueCall) -> LegPlan:
        placed.append(call.call_id)
        return quick(call)

    # Each with its own connection pool, as two processes would have.
    pools = [Database(server.db.url) for _ in range(2)]
    dialers = [
        Dialer(CallRecords(db, SystemClock()), counting, settings=DialerSettings(max_calls=7))
        for db in pools
    ]
    runners = [asyncio.create_task(d.run()) for d in dialers]
    try:
        for call_id in made:
            await wait_status(server, call_id, "completed")
    finally:
        for dialer, runner in zip(dialers, runners, strict=True):
            await dialer.stop()
            await runner
        for db in pools:
            db.dispose()
    assert sorted(placed) == sorted(made)
    owners = set()
    for call_id in made:
        dialing = [d for kind, d in events_of(server, call_id)[1] if kind == "dialing"]
        assert len(dialing) == 1
        owners.add(str(dialing[0]["by"]))
    assert owners <= {d.owner for d in dialers}


async def test_renewed_leases_keep_a_long_call_from_being_reconciled(
    server: RunningServer,
) -> None:
    api = setup(server)
    call_id = initiate(api, "441111")
    clock = FakeClock()

    def long(call: DueCall) -> LegPlan:
        return LegPlan(SandboxLeg(SandboxSettings(answer_after_s=0)), hold_s=3600)

    dialer = Dialer(CallRecords(server.db, clock), long)  # lease_s 30
    other = CallLeases(server.db, clock)

    def other_round() -> int:
        return other.claim(
            "other/1",
            room=10,
            lease=timedelta(seconds=30),
            pacing=Pacing({}, None),
            max_lateness=None,
        ).reconciled

    await dialer.dial_due()
    await wait_status(server, call_id, "answered")
    for _ in range(3):  # 75 s of call, renewed every 25 s
        clock.at += timedelta(seconds=25)
        assert await dialer.renew() == 1
        assert other_round() == 0
    clock.at += timedelta(seconds=31)  # this dialer stopped renewing (as if it died)
    assert other_round() == 1
    assert events_of(server, call_id)[0] == "unknown"
    await dialer.stop(grace_s=0)


async def test_a_due_call_moves_to_dialing_while_the_recording_writer_is_busy(
    server: RunningServer,
) -> None:
    """Claim rounds and moves to ``dialing`` run on the dialer's own threads: a backlog of
    bookkeeping writes (status moves and events of calls in progress, on their own writer) or a
    busy default executor does not hold up the INVITE of a call that is due."""
    api = setup(server)
    call_id = initiate(api, "441111")
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(2))
    dialer = Dialer(CallRecords(server.db, SystemClock()), quick, settings=SLEEPY)
    release = threading.Event()
    blockers = [loop.run_in_executor(None, release.wait) for _ in range(2)]
    # The recording writer's thread is stuck right after a commit: what is written for calls in
    # progress queues up behind it.
    stuck = dialer._recording.run(lambda _conn: None, lambda _value: release.wait())
    blockers.append(loop.create_task(stuck))
    try:
        assert await asyncio.wait_for(dialer.dial_due(), PLACED_WITHIN_S) == 1

        async def dialing() -> None:
            while True:
                with server.db.read() as conn:
                    status = conn.execute(
                        select(t.calls.c.status).where(t.calls.c.call_id == call_id)
                    ).scalar_one()
                if status != "queued":
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(dialing(), PLACED_WITHIN_S)
        assert not any(b.done() for b in blockers)  # every other thread was busy all along
    finally:
        release.set()
        await asyncio.gather(*blockers)
        await wait_status(server, call_id, "completed")
        await dialer.stop()
