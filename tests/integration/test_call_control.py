"""getCall, getCalls and cancelCall over real HTTP, with the sandbox dialer for calls in progress."""

from __future__ import annotations

import asyncio

from tests.integration.test_dialer_sandbox import FakeClock, claim_and_dial, initiate, setup
from tests.support import ApiClient, RunningServer, errors_of, rows_of, wrap, xml_of
from voxflow.scheduling.dialer import Dialer, LegPlan
from voxflow.services.call_records import CallRecords, DueCall
from voxflow.telephony.sandbox import SandboxLeg, SandboxSettings


def cancel(api: ApiClient, call_id: str) -> int:
    r = api.put("Calling", "cancelCall", wrap(f"<call_id>{call_id}</call_id>"))
    return r.status_code if r.status_code == 204 else -1


def test_get_call_shows_status_and_events(server: RunningServer) -> None:
    api = setup(server)
    call_id = initiate(api, "449789123123,,1", delay=5)
    call = xml_of(api.get("Calling", "getCall", call_id=call_id)).find("call")
    assert call is not None
    assert (
        call.findtext("status") == "scheduled" and call.findtext("dial_string") == "449789123123,,1"
    )
    assert [e.findtext("kind") for e in call.findall("events/event")] == ["scheduled"]
    assert call.findtext("events/event/details/delay_minutes") == "5"


def test_get_calls_filters_and_pages(server: RunningServer) -> None:
    api = setup(server)
    first = initiate(api, "441111")
    initiate(api, "442222", delay=3)
    rows = rows_of(api.get("Calling", "getCalls"))
    assert [r["call_destination"] for r in rows] == ["442222", "441111"]  # newest first
    assert [r["call_id"] for r in rows_of(api.get("Calling", "getCalls", status="queued"))] == [
        first
    ]
    assert (
        rows_of(api.get("Calling", "getCalls", call_destination="442222"))[0]["status"]
        == "scheduled"
    )
    assert errors_of(api.get("Calling", "getCalls", status="lost")) == ["Status Invalid"]
    assert errors_of(api.get("Calling", "getCalls", sdt="yesterday")) == ["Start Date Invalid"]
    assert len(rows_of(api.get("Calling", "getCalls", limit="1", page="2"))) == 1


def test_cancel_a_call_that_has_not_started(server: RunningServer, api_b: ApiClient) -> None:
    api = setup(server)
    call_id = initiate(api, "441111", delay=30)
    assert errors_of(api_b.put("Calling", "cancelCall", wrap(f"<call_id>{call_id}</call_id>"))) == [
        "Call ID does not exist"
    ]
    assert cancel(api, call_id) == 204
    assert (
        xml_of(api.get("Calling", "getCall", call_id=call_id)).findtext("call/status")
        == "cancelled"
    )
    r = api.put("Calling", "cancelCall", wrap(f"<call_id>{call_id}</call_id>"))
    assert errors_of(r) == [f"Call ID {call_id} cannot be cancelled"]
    assert errors_of(api.put("Calling", "cancelCall", wrap("<call_id>nope</call_id>"))) == [
        "Call ID does not exist"
    ]
    assert errors_of(api.get("Calling", "getCall")) == ["Call ID Empty"]
    # Nothing cancelled is ever dialled.
    assert claim_and_dial(CallRecords(server.db, FakeClock())) == []


async def test_cancel_a_call_in_progress_hangs_it_up(server: RunningServer) -> None:
    api = setup(server)
    call_id = initiate(api, "441111")
    legs: list[SandboxLeg] = []

    def factory(call: DueCall) -> LegPlan:
        legs.append(SandboxLeg(SandboxSettings(answer_after_s=0.01)))
        return LegPlan(legs[-1], hold_s=60)

    dialer = Dialer(CallRecords(server.db, FakeClock()), factory)
    await dialer.dial_due()
    for _ in range(200):  # until it is answered and held
        status = xml_of(await asyncio.to_thread(api.get, "Calling", "getCall", call_id=call_id))
        if status.findtext("call/status") == "answered":
            break
        await asyncio.sleep(0.02)
    assert await asyncio.to_thread(cancel, api, call_id) == 204
    assert await dialer.cancel_requested() == 1
    await asyncio.gather(*dialer.active)
    call = xml_of(await asyncio.to_thread(api.get, "Calling", "getCall", call_id=call_id))
    assert (
        call.findtext("call/status") == "cancelled" and call.findtext("call/result") == "CANCELLED"
    )
    kinds = [e.findtext("kind") for e in call.findall("call/events/event")]
    assert kinds[-2:] == ["cancel-requested", "cancelled"]
    assert legs[0]._hung_up.is_set()
