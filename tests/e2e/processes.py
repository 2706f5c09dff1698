"""Real ``voxflow`` processes for end-to-end tests: start, stop, kill and restart them on one
database and config, drive their API, and read what SIPp saw (its own ``-trace_msg`` log)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.peers.sipp import Sipp
from tests.support import ApiClient, attach, free_port, make_flow, make_link, wrap, xml_of
from voxflow.store import tables as t
from voxflow.store.db import Database

FLOW = '<callFlow name="F"><call id="c" label="Agent" destinationPhoneNumber="441234"/></callFlow>'
EXIT_WITHIN_S = 120  # generous bounds: these are about what happens, not how fast
FINAL_WITHIN_S = 60
START_WITHIN_S = 30


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

    def serve(self, *extra: str, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
        """``voxflow serve`` on ``port`` (default: a free one), once it answers /health."""
        port = port or free_port()
        proc = self.start("serve", "--port", str(port), *extra)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_WITHIN_S
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    return proc, base
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"voxflow serve did not start: {self.logs()}")
            time.sleep(0.1)

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        return next(log.read_text(errors="replace") for p, log in self.procs if p is proc)

    def wait_logged(self, proc: subprocess.Popen[bytes], text: str) -> None:
        """Wait until ``proc`` wrote ``text`` to its log (e.g. a dialer's start line)."""
        deadline = time.monotonic() + START_WITHIN_S
        while text not in self.log_of(proc):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no {text!r} from the process: {self.logs()}")
            time.sleep(0.05)

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


def trunk(sipp: Sipp, rtp: tuple[int, int] = (31000, 32100), **extra: object) -> str:
    """A ``[[trunks]]`` table to SIPp. The RTP ports are below the kernel's ephemeral ports and
    away from the default range that a benchmark on this machine may be filling; tests running
    at the same time use ranges of their own."""
    keys = "".join(f"{k} = {v}\n" for k, v in extra.items())
    return (
        f'[[trunks]]\nname = "sipp"\nhost = "127.0.0.1"\nport = {sipp.port}\n'
        f'caller_id = "441234567890"\nring_timeout_s = 10\n{keys}'
        f"rtp_port_min = {rtp[0]}\nrtp_port_max = {rtp[1]}\n"
    )


def account(vf: Voxflow, base: str) -> ApiClient:
    key = json.loads(vf.run("account", "create", "acme", "--json"))["secureKey"]
    api = ApiClient(base, "acme", key)
    make_link(api)
    make_flow(api, FLOW)
    attach(api, "F", "link123")
    return api


def initiate(dest: str, delay: int | None = None) -> str:
    """The body of an initiateCall to ``dest`` on link123, ``delay`` minutes from now."""
    later = f"<delay>{delay}</delay>" if delay is not None else ""
    return wrap(
        f"<link_id>link123</link_id><call_variables><call_destination>{dest}</call_destination>"
        f"{later}</call_variables>"
    )


def place(api: ApiClient, dest: str, delay: int | None = None) -> str:
    r = api.post("Calling", "initiateCall", initiate(dest, delay))
    assert r.status_code == 201, r.text
    return xml_of(r).findtext("call_id") or ""


def calls(db: Database) -> dict[str, Any]:
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


def wait_for(
    vf: Voxflow, what: str, check: Callable[[], object], within_s: float = FINAL_WITHIN_S
) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}: {vf.logs()}")
        time.sleep(0.1)


def _received_invites(sipp: Sipp) -> set[tuple[str, str, str]]:
    """(Request-URI user, Call-ID, CSeq) of each INVITE in SIPp's message log (a UAS sends no
    INVITE; retransmissions have the same Call-ID and CSeq and count once)."""
    seen = set()
    for message in re.split(r"^INVITE sip:", sipp.messages, flags=re.M)[1:]:
        headers = message.split("\n\n", 1)[0]
        user = re.match(r"([^@;> ]*)@", message)
        call = re.search(r"^Call-ID:\s*(\S+)", headers, re.M | re.I)
        cseq = re.search(r"^CSeq:\s*(\d+)", headers, re.M | re.I)
        assert user and call and cseq, headers
        seen.add((user.group(1), call.group(1), cseq.group(1)))
    return seen


def invites(sipp: Sipp) -> Counter[str]:
    """INVITEs SIPp received, per Call-ID."""
    return Counter(call for _, call, _ in _received_invites(sipp))


def invites_per_destination(sipp: Sipp) -> dict[str, set[str]]:
    """The distinct Call-IDs of the INVITEs SIPp received, per destination number (the user of
    the Request-URI)."""
    found: dict[str, set[str]] = defaultdict(set)
    for user, call, _ in _received_invites(sipp):
        found[user].add(call)
    return dict(found)
