"""The dialer against the sandbox far end: HTTP initiateCall → store → dialer → record."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

from sqlalchemy import select

from tests.support import ApiClient, RunningServer, attach, make_flow, make_link, wrap, xml_of
from voxflow.clock import SystemClock
from voxflow.domain.calls import CallStatus
from voxflow.scheduling.dialer import Dialer, LegPlan
from voxflow.services.call_leases import CallLeases, Pacing
from voxflow.services.call_records import CallRecords, DueCall
from voxflow.store import tables as t
from voxflow.telephony.sandbox import SandboxLeg, SandboxSettings

FLOW = '<callFlow name="F"><call id="c" label="Agent" destinationPhoneNumber="441234"/></callFlow>'


class FakeClock:
    def __init__(self) -> None:
        # A moment after the calls of the test were accepted by the server's own clock.
        self.at = SystemClock().now() + timedelta(seconds=1)

    def now(self) -> datetime:
        return self.at


LEASE = timedelta(seconds=30)


def claim_and_dial(records: CallRecords, owner: str = "me/1") -> list[DueCall]:
    """Claim the due calls and move each to ``dialing``, as a dialer does before its INVITE."""
    leases = CallLeases(records.db, records.clock)
    claimed = leases.claim(
        owner, room=10, lease=LEASE, pacing=Pacing(trunks={}, default_trunk=None), max_lateness=None
    )
    return [c.call for c in claimed.claims if leases.start_dialing(c, owner, LEASE)]


def setup(server: RunningServer) -> ApiClient:
    server.create_account("sandy", sandbox=True)
    api = server.client("sandy")
    make_link(api)
    make_flow(api, FLOW)
    attach(api, "F", "link123")
    return api


def initiate(api: ApiClient, dest: str, delay: int = 0) -> str:
    body = wrap(
        "<link_id>link123</link_id><call_variables>"
        f"<call_destination>{dest}</call_destination><delay>{delay}</delay></call_variables>"
    )
    r = api.post("Calling", "initiateCall", body)
    assert r.status_code == 201, r.text
    return xml_of(r).findtext("call_id") or ""


def events_of(
    server: RunningServer, call_id: str
) -> tuple[str, list[tuple[str, dict[str, object]]]]:
    with server.db.read() as conn:
        call = conn.execute(select(t.calls).where(t.calls.c.call_id == call_id)).one()
        events = conn.execute(
            select(t.call_events.c.kind, t.call_events.c.detail)
            .where(t.call_events.c.call_pk == call.id)
            .order_by(t.call_events.c.id)
        ).all()
    return call.status, [(e.kind, json.loads(e.detail)) for e in events]


async def test_a_sandbox_call_goes_through_every_status_with_timed_keypresses(
    server: RunningServer,
) -> None:
    api = setup(server)
    call_id = initiate(api, "449789123123,12")
    legs: list[SandboxLeg] = []

    def factory(call: DueCall) -> LegPlan:
        assert call.sandbox and call.destination == "449789123123"
        legs.append(SandboxLeg(SandboxSettings(answer_after_s=0.05)))
        return LegPlan(legs[-1], hold_s=0.1)

    dialer = Dialer(CallRecords(server.db, FakeClock()), factory)
    assert await dialer.dial_due() == 1
    await asyncio.gather(*dialer.active)
    status, events = events_of(server, call_id)
    assert status == CallStatus.COMPLETED
    assert [kind for kind, _ in events] == [
        "queued",
        "dialing",
        "ringing",
        "answered",
        "keypress",
        "keypress",
        "completed",
    ]
    keypresses = [detail for kind, detail in events if kind == "keypress"]
    assert [(k["key"], k["planned_ms"]) for k in keypresses] == [("1", 2000.0), ("2", 2250.0)]
    assert all(0 <= float(str(k["error_ms"])) < 50 for k in keypresses)
    assert [key for key, _ in legs[0].received] == ["1", "2"]
    # Nothing is claimed twice.
    assert await dialer.dial_due() == 0


async def test_a_scheduled_call_waits_until_it_is_due(server: RunningServer) -> None:
    api = setup(server)
    call_id = initiate(api, "449789123123", delay=1)
    clock = FakeClock()
    placed: list[str] = []

    def factory(call: DueCall) -> LegPlan:
        placed.append(call.call_id)
        return LegPlan(SandboxLeg(SandboxSettings(answer_after_s=0)), hold_s=0)

    dialer = Dialer(CallRecords(server.db, clock), factory)
    assert await dialer.dial_due() == 0
    clock.at += timedelta(seconds=60)
    assert await dialer.dial_due() == 1
    await asyncio.gather(*dialer.active)
    assert placed == [call_id]
    assert events_of(server, call_id)[0] == CallStatus.COMPLETED


async def test_a_move_the_status_does_not_allow_is_refused(server: RunningServer) -> None:
    api = setup(server)
    call_id = initiate(api, "449789123123")
    records = CallRecords(server.db, FakeClock())
    [call] = claim_and_dial(records)
    assert call.call_id == call_id
    assert (
        records.move(call.pk, CallStatus.COMPLETED) is False
    )  # dialing → completed skips answered
    assert records.move(call.pk, CallStatus.BUSY, sip_code=486, sip_reason="Busy Here") is True
    assert records.move(call.pk, CallStatus.ANSWERED) is False  # final
    with server.db.read() as conn:
        row = conn.execute(select(t.calls).where(t.calls.c.id == call.pk)).one()
    assert (row.status, row.sip_code, row.result) == ("busy", 486, "BUSY")


async def test_a_link_can_name_its_trunk(server: RunningServer) -> None:
    api = setup(server)
    r = api.put(
        "Links", "updateLinks", wrap("<link><link_id>link123</link_id><trunk>eu</trunk></link>")
    )
    assert r.status_code == 204, r.text
    initiate(api, "449789123123")
    [call] = claim_and_dial(CallRecords(server.db, FakeClock()))
    assert call.trunk == "eu"
