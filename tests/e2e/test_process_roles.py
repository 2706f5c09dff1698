"""Real ``voxflow`` processes against SIPp: SIGTERM is a graceful stop, a restart picks up what
is left, and ``serve --no-dialer`` plus ``voxflow dialer`` processes share one PostgreSQL store
with every call placed exactly once."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.peers.sipp import Sipp, sipp_uas
from tests.support import (
    ApiClient,
    PostgresServer,
    attach,
    free_port,
    make_flow,
    make_link,
    wrap,
    xml_of,
)
from voxflow.store import tables as t
from voxflow.store.db import Database

FLOW = '<callFlow name="F"><call id="c" label="Agent" destinationPhoneNumber="441234"/></callFlow>'
EXIT_WITHIN_S = 120  # generous bounds: these are about what happens, not how fast
FINAL_WITHIN_S = 60
# uvicorn re-raises the signal once the graceful shutdown is done, so the exit says SIGTERM.
TERMINATED = (0, -signal.SIGTERM)


class Voxflow:
    """``python -m voxflow ...`` processes sharing one database and one config."""

    def __init__(self, tmp: Path, db_url: str, config: str) -> None:
        self.tmp = tmp
        self.db_url = db_url
        (tmp / "voxflow.toml").write_text(config)
        self.env = {**os.environ, "VOXFLOW_DATA_DIR": str(tmp), "VOXFLOW_LOG_LEVEL": "INFO"}
        self.args = ["--db", db_url, "--config", str(tmp / "voxflow.toml")]
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def run(self, *argv: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "voxflow", *argv, *self.args],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout

    def start(self, *argv: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{argv[0]}-{len(self.procs)}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "voxflow", *argv, *self.args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        self.procs.append((proc, log))
        return proc

    def serve(self, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        proc = self.start("serve", "--port", str(port), *extra)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    return proc, base
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"voxflow serve did not start: {self.logs()}")
            time.sleep(0.1)

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for _, log in self.procs)

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in self.procs:
            try:
                proc.wait(EXIT_WITHIN_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def voxflow(tmp: Path, db_url: str, config: str) -> Iterator[Voxflow]:
    vf = Voxflow(tmp, db_url, config)
    try:
        yield vf
    finally:
        vf.stop_all()


def trunk(sipp: Sipp, **extra: object) -> str:
    keys = "".join(f"{k} = {v}\n" for k, v in extra.items())
    return (
        f'[[trunks]]\nname = "sipp"\nhost = "127.0.0.1"\nport = {sipp.port}\n'
        f'caller_id = "441234567890"\nring_timeout_s = 10\n{keys}'
        # Below the kernel's ephemeral ports, away from the default range that a benchmark on
        # this machine may be filling.
        "rtp_port_min = 31000\nrtp_port_max = 32100\n"
    )


def account(vf: Voxflow, base: str) -> ApiClient:
    key = json.loads(vf.run("account", "create", "acme", "--json"))["secureKey"]
    api = ApiClient(base, "acme", key)
    make_link(api)
    make_flow(api, FLOW)
    attach(api, "F", "link123")
    return api


def place(api: ApiClient, dest: str) -> str:
    body = wrap(
        f"<link_id>link123</link_id><call_variables><call_destination>{dest}</call_destination>"
        "</call_variables>"
    )
    r = api.post("Calling", "initiateCall", body)
    assert r.status_code == 201, r.text
    return xml_of(r).findtext("call_id") or ""


def calls(db: Database) -> dict[str, object]:
    with db.read() as conn:
        return {r.call_id: r for r in conn.execute(select(t.calls))}


def events(db: Database, call_id: str) -> list[tuple[str, dict[str, object]]]:
    with db.read() as conn:
        pk = conn.execute(select(t.calls.c.id).where(t.calls.c.call_id == call_id)).scalar_one()
        rows = conn.execute(
            select(t.call_events.c.kind, t.call_events.c.detail)
            .where(t.call_events.c.call_pk == pk)
            .order_by(t.call_events.c.id)
        ).all()
    return [(r.kind, json.loads(r.detail)) for r in rows]


def wait_for(vf: Voxflow, what: str, check: object) -> None:
    deadline = time.monotonic() + FINAL_WITHIN_S
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}: {vf.logs()}")
        time.sleep(0.1)


def invites(sipp: Sipp) -> Counter[str]:
    """INVITEs SIPp received, per Call-ID, from its own message log (a UAS sends no INVITE;
    retransmissions have the same Call-ID and CSeq and count once)."""
    seen = set()
    for message in re.split(r"^INVITE sip:", sipp.messages, flags=re.M)[1:]:
        headers = message.split("\n\n", 1)[0]
        call = re.search(r"^Call-ID:\s*(\S+)", headers, re.M | re.I)
        cseq = re.search(r"^CSeq:\s*(\d+)", headers, re.M | re.I)
        assert call and cseq, headers
        seen.add((call.group(1), cseq.group(1)))
    return Counter(call for call, _ in seen)


def test_sigterm_lets_calls_finish_and_a_restart_places_what_is_left(tmp_path: Path) -> None:
    with sipp_uas("uas_answer_dtmf") as sipp:
        # One call per 5 s through this trunk: the second call is still queued at SIGTERM.
        config = f"[sip]\nport = 0\n[dialer]\nshutdown_s = 60\n{trunk(sipp, hold_s=2, cps=0.2)}"
        db_url = f"sqlite:///{tmp_path / 'voxflow.db'}"
        with voxflow(tmp_path, db_url, config) as vf:
            proc, base = vf.serve()
            api = account(vf, base)
            db = Database(db_url)
            first, second = place(api, "1001"), place(api, "1002")
            wait_for(vf, "the first call answered", lambda: calls(db)[first].status == "answered")  # type: ignore[attr-defined]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(EXIT_WITHIN_S) in TERMINATED, vf.logs()
            done = calls(db)
            # It finished its 2 s hold and was hung up normally, not cut short.
            assert done[first].status == "completed" and done[first].status_reason is None  # type: ignore[attr-defined]
            assert [k for k, _ in events(db, first)][-1] == "completed"
            assert events(db, first)[-1][1] == {"hangup": "local"}
            assert done[second].status == "queued" and done[second].lease_owner is None  # type: ignore[attr-defined]
            # Started again, it places the call that was left.
            vf.serve()
            wait_for(vf, "the second call", lambda: calls(db)[second].ended_at is not None)  # type: ignore[attr-defined]
            assert calls(db)[second].status == "completed"  # type: ignore[attr-defined]
            db.dispose()
        assert sorted(invites(sipp).values()) == [1, 1]  # one INVITE per call, no re-dial


def test_sigterm_hangs_up_calls_that_outlive_shutdown_s(tmp_path: Path) -> None:
    with sipp_uas("uas_answer_dtmf") as sipp:
        config = f"[sip]\nport = 0\n[dialer]\nshutdown_s = 0.5\n{trunk(sipp, hold_s=600)}"
        db_url = f"sqlite:///{tmp_path / 'voxflow.db'}"
        with voxflow(tmp_path, db_url, config) as vf:
            proc, base = vf.serve()
            api = account(vf, base)
            db = Database(db_url)
            call_id = place(api, "1001")
            wait_for(vf, "the call answered", lambda: calls(db)[call_id].status == "answered")  # type: ignore[attr-defined]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(EXIT_WITHIN_S) in TERMINATED, vf.logs()
            call = calls(db)[call_id]
            assert call.status == "completed"  # type: ignore[attr-defined]
            assert call.status_reason == "hung up at shutdown: the call outlived shutdown_s (0.5 s)"  # type: ignore[attr-defined]
            assert events(db, call_id)[-1][1]["hangup"] == "shutdown"
            db.dispose()
            assert "BYE sip:" in sipp.messages


@pytest.mark.postgres
def test_api_and_two_dialers_share_postgresql_and_place_each_call_once(
    tmp_path: Path, postgres: PostgresServer, pg_template: str
) -> None:
    db_url = postgres.url(postgres.create_database(template=pg_template))
    with sipp_uas("uas_answer_dtmf") as sipp:
        config = f"[sip]\nport = 0\n{trunk(sipp, hold_s=1, cps=20)}"
        with voxflow(tmp_path, db_url, config) as vf:
            _, base = vf.serve("--no-dialer")
            api = account(vf, base)
            vf.start("dialer", "--name", "dialer-a")
            vf.start("dialer", "--name", "dialer-b")
            db = Database(db_url)
            made = [place(api, f"10{i:02d}") for i in range(12)]
            wait_for(
                vf,
                "every call to end",
                lambda: all(c.ended_at is not None for c in calls(db).values()),  # type: ignore[attr-defined]
            )
            assert {c.status for c in calls(db).values()} == {"completed"}  # type: ignore[attr-defined]
            owners = Counter(
                str(d["by"]).split("/")[0]
                for call_id in made
                for kind, d in events(db, call_id)
                if kind == "dialing"
            )
            assert sum(owners.values()) == 12 and set(owners) <= {"dialer-a", "dialer-b"}
            db.dispose()
            placed = invites(sipp)
            assert len(placed) == 12 and set(placed.values()) == {1}
