"""The vertical slice: HTTP initiateCall → stored call → dialer → SIP call → call record.

voxflow runs as a real ``voxflow serve`` process with a trunk pointing at a SIPp UAS; the call
record must show every status with its SIP code and the keypresses with their times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.peers.sipp import Sipp, sipp_uas
from tests.support import ApiClient, attach, free_port, make_flow, make_link, wrap, xml_of
from voxflow.store import tables as t
from voxflow.store.db import Database

FLOW = '<callFlow name="F"><call id="c" label="Agent" destinationPhoneNumber="441234"/></callFlow>'


@dataclass
class Served:
    api: ApiClient
    db: Database
    log: Path


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Served, Sipp]]:
    scenario = getattr(request, "param", "uas_answer_dtmf")
    with sipp_uas(scenario) as sipp:
        db_url = f"sqlite:///{tmp_path / 'voxflow.db'}"
        config = tmp_path / "voxflow.toml"
        config.write_text(
            f'[sip]\nport = 0\n[dialer]\npoll_s = 0.05\n[[trunks]]\nname = "sipp"\n'
            f'host = "127.0.0.1"\nport = {sipp.port}\ncaller_id = "441234567890"\nhold_s = 1\n'
            f"ring_timeout_s = 3\n"
        )
        env = {**os.environ, "VOXFLOW_DATA_DIR": str(tmp_path), "VOXFLOW_LOG_LEVEL": "INFO"}
        args = ["--db", db_url, "--config", str(config)]
        out = subprocess.run(
            [sys.executable, "-m", "voxflow", "account", "create", "acme", "--json", *args],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        key = json.loads(out.stdout)["secureKey"]
        port = free_port()
        log = tmp_path / "serve.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "voxflow", "serve", "--port", str(port), *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"voxflow serve did not start: {log.read_text()}")
                time.sleep(0.1)
            db = Database(db_url)
            yield Served(ApiClient(base, "acme", key), db, log), sipp
            db.dispose()
        finally:
            proc.terminate()
            proc.wait(30)


def place(served: Served, dest: str) -> str:
    api = served.api
    make_link(api)
    make_flow(api, FLOW)
    attach(api, "F", "link123")
    body = wrap(
        f"<link_id>link123</link_id><call_variables><call_destination>{dest}</call_destination>"
        "</call_variables>"
    )
    r = api.post("Calling", "initiateCall", body)
    assert r.status_code == 201, r.text
    return xml_of(r).findtext("call_id") or ""


def wait_final(
    served: Served, call_id: str, timeout_s: float = 30
) -> tuple[object, list[tuple[str, dict[str, object]]]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with served.db.read() as conn:
            call = conn.execute(select(t.calls).where(t.calls.c.call_id == call_id)).one()
            if call.ended_at is not None:
                events = conn.execute(
                    select(t.call_events.c.kind, t.call_events.c.detail)
                    .where(t.call_events.c.call_pk == call.id)
                    .order_by(t.call_events.c.id)
                ).all()
                return call, [(e.kind, json.loads(e.detail)) for e in events]
        time.sleep(0.1)
    pytest.fail(f"call {call_id} did not end: {served.log.read_text()[-3000:]}")


def test_an_accepted_call_rings_sipp_and_presses_keys(served: tuple[Served, Sipp]) -> None:
    srv, sipp = served
    call_id = place(srv, "1000,1,2")
    call, events = wait_final(srv, call_id)
    assert call.status == "completed" and call.sip_code == 200 and call.result == "ANSWERED"  # type: ignore[attr-defined]
    kinds = [kind for kind, _ in events]
    assert kinds == [
        "queued",
        "dialing",
        "ringing",
        "answered",
        "keypress",
        "keypress",
        "completed",
    ]
    keys = [(d["key"], d["planned_ms"]) for kind, d in events if kind == "keypress"]
    assert keys == [("1", 2000.0), ("2", 4000.0)]
    log = sipp.messages
    assert "INVITE sip:1000@127.0.0.1" in log and "BYE sip:" in log


@pytest.mark.parametrize("served", ["uas_busy"], indirect=True)
def test_a_busy_destination_is_recorded_busy(served: tuple[Served, Sipp]) -> None:
    srv, _ = served
    call, events = wait_final(srv, place(srv, "1000"))
    assert (call.status, call.sip_code, call.result) == ("busy", 486, "BUSY")  # type: ignore[attr-defined]
    assert [kind for kind, _ in events] == ["queued", "dialing", "busy"]


@pytest.mark.parametrize("served", ["uas_noanswer"], indirect=True)
def test_no_answer_is_cancelled_after_the_ring_timeout(served: tuple[Served, Sipp]) -> None:
    srv, sipp = served
    call, events = wait_final(srv, place(srv, "1000"))
    assert (call.status, call.sip_code) == ("no-answer", 487)  # type: ignore[attr-defined]
    assert [kind for kind, _ in events] == ["queued", "dialing", "ringing", "no-answer"]
    assert "CANCEL sip:" in sipp.messages


def test_keypress_timing_on_the_wire(served: tuple[Served, Sipp]) -> None:
    """For ``,,1,,2`` the first keypress starts 4.000 s after the 200 OK, the second 4.000 s
    after the first, within 20 ms, as seen by tshark on the wire."""
    from tests.peers.capture import capture

    srv, sipp = served
    with capture([sipp.port], media_ports=[sipp.media_port]) as wire:
        call_id = place(srv, "449789123123,,1,,2")
        call, _ = wait_final(srv, call_id)
        wire.stop()
    assert call.status == "completed"  # type: ignore[attr-defined]
    [ok] = [r for r in wire.sip if r.label == "200 INVITE" and r.sport == sipp.port][:1]
    keys = [k for k in wire.keypresses(dport=sipp.media_port)]
    assert [k.digit for k in keys] == ["1", "2"]
    first, second = keys[0].start - ok.time, keys[1].start - keys[0].start
    print(
        f"wire: first keypress {first * 1000:.1f} ms after the 200 OK, second {second * 1000:.1f} ms later"
    )
    assert abs(first - 4.0) < 0.020, first
    assert abs(second - 4.0) < 0.020, second


@pytest.mark.parametrize("served", ["uas_noanswer"], indirect=True)
def test_cancel_call_while_it_rings_sends_cancel(served: tuple[Served, Sipp]) -> None:
    srv, sipp = served
    call_id = place(srv, "1000")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = xml_of(srv.api.get("Calling", "getCall", call_id=call_id)).findtext("call/status")
        if status == "ringing":
            break
        time.sleep(0.05)
    r = srv.api.put("Calling", "cancelCall", wrap(f"<call_id>{call_id}</call_id>"))
    assert r.status_code == 204, r.text
    call, events = wait_final(srv, call_id)
    assert call.status == "cancelled"  # type: ignore[attr-defined]
    assert [kind for kind, _ in events][-2:] == ["cancel-requested", "cancelled"]
    time.sleep(0.3)
    assert "CANCEL sip:" in sipp.messages
