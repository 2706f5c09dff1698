"""Status callbacks against a real HTTP receiver on loopback, on SQLite and PostgreSQL.

The call goes through the API and the sandbox dialer; the outbox rows are written with each
status change, and the sender POSTs them in order, retries with backoff (on an injected
clock), gives up after the maximum, and never holds up dialling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.support import (
    ApiClient,
    MovableClock,
    RunningServer,
    attach,
    errors_of,
    free_port,
    make_flow,
    make_link,
    wrap,
    xml_of,
)
from voxflow import cli
from voxflow.config import CallbackSettings
from voxflow.domain.calls import CallStatus
from voxflow.scheduling.callbacks import CallbackSender
from voxflow.scheduling.dialer import Dialer, LegPlan
from voxflow.services.call_leases import CallLeases, ClaimRound, Pacing
from voxflow.services.call_records import CallRecords, DueCall
from voxflow.store import tables as t
from voxflow.store.db import Database
from voxflow.telephony.sandbox import SandboxLeg, SandboxSettings

FLOW = '<callFlow name="F"><call id="c" label="Agent" destinationPhoneNumber="441234"/></callFlow>'


@dataclass
class Receiver:
    """A real HTTP server on loopback that records each POST and answers as told."""

    statuses: list[int] = field(default_factory=list)  # answers to give, in turn; then 200
    hang: threading.Event | None = None  # when set: hold every request until the event is set
    got: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None
    port: int = 0

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def bodies(self) -> list[dict[str, Any]]:
        return [body for _, body in self.got]

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                receiver.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                receiver.arrived.set()
                if receiver.hang is not None:
                    receiver.hang.wait(60)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.hang is not None:
            self.hang.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()


@pytest.fixture
def sandy(clocked: RunningServer) -> Iterator[ApiClient]:
    clocked.create_account("sandy", sandbox=True)
    api = clocked.client("sandy")
    make_link(api, "link1")
    make_link(api, "link2")
    make_flow(api, FLOW)
    attach(api, "F", "link1", "link2")
    yield api
    api.close()


def voxflow(db: Database, *args: str) -> None:
    assert cli.main([*args, "--db", db.url]) == 0


def initiate(
    api: ApiClient, dest: str = "449789123123", link: str = "link1", delay: int = 0
) -> str:
    body = wrap(
        f"<link_id>{link}</link_id><call_variables><call_destination>{dest}</call_destination>"
        f"<delay>{delay}</delay></call_variables>"
    )
    r = api.post("Calling", "initiateCall", body)
    assert r.status_code == 201, r.text
    return xml_of(r).findtext("call_id") or ""


async def place_all(db: Database, clock: MovableClock) -> None:
    def factory(_call: DueCall) -> LegPlan:
        return LegPlan(SandboxLeg(SandboxSettings(answer_after_s=0)), hold_s=0)

    dialer = Dialer(CallRecords(db, clock), factory)
    await dialer.dial_due()
    await asyncio.gather(*dialer.active)


async def drain(sender: CallbackSender) -> int:
    total = 0
    while (n := await sender.deliver_due()) > 0:
        total += n
    return total


def outbox(db: Database) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(select(t.call_callbacks).order_by(t.call_callbacks.c.id)))


async def test_every_status_change_is_posted_in_order(
    sandy: ApiClient, clocked: RunningServer, clock: MovableClock, receiver: Receiver
) -> None:
    link_hook = Receiver()
    link_hook.start()
    try:
        voxflow(clocked.db, "account", "callback", "sandy", receiver.url)
        voxflow(clocked.db, "links", "callback", "--account", "sandy", "link2", link_hook.url)
        first = await asyncio.to_thread(initiate, sandy, "441111")
        second = await asyncio.to_thread(initiate, sandy, "442222", "link2")
        await place_all(clocked.db, clock)
        sender = CallbackSender(clocked.db, clock)
        assert await drain(sender) == 10
        await sender.stop()
    finally:
        link_hook.stop()
    flow = ["queued", "dialing", "ringing", "answered", "completed"]
    account_bodies = receiver.bodies()
    assert [b["status"] for b in account_bodies] == flow
    assert [b["previous_status"] for b in account_bodies] == [None, *flow[:-1]]
    assert {b["call_id"] for b in account_bodies} == {first}
    assert all(b["link_id"] == "link1" and b["destination"] == "441111" for b in account_bodies)
    by_status = {b["status"]: b for b in account_bodies}
    assert (by_status["ringing"]["sip_code"], by_status["ringing"]["sip_reason"]) == (
        180,
        "Ringing",
    )
    assert by_status["answered"]["sip_code"] == 200
    assert by_status["completed"]["result"] == "ANSWERED"
    assert by_status["dialing"]["attempt"] == 1
    assert by_status["queued"]["detail"]["delay_minutes"] == 0
    assert by_status["queued"]["at"] == "2026-11-26T12:00:00.000Z"
    # The link's own URL overrides the account's.
    assert [b["status"] for b in link_hook.bodies()] == flow
    assert {b["call_id"] for b in link_hook.bodies()} == {second}
    headers, _ = receiver.got[0]
    assert headers["content-type"] == "application/json"
    assert headers["x-voxflow-attempt"] == "1"
    assert all(r.delivered_at is not None and r.attempts == 1 for r in outbox(clocked.db))


async def test_no_url_no_callback_and_a_cleared_url_stops_them(
    sandy: ApiClient, clocked: RunningServer, receiver: Receiver
) -> None:
    await asyncio.to_thread(initiate, sandy)
    assert outbox(clocked.db) == []
    voxflow(clocked.db, "account", "callback", "sandy", receiver.url)
    await asyncio.to_thread(initiate, sandy)
    voxflow(clocked.db, "account", "callback", "sandy", "--clear")
    await asyncio.to_thread(initiate, sandy)
    assert len(outbox(clocked.db)) == 1


async def test_a_cancelled_call_is_reported(
    sandy: ApiClient, clocked: RunningServer, clock: MovableClock, receiver: Receiver
) -> None:
    voxflow(clocked.db, "account", "callback", "sandy", receiver.url)
    call_id = await asyncio.to_thread(initiate, sandy, delay=10)
    r = await asyncio.to_thread(
        sandy.put, "Calling", "cancelCall", wrap(f"<call_id>{call_id}</call_id>")
    )
    assert r.status_code == 204
    sender = CallbackSender(clocked.db, clock)
    await drain(sender)
    await sender.stop()
    assert [(b["status"], b["previous_status"]) for b in receiver.bodies()] == [
        ("scheduled", None),
        ("cancelled", "scheduled"),
    ]
    assert receiver.bodies()[1]["result"] == "CANCELLED"


async def test_retries_with_backoff_after_500_and_keeps_the_order(
    sandy: ApiClient, clocked: RunningServer, clock: MovableClock, receiver: Receiver
) -> None:
    voxflow(clocked.db, "account", "callback", "sandy", receiver.url)
    await asyncio.to_thread(initiate, sandy)
    await place_all(clocked.db, clock)
    receiver.statuses = [500, 503]
    sender = CallbackSender(clocked.db, clock, CallbackSettings(backoff_s=2))
    assert await sender.deliver_due() == 1  # the first (queued) fails: 500
    assert await sender.deliver_due() == 0  # not due again yet, and "dialing" waits behind it
    row = outbox(clocked.db)[0]
    assert (row.attempts, row.last_error, row.delivered_at) == (1, "HTTP 500", None)
    assert row.next_attempt_at == clock.at + timedelta(seconds=2)
    clock.advance(seconds=2)
    assert await sender.deliver_due() == 1  # 503, next try 4 s later (doubled)
    assert outbox(clocked.db)[0].next_attempt_at == clock.at + timedelta(seconds=4)
    clock.advance(seconds=3)
    assert await sender.deliver_due() == 0
    clock.advance(seconds=1)
    assert await drain(sender) == 5
    await sender.stop()
    assert [b["status"] for b in receiver.bodies()] == [
        "queued",
        "queued",
        "queued",
        "dialing",
        "ringing",
        "answered",
        "completed",
    ]
    assert [h["x-voxflow-attempt"] for h, _ in receiver.got[:3]] == ["1", "2", "3"]
    assert len({h["x-voxflow-callback-id"] for h, _ in receiver.got[:3]}) == 1
    assert all(r.delivered_at is not None for r in outbox(clocked.db))


async def test_a_receiver_that_is_down_is_given_up_after_the_maximum(
    sandy: ApiClient, clocked: RunningServer, clock: MovableClock
) -> None:
    down = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    voxflow(clocked.db, "account", "callback", "sandy", down)
    await asyncio.to_thread(initiate, sandy, delay=5)
    sender = CallbackSender(clocked.db, clock, CallbackSettings(max_attempts=3, backoff_s=1))
    for _ in range(3):
        assert await sender.deliver_due() == 1
        clock.advance(seconds=10)
    assert await sender.deliver_due() == 0
    await sender.stop()
    [row] = outbox(clocked.db)
    assert row.attempts == 3 and row.delivered_at is None and row.failed_at is not None
    assert "ConnectError" in row.last_error


async def test_a_receiver_that_was_down_gets_the_callback_when_it_is_back(
    sandy: ApiClient, clocked: RunningServer, clock: MovableClock
) -> None:
    port = free_port()
    voxflow(clocked.db, "account", "callback", "sandy", f"http://127.0.0.1:{port}/hook")
    await asyncio.to_thread(initiate, sandy, delay=5)
    sender = CallbackSender(clocked.db, clock)
    assert await sender.deliver_due() == 1  # connection refused
    assert outbox(clocked.db)[0].delivered_at is None
    back = Receiver(port=port)
    back.start()
    try:
        clock.advance(seconds=1)
        assert await sender.deliver_due() == 1
    finally:
        await sender.stop()
        back.stop()
    assert [b["status"] for b in back.bodies()] == ["scheduled"]
    [row] = outbox(clocked.db)
    assert row.delivered_at is not None and row.attempts == 2


async def test_a_callback_older_than_the_maximum_age_is_given_up(
    sandy: ApiClient, clocked: RunningServer, clock: MovableClock, receiver: Receiver
) -> None:
    voxflow(clocked.db, "account", "callback", "sandy", receiver.url)
    await asyncio.to_thread(initiate, sandy, delay=5)
    receiver.statuses = [500] * 10
    settings = CallbackSettings(max_attempts=100, max_age_s=60, backoff_s=30)
    sender = CallbackSender(clocked.db, clock, settings)
    assert await sender.deliver_due() == 1  # retry at +30 s: within the age
    clock.advance(seconds=30)
    assert await sender.deliver_due() == 1  # the next retry would be at +90 s: too old
    await sender.stop()
    [row] = outbox(clocked.db)
    assert row.failed_at is not None and row.attempts == 2


async def test_a_hanging_receiver_never_holds_up_dialling(
    sandy: ApiClient, clocked: RunningServer, clock: MovableClock, receiver: Receiver
) -> None:
    receiver.hang = threading.Event()
    voxflow(clocked.db, "account", "callback", "sandy", receiver.url)
    call_id = await asyncio.to_thread(initiate, sandy)
    sender = CallbackSender(clocked.db, clock, CallbackSettings(timeout_s=60, poll_s=0.05))
    sending = asyncio.create_task(sender.run())
    try:
        await asyncio.to_thread(receiver.arrived.wait, 30)  # the first POST is now held
        assert receiver.arrived.is_set()
        await place_all(clocked.db, clock)  # the call goes all the way meanwhile
        with clocked.db.read() as conn:
            status = conn.execute(
                select(t.calls.c.status).where(t.calls.c.call_id == call_id)
            ).scalar_one()
        assert status == CallStatus.COMPLETED
        assert len(receiver.got) == 1 and len(sender.inflight) == 1
    finally:
        await sender.stop()
        await sending
    # Stopping gave the lease back: another sender takes it at once, and the rest follow.
    rows = outbox(clocked.db)
    assert rows[0].lease_owner is None and rows[0].attempts == 0 and len(rows) == 5
    receiver.hang.set()
    receiver.hang = None
    other = CallbackSender(clocked.db, clock)
    assert await drain(other) == 5
    await other.stop()
    assert [b["status"] for b in receiver.bodies()][1:] == [
        "queued",
        "dialing",
        "ringing",
        "answered",
        "completed",
    ]


async def test_two_senders_deliver_each_callback_once_in_order(
    sandy: ApiClient, clocked: RunningServer, clock: MovableClock, receiver: Receiver
) -> None:
    voxflow(clocked.db, "account", "callback", "sandy", receiver.url)
    calls = [await asyncio.to_thread(initiate, sandy, f"44{i:04d}") for i in range(6)]
    await place_all(clocked.db, clock)
    other_db = Database(clocked.db.url)  # the second sender's own pool, as another process
    senders = [
        CallbackSender(clocked.db, clock, CallbackSettings(concurrency=3)),
        CallbackSender(other_db, clock, CallbackSettings(concurrency=3)),
    ]
    try:
        while sum(await asyncio.gather(*(s.deliver_due() for s in senders))):
            pass
    finally:
        for s in senders:
            await s.stop()
        other_db.dispose()
    ids = [h["x-voxflow-callback-id"] for h, _ in receiver.got]
    assert len(ids) == len(set(ids)) == 30
    for call_id in calls:
        statuses = [b["status"] for b in receiver.bodies() if b["call_id"] == call_id]
        assert statuses == ["queued", "dialing", "ringing", "answered", "completed"]


def test_voxflow_serve_sends_the_callbacks_and_applies_configured_limits(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The real process: ``voxflow serve`` with a TOML config, a sandbox account whose callback
    URL is set by the CLI; the call's every status arrives at the receiver, and the configured
    limit refuses a second call to the same number."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXFLOW_")}
    env["VOXFLOW_DATA_DIR"] = str(tmp_path / "data")
    config = tmp_path / "voxflow.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "v.db"}"\n'
        "[sip]\nport = 0\n[softphone]\nport = 0\n[dialer]\npoll_s = 0.05\n"
        "[sandbox]\nanswer_after_s = 0\nhold_s = 0\n"
        "[limits]\nper_destination_15m = 1\n[callbacks]\npoll_s = 0.05\n"
    )

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "voxflow", *args, "--config", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    account = json.loads(run("account", "create", "sandy", "--sandbox", "--json"))
    run("account", "callback", "sandy", receiver.url)
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "voxflow",
                "serve",
                "--port",
                str(port),
                "--config",
                str(config),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.1)
        api = ApiClient(base, account["username"], account["secureKey"])
        make_link(api, "link1")
        make_flow(api, FLOW)
        attach(api, "F", "link1")
        call_id = initiate(api, "441111")
        refused = api.post(
            "Calling",
            "initiateCall",
            wrap(
                "<link_id>link1</link_id><call_variables><call_destination>441111"
                "</call_destination></call_variables>"
            ),
        )
        assert errors_of(refused) == ["The number of calls allowed has been exceeded"]
        api.close()
        for _ in range(600):  # until the last status arrived
            if len(receiver.got) >= 5:
                break
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(30)
    assert [b["status"] for b in receiver.bodies()] == [
        "queued",
        "dialing",
        "ringing",
        "answered",
        "completed",
    ], log_path.read_text()
    assert {b["call_id"] for b in receiver.bodies()} == {call_id}


async def test_expired_and_unknown_calls_are_reported_with_their_reason(
    sandy: ApiClient, clocked: RunningServer, clock: MovableClock, receiver: Receiver
) -> None:
    voxflow(clocked.db, "account", "callback", "sandy", receiver.url)
    late = await asyncio.to_thread(initiate, sandy, "441111", "link1", 1)
    lost = await asyncio.to_thread(initiate, sandy, "442222", "link2", 0)
    leases = CallLeases(clocked.db, clock)
    lease = timedelta(seconds=30)

    def claim(owner: str) -> ClaimRound:
        return leases.claim(
            owner,
            room=10,
            lease=lease,
            pacing=Pacing(trunks={}, default_trunk=None),
            max_lateness=timedelta(seconds=30),
        )

    [taken] = claim("a/1").claims  # the due one; the other is due in a minute
    assert taken.call.call_id == lost and leases.start_dialing(taken, "a/1", lease)
    clock.advance(minutes=2)  # a/1 vanished; the delayed call is now too late
    round_ = claim("b/1")
    assert (round_.expired, round_.reconciled) == (1, 1)
    sender = CallbackSender(clocked.db, clock)
    await drain(sender)
    await sender.stop()
    by_call: dict[str, list[dict[str, Any]]] = {}
    for body in receiver.bodies():
        by_call.setdefault(body["call_id"], []).append(body)
    assert [b["status"] for b in by_call[late]] == ["scheduled", "expired"]
    assert "max_lateness_s" in by_call[late][-1]["reason"]
    assert by_call[late][-1]["previous_status"] == "scheduled"
    assert [b["status"] for b in by_call[lost]] == ["queued", "dialing", "unknown"]
    assert "not dialled again" in by_call[lost][-1]["reason"]
    assert by_call[lost][-1]["detail"]["was"] == "dialing"
