"""Limits at acceptance over real HTTP, on SQLite and PostgreSQL, with an injected clock.

Each limit is hit, answered with the exact iovox error, and freed as the window moves (or as
the calls in progress end). Limits are set with the real ``voxflow account limits`` command.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
from sqlalchemy import func, select, text

from tests.integration.test_dialer_sandbox import claim_and_dial
from tests.support import (
    ApiClient,
    MovableClock,
    RunningServer,
    attach,
    errors_of,
    make_flow,
    make_link,
    start_server,
    wrap,
    xml_of,
)
from voxflow import cli
from voxflow.domain.calls import CallStatus
from voxflow.domain.limits import Limits
from voxflow.errors import ApiError
from voxflow.services.call_records import CallRecords
from voxflow.services.limits import LIMIT_EXCEEDED, account_limits, admit
from voxflow.store import tables as t
from voxflow.store.db import Database

FLOW = '<callFlow name="F"><call id="c" label="Agent" destinationPhoneNumber="441234"/></callFlow>'
NUMBER = "449789123123"


@pytest.fixture
def alice(clocked: RunningServer) -> Iterator[ApiClient]:
    api = clocked.client("alice")
    make_link(api, "link1")
    make_link(api, "link2")
    make_flow(api, FLOW)
    attach(api, "F", "link1", "link2")
    yield api
    api.close()


def set_limits(db: Database, account: str, *options: str) -> None:
    assert cli.main(["account", "limits", account, *options, "--db", db.url]) == 0


def initiate(api: ApiClient, dest: str = NUMBER, link: str = "link1", **kw: str) -> int:
    body = wrap(
        f"<link_id>{link}</link_id><call_variables>"
        f"<call_destination>{dest}</call_destination></call_variables>"
    )
    r = api.post("Calling", "initiateCall", body, **kw)
    if r.status_code != 201:
        assert r.status_code == 400, r.text
        assert errors_of(r) == [LIMIT_EXCEEDED]
    return r.status_code


def calls_count(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(t.calls)).scalar_one())


def test_default_per_destination_15_minutes(
    alice: ApiClient, clocked: RunningServer, clock: MovableClock
) -> None:
    for _ in range(7):  # the default: 7 calls in 15 minutes
        assert initiate(alice) == 201
        clock.advance(minutes=1)
    refused = alice.post(
        "Calling",
        "initiateCall",
        wrap(
            f"<link_id>link1</link_id><call_variables><call_destination>{NUMBER},,1"
            "</call_destination></call_variables>"
        ),
    )
    assert refused.status_code == 400
    assert errors_of(refused) == ["The number of calls allowed has been exceeded"]
    as_json = alice.post(
        "Calling",
        "initiateCall",
        wrap(
            f"<link_id>link1</link_id><call_variables><call_destination>{NUMBER}"
            "</call_destination></call_variables>"
        ),
        output="JSON",
    )
    assert as_json.status_code == 400
    assert json.loads(as_json.content) == {
        "errors": {"error": {"@status": "400", "#text": LIMIT_EXCEEDED}}
    }
    assert calls_count(clocked.db) == 7  # nothing half-written
    assert initiate(alice, "449000000000") == 201  # another number is not limited by this one
    # The first call was at 12:00; at 12:15 it leaves the window and one more call may go.
    clock.at = datetime(2026, 11, 26, 12, 14, 59)
    assert initiate(alice) == 400
    clock.at = datetime(2026, 11, 26, 12, 15, 0)
    assert initiate(alice) == 201
    assert initiate(alice) == 400


def test_per_destination_one_hour(
    alice: ApiClient, clocked: RunningServer, clock: MovableClock
) -> None:
    set_limits(clocked.db, "alice", "--per-destination-15m", "0", "--per-destination-1h", "3")
    for _ in range(3):  # 12:00, 12:20, 12:40
        assert initiate(alice) == 201
        clock.advance(minutes=20)
    clock.at = datetime(2026, 11, 26, 12, 50, 0)
    assert initiate(alice) == 400
    clock.at = datetime(2026, 11, 26, 12, 59, 59)
    assert initiate(alice) == 400
    clock.at = datetime(2026, 11, 26, 13, 0, 0)
    assert initiate(alice) == 201


def test_per_destination_24_hours(
    alice: ApiClient, clocked: RunningServer, clock: MovableClock
) -> None:
    set_limits(
        clocked.db,
        "alice",
        "--per-destination-15m",
        "0",
        "--per-destination-1h",
        "0",
        "--per-destination-24h",
        "2",
    )
    assert initiate(alice) == 201
    clock.advance(hours=5)
    assert initiate(alice) == 201
    clock.advance(hours=18, minutes=59)
    assert initiate(alice) == 400
    clock.advance(minutes=1)  # 24 h after the first call
    assert initiate(alice) == 201
    assert initiate(alice) == 400


def test_configured_defaults_and_account_overrides(database: Database, clock: MovableClock) -> None:
    running = start_server(
        database, clock, limits=Limits(per_destination_15m=1, per_destination_24h=100)
    )
    try:
        api = running.client("alice")
        make_link(api, "link1")
        make_flow(api, FLOW)
        attach(api, "F", "link1")
        assert initiate(api) == 201
        assert initiate(api) == 400
        set_limits(database, "alice", "--per-destination-15m", "2")
        assert initiate(api) == 201
        assert initiate(api) == 400
        set_limits(database, "alice", "--per-destination-15m", "default")
        with database.read() as conn:
            account_id = conn.execute(select(t.accounts.c.id)).scalar_one()
            assert account_limits(conn, account_id).per_destination_15m == 7
            assert account_limits(conn, account_id, Limits(per_destination_15m=1)) == Limits(
                per_destination_15m=1
            )
        assert initiate(api) == 400
        api.close()
    finally:
        running.stop()


def _answer_one(db: Database, clock: MovableClock) -> int:
    records = CallRecords(db, clock)
    (call, *_) = claim_and_dial(records)
    assert records.move(call.pk, CallStatus.ANSWERED, sip_code=200, sip_reason="OK")
    return call.pk


def test_concurrent_calls_per_link(
    alice: ApiClient, clocked: RunningServer, clock: MovableClock
) -> None:
    set_limits(clocked.db, "alice", "--concurrent-link", "1")
    assert initiate(alice, "441") == 201
    assert initiate(alice, "442") == 201  # queued calls are not in progress
    clock.advance(seconds=1)
    pk = _answer_one(clocked.db, clock)  # one call of link1 in progress
    assert initiate(alice, "443") == 400
    assert initiate(alice, "443", link="link2") == 201  # the other link is free
    assert CallRecords(clocked.db, clock).move(pk, CallStatus.COMPLETED)
    assert initiate(alice, "443") == 201


def test_concurrent_calls_per_account(
    alice: ApiClient, clocked: RunningServer, clock: MovableClock
) -> None:
    set_limits(clocked.db, "alice", "--concurrent-account", "1")
    bob = clocked.client("bob")
    make_link(bob, "link1")
    make_flow(bob, FLOW)
    attach(bob, "F", "link1")
    assert initiate(alice, "441") == 201
    clock.advance(seconds=1)
    pk = _answer_one(clocked.db, clock)
    assert initiate(alice, "442", link="link2") == 400
    assert initiate(bob, "442") == 201  # another account has its own limits
    assert CallRecords(clocked.db, clock).move(pk, CallStatus.FAILED, sip_code=500)
    assert initiate(alice, "442", link="link2") == 201
    bob.close()


def test_a_call_cancelled_before_dialling_does_not_count(
    alice: ApiClient, clocked: RunningServer
) -> None:
    set_limits(clocked.db, "alice", "--per-destination-15m", "1")
    body = wrap(
        f"<link_id>link1</link_id><call_variables><call_destination>{NUMBER}"
        "</call_destination><delay>10</delay></call_variables>"
    )
    call_id = xml_of(alice.post("Calling", "initiateCall", body)).findtext("call_id")
    assert initiate(alice) == 400
    r = alice.put("Calling", "cancelCall", wrap(f"<call_id>{call_id}</call_id>"))
    assert r.status_code == 204
    assert initiate(alice) == 201


def test_an_idempotent_repeat_is_not_counted_again(
    alice: ApiClient, clocked: RunningServer
) -> None:
    set_limits(clocked.db, "alice", "--per-destination-15m", "1")
    key = {"Idempotency-Key": "order-1"}
    body = wrap(
        f"<link_id>link1</link_id><call_variables><call_destination>{NUMBER}"
        "</call_destination></call_variables>"
    )
    first = alice.post("Calling", "initiateCall", body, headers=key)
    again = alice.post("Calling", "initiateCall", body, headers=key)
    assert first.status_code == again.status_code == 201
    assert xml_of(first).findtext("call_id") == xml_of(again).findtext("call_id")
    assert initiate(alice) == 400
    assert calls_count(clocked.db) == 1


def test_concurrent_requests_for_one_number_never_pass_the_limit(
    alice: ApiClient, clocked: RunningServer, clock: MovableClock
) -> None:
    """Two API servers, each with its own connection pool (as two processes would have), and
    many clients at once: exactly the limit's worth of calls is accepted."""
    set_limits(clocked.db, "alice", "--per-destination-15m", "5")
    other_db = Database(clocked.db.url)
    other = start_server(other_db, clock)
    other.accounts = clocked.accounts
    clients = [s.client("alice") for s in (clocked, other) for _ in range(8)]
    try:
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(initiate, clients * 3))
    finally:
        for c in clients:
            c.close()
        other.stop()
        other_db.dispose()
    assert sorted(statuses) == [201] * 5 + [400] * 43
    assert calls_count(clocked.db) == 5


def test_postgres_serialises_the_check_and_insert_per_number(
    alice: ApiClient, clocked: RunningServer, backend: str, clock: MovableClock
) -> None:
    """A second acceptance for the same number waits on the first one's advisory lock, then
    counts its call: the check and the insert are atomic across processes."""
    if backend != "postgresql":
        pytest.skip("SQLite's single write lock serialises every writer already")
    set_limits(clocked.db, "alice", "--per-destination-15m", "1")
    assert initiate(alice, "441") == 201
    with clocked.db.read() as conn:
        template = dict(conn.execute(select(t.calls)).one()._mapping)
    del template["id"]
    row = {**template, "destination": NUMBER, "call_id": "first"}
    outcome: list[str] = []

    def second() -> None:
        try:
            with clocked.db.write() as conn:
                admit(conn, {**row, "call_id": "second"})
                outcome.append("admitted")
        except ApiError as err:
            outcome.append(str(err))

    first = clocked.db.engine.connect()
    txn = first.begin()
    admit(first, row)
    first.execute(t.calls.insert().values(**row))
    waiter = threading.Thread(target=second)
    waiter.start()
    try:
        waiting = 0
        for _ in range(500):  # until the second transaction waits on the advisory lock
            with clocked.db.read() as conn:
                waiting = conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'")
                ).scalar_one()
            if waiting:
                break
            time.sleep(0.01)
        assert waiting == 1 and not outcome
    finally:
        txn.commit()
        first.close()
        waiter.join()
    assert outcome == [LIMIT_EXCEEDED]


def test_settings_commands_fail_with_one_line(
    alice: ApiClient, clocked: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    db = clocked.db.url
    capsys.readouterr()
    cases = [
        (["account", "limits", "nobody"], "voxflow: no account 'nobody'"),
        (["account", "callback", "alice", "ftp://x/"], "must be http:// or https://"),
        (["account", "callback", "alice", "http:///nohost"], "with a host"),
        (["links", "callback", "--account", "alice", "nolink", "http://a/"], "has no link"),
    ]
    for args, fragment in cases:
        assert cli.main([*args, "--db", db]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0], err
    with pytest.raises(SystemExit) as usage:
        cli.main(["account", "limits", "alice", "--concurrent-link", "-1", "--db", db])
    assert usage.value.code == 2
    assert cli.main(["account", "limits", "alice", "--json", "--db", db]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["per_destination_15m"] == {"value": 7, "source": "default"}
    with clocked.db.read() as conn:
        assert conn.execute(select(t.accounts.c.status_callback_url)).scalar() is None
