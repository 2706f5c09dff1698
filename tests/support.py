"""Test helpers: a voxflow server on a real socket, a PostgreSQL server, and an API client."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from lxml import etree
from sqlalchemy import text

from voxflow.api.http import build_app
from voxflow.clock import Clock, SystemClock
from voxflow.domain.limits import Limits
from voxflow.services.accounts import create_account
from voxflow.store.db import Database

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ PostgreSQL


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for version in ("17", "16", "15", "14", "13"):
        candidate = Path(f"/usr/lib/postgresql/{version}/bin/{name}")
        if candidate.exists():
            return str(candidate)
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster in a temporary directory, on a loopback port."""

    root: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    _counter: int = 0

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    @classmethod
    def start(cls) -> PostgresServer:
        initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
        if not initdb or not postgres:
            raise RuntimeError("PostgreSQL binaries (initdb, postgres) are not installed")
        root = Path(tempfile.mkdtemp(prefix="voxflow-pg-"))
        data = root / "data"
        prefix: list[str] = []
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: run it as the postgres user.
            os.chmod(root, 0o777)
            prefix = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [
                *prefix,
                initdb,
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        port = free_port()
        server = cls(root=root, port=port)
        server.process = subprocess.Popen(
            [
                *prefix,
                postgres,
                "-D",
                str(data),
                "-p",
                str(port),
                "-h",
                "127.0.0.1",
                "-k",
                str(root),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return server
            if server.process.poll() is not None:
                raise RuntimeError("PostgreSQL exited during start")
            time.sleep(0.1)
        server.stop()
        raise RuntimeError("PostgreSQL did not start within 30 s")

    def create_database(self, template: str | None = None) -> str:
        self._counter += 1
        name = f"t{os.getpid()}_{self._counter}_{uuid.uuid4().hex[:6]}"
        db = Database(self.admin_url)
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            suffix = f" TEMPLATE {template}" if template else ""
            conn.execute(text(f"CREATE DATABASE {name}{suffix}"))
        db.dispose()
        return name

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


# ------------------------------------------------------------------ voxflow server


@dataclass
class RunningServer:
    db: Database
    base_url: str
    thread: threading.Thread
    server: uvicorn.Server
    accounts: dict[str, tuple[str, str]] = field(default_factory=dict)

    def create_account(
        self, name: str, *, sandbox: bool = False, allow_ips: list[str] | None = None
    ) -> tuple[str, str]:
        new = create_account(self.db, SystemClock(), name, allow_ips or [], sandbox)
        self.accounts[name] = (new.username, new.secure_key)
        return new.username, new.secure_key

    def client(self, name: str) -> ApiClient:
        if name not in self.accounts:
            self.create_account(name)
        username, key = self.accounts[name]
        return ApiClient(self.base_url, username, key)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def start_server(
    db: Database, clock: Clock | None = None, *, limits: Limits | None = None
) -> RunningServer:
    app = build_app(db, clock or SystemClock(), limits=limits)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("voxflow test server did not start")
        time.sleep(0.01)
    return RunningServer(db=db, base_url=f"http://127.0.0.1:{port}", thread=thread, server=server)


# ------------------------------------------------------------------ client


class ApiClient:
    """An iovox client: ``api.post("Links", "createLinks", xml)`` → httpx.Response."""

    def __init__(self, base_url: str, username: str, key: str) -> None:
        self.username = username
        self.key = key
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"username": self.username, "secureKey": self.key, **(extra or {})}

    def request(
        self,
        verb: str,
        interface: str,
        method: str,
        body: str | bytes | None = None,
        headers: dict[str, str] | None = None,
        **params: Any,
    ) -> httpx.Response:
        query = {"v": "3", "method": method, **{k: str(v) for k, v in params.items()}}
        content = body.encode() if isinstance(body, str) else body
        return self.http.request(
            verb, f"/{interface}", params=query, content=content, headers=self.headers(headers)
        )

    def get(self, interface: str, method: str, **params: Any) -> httpx.Response:
        return self.request("GET", interface, method, **params)

    def delete(self, interface: str, method: str, **params: Any) -> httpx.Response:
        return self.request("DELETE", interface, method, **params)

    def post(
        self,
        interface: str,
        method: str,
        body: str | bytes,
        headers: dict[str, str] | None = None,
        **params: Any,
    ) -> httpx.Response:
        return self.request("POST", interface, method, body, headers, **params)

    def put(self, interface: str, method: str, body: str | bytes, **params: Any) -> httpx.Response:
        return self.request("PUT", interface, method, body, **params)

    def close(self) -> None:
        self.http.close()


def errors_of(resp: httpx.Response) -> list[str]:
    """The error messages of an iovox error document (asserting its shape)."""
    assert resp.headers["content-type"].startswith("application/xml"), resp.text
    root = etree.fromstring(resp.content)
    assert root.tag == "errors", resp.text
    return [e.text or "" for e in root.findall("error")]


def xml_of(resp: httpx.Response) -> etree._Element:
    return etree.fromstring(resp.content)


def rows_of(resp: httpx.Response) -> list[dict[str, str]]:
    """The ``results/result`` rows of a paged XML read as dicts."""
    root = xml_of(resp)
    return [{c.tag: (c.text or "") for c in r} for r in root.findall("results/result")]


def wrap(*items: str) -> str:
    return '<?xml version="1.0" encoding="utf-8"?><request>' + "".join(items) + "</request>"


def make_link(api: ApiClient, link_id: str = "link123", node_id: str = "node1") -> None:
    """Create a node (if needed) and a link under it, asserting success."""
    nodes = api.get("Nodes", "getNodes", node_id=node_id)
    if not rows_of(nodes):
        r = api.post(
            "Nodes",
            "createNodes",
            wrap(f"<node><node_id>{node_id}</node_id><node_name>N</node_name></node>"),
        )
        assert r.status_code == 201, r.text
    r = api.post(
        "Links",
        "createLinks",
        wrap(
            f"<link><node_id>{node_id}</node_id><link_id>{link_id}</link_id>"
            f"<link_name>{link_id} name</link_name><link_type>web</link_type></link>"
        ),
    )
    assert r.status_code == 201, r.text


def make_flow(api: ApiClient, flow_xml: str) -> None:
    r = api.post("CallFlow", "createCallFlow", wrap(flow_xml))
    assert r.status_code == 201, r.text


def attach(api: ApiClient, template: str, *link_ids: str, rules_variable: str = "") -> None:
    ids = "".join(f"<link_id>{i}</link_id>" for i in link_ids)
    r = api.put(
        "Links",
        "attachRuleTemplateToLinks",
        wrap(
            f"<template_name>{template}</template_name><overwrite_existing>TRUE</overwrite_existing>"
            f"<link_ids>{ids}</link_ids>{rules_variable}"
        ),
    )
    assert r.status_code == 204, r.text


class MovableClock:
    """An injected clock that tests move on by hand (``advance(minutes=1)``)."""

    def __init__(self) -> None:
        self.at = datetime(2026, 11, 26, 12, 0, 0)

    def now(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)
