"""A 201 from initiateCall means the call is committed: kill -9 the server under load, then
every call that was answered 201 is in the database, with its first event."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
from sqlalchemy import select

from tests.support import ApiClient, attach, free_port, make_flow, make_link, wrap
from voxflow.clock import SystemClock
from voxflow.services.accounts import create_account
from voxflow.store import tables as t
from voxflow.store.db import Database

FLOW = (
    '<callFlow name="Crash"><call id="c1" label="Agent" destinationPhoneNumber="4412"/></callFlow>'
)
# One number per request: the per-destination limits ([limits] defaults) are not what is tested.
BODY = (
    "<link_id>link123</link_id><call_variables><call_destination>44{n:010d},,1</call_destination>"
    "<delay>60</delay></call_variables>"
)
CLIENTS = 8
ANSWERS_BEFORE_KILL = 200


def _serve(database: Database, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "voxflow", "serve", "--no-dialer"),
            *("--port", str(port), "--db", database.url),
        ],
        env={**os.environ, "VOXFLOW_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("voxflow serve did not start")


def test_every_201_survives_a_kill_of_the_server(database: Database) -> None:
    account = create_account(database, SystemClock(), "crash", [], True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = _serve(database, port)
    answered: list[str] = []
    stop = threading.Event()

    def client(first: int) -> None:
        headers = {"username": account.username, "secureKey": account.secure_key}
        n = first
        with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
            while not stop.is_set():
                n += 1
                try:
                    r = http.post(
                        "/Calling?v=3&method=initiateCall", content=wrap(BODY.format(n=n))
                    )
                except httpx.HTTPError:
                    return  # the server is gone
                assert r.status_code == 201, r.text
                call_id = r.text.split("<call_id>")[1].split("</call_id>")[0]
                answered.append(call_id)

    try:
        _wait_ready(base, process)
        api = ApiClient(base, account.username, account.secure_key)
        make_link(api)
        make_flow(api, FLOW)
        attach(api, "Crash", "link123")
        api.close()
        threads = [threading.Thread(target=client, args=(i * 10**6,)) for i in range(CLIENTS)]
        for th in threads:
            th.start()
        deadline = time.monotonic() + 60
        while len(answered) < ANSWERS_BEFORE_KILL and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)  # mid-load: batches are being written
        process.wait(10)
        stop.set()
        for th in threads:
            th.join(15)
    finally:
        stop.set()
        if process.poll() is None:
            process.kill()
            process.wait()

    assert len(answered) >= ANSWERS_BEFORE_KILL
    with database.read() as conn:
        stored = set(conn.execute(select(t.calls.c.call_id)).scalars())
        with_event = set(
            conn.execute(
                select(t.calls.c.call_id).join(
                    t.call_events, t.call_events.c.call_pk == t.calls.c.id
                )
            ).scalars()
        )
    missing = set(answered) - stored
    assert not missing, f"{len(missing)} calls answered 201 are not in the database"
    assert set(answered) <= with_event
