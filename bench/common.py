"""Shared pieces of the benchmarks: a voxflow server process on a scratch database."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def udp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stop_process(
    process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace_s: float = 5.0
) -> None:
    """Signal, wait ``grace_s``, then SIGKILL."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_udp_listener(args: list[str], cwd: Path, port: int) -> subprocess.Popen[bytes]:
    """Start a UDP server (SIPp) and wait (10 s at most) until it has bound ``port``; else stop
    it and exit."""
    process = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while udp_port_free(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise SystemExit(f"{args[0]} did not start: {' '.join(args)}")
        time.sleep(0.05)
    return process


def wait_healthy(base_url: str, process: subprocess.Popen[bytes], what: Callable[[], str]) -> None:
    """Wait (30 s at most) until voxflow at ``base_url`` answers /health; else stop it and exit
    with ``what()`` (e.g. the tail of its log)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            stop_process(process, signal.SIGKILL, 5)
            raise SystemExit(f"voxflow serve did not start{what()}")
        time.sleep(0.1)


def prepare_link(base_url: str, headers: dict[str, str], link_id: str, flow: str) -> None:
    """A node, the link ``link_id`` and the call flow ``flow`` (named Bench) attached to it,
    through the API."""
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as c:

        def call(verb: str, interface: str, method: str, body: str) -> None:
            r = c.request(verb, f"/{interface}", params={"v": "3", "method": method}, content=body)
            r.raise_for_status()

        call("POST", "Nodes", "createNodes", "<request><node><node_id>n</node_id></node></request>")
        call(
            "POST",
            "Links",
            "createLinks",
            f"<request><link><node_id>n</node_id><link_id>{link_id}</link_id>"
            "<link_name>Bench</link_name><link_type>web</link_type></link></request>",
        )
        call("POST", "CallFlow", "createCallFlow", flow)
        call(
            "PUT",
            "Links",
            "attachRuleTemplateToLinks",
            f"<request><template_name>Bench</template_name><link_ids><link_id>{link_id}"
            "</link_id></link_ids></request>",
        )


def voxflow(*args: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "voxflow", *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return out.stdout


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    username: str
    key: str
    workdir: Path

    def headers(self) -> dict[str, str]:
        return {"username": self.username, "secureKey": self.key}

    def stop(self) -> None:
        stop_process(self.process, grace_s=15)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_server(db_url: str | None = None) -> Server:
    workdir = Path(tempfile.mkdtemp(prefix="voxflow-bench-"))
    db = db_url or f"sqlite:///{workdir / 'voxflow.db'}"
    account = json.loads(voxflow("account", "create", "bench", "--json", "--db", db))
    port = free_port()
    env = {**os.environ, "VOXFLOW_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen(
        [sys.executable, "-m", "voxflow", "serve", "--port", str(port), "--db", db],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base, process, lambda: "")
    return Server(process, base, account["username"], account["secureKey"], workdir)
