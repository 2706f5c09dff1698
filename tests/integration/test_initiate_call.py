from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from tests.support import (
    ApiClient,
    RunningServer,
    attach,
    errors_of,
    make_flow,
    make_link,
    wrap,
    xml_of,
)
from voxflow.store import tables as t

FLOW = (
    '<callFlow name="Agent"><call id="call_1" label="Call" destinationPhoneNumber="?" '
    'destinationContactId="?"/>'
    '<httpRequest id="h" label="Hook" url="https://crm.test/$customer_id">'
    '<params><param name="who" value="$first_name"/><param name="id" value="$_call_id"/></params>'
    "</httpRequest></callFlow>"
)
AGENT_NUMBER = (
    "<rules_variable><rule><rule_id>call_1</rule_id><contact><phone_number>$agent_number"
    "</phone_number></contact></rule></rules_variable>"
)


def initiate(
    link_id: str = "link123", dest: str | None = "449789123123,,1,,2", **extra: str
) -> str:
    variables = "" if dest is None else f"<call_destination>{dest}</call_destination>"
    variables += "".join(f"<{k}>{v}</{k}>" for k, v in extra.items())
    return wrap(f"<link_id>{link_id}</link_id><call_variables>{variables}</call_variables>")


@pytest.fixture
def ready(api: ApiClient) -> ApiClient:
    make_link(api)
    make_flow(api, FLOW)
    attach(api, "Agent", "link123", rules_variable=AGENT_NUMBER)
    return api


ALL_VARS = {"customer_id": "c42", "first_name": "Bob", "agent_number": "441234"}


def calls_in(server: RunningServer) -> list[dict[str, object]]:
    with server.db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(select(t.calls).order_by(t.calls.c.id))]


def test_accepted_call_is_stored_with_everything_needed_to_place_it(
    ready: ApiClient, server: RunningServer
) -> None:
    r = ready.post("Calling", "initiateCall", initiate(**ALL_VARS))
    assert r.status_code == 201, r.text
    body = xml_of(r)
    assert body.findtext("status") == "queued"
    call_id = body.findtext("call_id")
    [call] = calls_in(server)
    assert call["call_id"] == call_id and call["status"] == "queued"
    assert call["destination"] == "449789123123"
    assert json.loads(str(call["keypresses"])) == [
        {"key": "1", "pauses": 2, "run_index": 0},
        {"key": "2", "pauses": 4, "run_index": 0},
    ]
    assert json.loads(str(call["variables"]))["first_name"] == "Bob"
    assert 'destinationPhoneNumber="$agent_number"' in str(call["flow_xml"])
    assert "?" not in str(call["flow_xml"])
    assert body.findtext("scheduled_for") == str(call["due_at"])[:19]


def test_delay_schedules_the_call(ready: ApiClient, server: RunningServer) -> None:
    r = ready.post("Calling", "initiateCall", initiate(delay="30", **ALL_VARS))
    assert r.status_code == 201
    assert xml_of(r).findtext("status") == "scheduled"
    [call] = calls_in(server)
    due, created = call["due_at"], call["created_at"]
    assert isinstance(due, datetime) and isinstance(created, datetime)
    assert due - created == timedelta(minutes=30)
    due_text = xml_of(r).findtext("scheduled_for")
    assert due_text == due.strftime("%Y-%m-%d %H:%M:%S")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (wrap("<call_variables><x>1</x></call_variables>"), ["Link ID Empty"]),
        (initiate("nope", **ALL_VARS), ["Link ID does not exist"]),
        (initiate("bare", **ALL_VARS), ["Link ID has no Calling Rules"]),
        (
            initiate(dest=None),
            [
                "Call Variable call_destination Empty",
                "Call Variable agent_number Empty",
                "Call Variable customer_id Empty",
                "Call Variable first_name Empty",
            ],
        ),
        (initiate(dest="", **ALL_VARS), ["Call Variable call_destination Empty"]),
        (initiate(dest="+449789", **ALL_VARS), ["Call Destination Invalid"]),
        (initiate(dest="4497,1x", **ALL_VARS), ["Call Destination Invalid"]),
        (initiate(dest="1" * 21, **ALL_VARS), ["Call Destination Invalid"]),
        (initiate(delay="-1", **ALL_VARS), ["Call Variable delay Invalid"]),
        (initiate(delay="43201", **ALL_VARS), ["Call Variable delay Invalid"]),
        (initiate(delay="1.5", **ALL_VARS), ["Call Variable delay Invalid"]),
        (
            initiate(customer_id="c1", first_name="", agent_number="1", delay="x"),
            ["Call Variable first_name Empty", "Call Variable delay Invalid"],
        ),
    ],
)
def test_initiate_call_errors(
    ready: ApiClient, server: RunningServer, body: str, expected: list[str]
) -> None:
    make_link(ready, "bare")
    r = ready.post("Calling", "initiateCall", body)
    assert r.status_code == 400
    assert errors_of(r) == expected
    assert calls_in(server) == []


def test_limits_of_delay_are_accepted(ready: ApiClient) -> None:
    for delay in ("0", "43200"):
        assert (
            ready.post("Calling", "initiateCall", initiate(delay=delay, **ALL_VARS)).status_code
            == 201
        )


def test_unset_link_values_are_refused_before_anything_is_stored(
    api: ApiClient, server: RunningServer
) -> None:
    make_link(api)
    make_flow(api, FLOW)
    attach(api, "Agent", "link123")
    r = api.post("Calling", "initiateCall", initiate(customer_id="c", first_name="B"))
    assert errors_of(r) == ["Rule ID call_1 has no value for phone_number on this Link"]
    assert calls_in(server) == []


def test_blocked_destination_is_refused(ready: ApiClient, server: RunningServer) -> None:
    r = ready.post(
        "Rules",
        "createBlockedNumbers",
        wrap(
            "<blocked_number><number>33</number><in_or_out>OUT</in_or_out>"
            "<operator>STARTSWITH</operator><default>BLOCK</default></blocked_number>"
        ),
    )
    assert r.status_code == 201, r.text
    r = ready.post("Calling", "initiateCall", initiate(dest="33123456,1", **ALL_VARS))
    assert errors_of(r) == ["Call Destination 33123456 is blocked"]
    assert (
        ready.post("Calling", "initiateCall", initiate(dest="34123456", **ALL_VARS)).status_code
        == 201
    )
    assert [c["destination"] for c in calls_in(server)] == ["34123456"]


def test_idempotency_key_replays_the_first_answer(ready: ApiClient, server: RunningServer) -> None:
    body = initiate(**ALL_VARS)
    key = {"Idempotency-Key": "order-77"}
    first = ready.post("Calling", "initiateCall", body, headers=key)
    again = ready.post("Calling", "initiateCall", body, headers=key)
    assert first.status_code == again.status_code == 201
    assert xml_of(first).findtext("call_id") == xml_of(again).findtext("call_id")
    other = ready.post("Calling", "initiateCall", initiate(delay="5", **ALL_VARS), headers=key)
    assert other.status_code == 409
    assert errors_of(other) == ["Idempotency-Key already used with a different request"]
    assert len(calls_in(server)) == 1


def test_idempotency_key_under_concurrency_places_one_call(
    ready: ApiClient, server: RunningServer
) -> None:
    body = initiate(**ALL_VARS)
    clients = [server.client("alice") for _ in range(16)]

    def send(client: ApiClient) -> tuple[int, str]:
        r = client.post("Calling", "initiateCall", body, headers={"Idempotency-Key": "same"})
        return r.status_code, xml_of(r).findtext("call_id") or ""

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, clients * 4))
    for c in clients:
        c.close()
    assert {status for status, _ in answers} == {201}
    assert len({call_id for _, call_id in answers}) == 1
    with server.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(t.calls)).scalar_one() == 1


def test_keys_are_per_account(ready: ApiClient, api_b: ApiClient, server: RunningServer) -> None:
    key = {"Idempotency-Key": "k"}
    assert (
        ready.post("Calling", "initiateCall", initiate(**ALL_VARS), headers=key).status_code == 201
    )
    r = api_b.post("Calling", "initiateCall", initiate(**ALL_VARS), headers=key)
    assert errors_of(r) == ["Link ID does not exist"]
    assert len(calls_in(server)) == 1


def test_json_output_of_initiate_call(ready: ApiClient) -> None:
    r = ready.post("Calling", "initiateCall", initiate(**ALL_VARS), output="JSON")
    assert r.status_code == 201
    body = json.loads(r.content)["response"]
    assert body["status"] == "queued" and isinstance(body["call_id"], str)


def test_wrong_verb(ready: ApiClient) -> None:
    r = ready.get("Calling", "initiateCall")
    assert errors_of(r) == ["Request Method must be POST. GET attempted"]
