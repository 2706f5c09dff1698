"""Shared pieces of the benchmarks: a voxflow server process on a scratch database."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
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
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise SystemExit("voxflow did not start")
        time.sleep(0.1)
    return Server(process, base, account["username"], account["secureKey"], workdir)
