"""The ``voxflow`` console script, run for real as a subprocess (``python -m voxflow``)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lxml import etree

from tests.support import PostgresServer, free_port

KEY_RE = re.compile(r"^[0-9a-f]{32}$")
TIMEOUT = 120


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of every run: no inherited voxflow settings, data under tmp_path."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VOXFLOW_")}
    clean["VOXFLOW_DATA_DIR"] = str(tmp_path / "data")
    clean["PYTHONUNBUFFERED"] = "1"
    return clean


def voxflow(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voxflow", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=TIMEOUT,
        check=False,
    )


def assert_ok(run: subprocess.CompletedProcess[str]) -> None:
    assert run.returncode == 0, (run.args, run.stdout, run.stderr)


def assert_one_line_failure(run: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit status non-zero, and stderr is exactly one line of reason: no traceback, no log."""
    assert run.returncode != 0, (run.args, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    (reason,) = lines
    assert reason.startswith("voxflow: "), reason
    for fragment in fragments:
        assert fragment in reason, (fragment, reason)
    return reason


def create_account(env: dict[str, str], name: str, *args: str) -> dict[str, str]:
    run = voxflow(env, "account", "create", name, "--json", *args)
    assert_ok(run)
    created = json.loads(run.stdout)
    assert set(created) == {"username", "secureKey"}
    assert created["username"] == name
    assert KEY_RE.match(created["secureKey"]), created
    return {str(k): str(v) for k, v in created.items()}


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


# ------------------------------------------------------------------ accounts and migrations


def test_account_create_prints_a_new_key_once(env: dict[str, str], tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "accounts.db")
    first = create_account(env, "alice", "--db", db)
    second = create_account(env, "bob", "--db", db, "--allow-ip", "10.0.0.0/8", "--sandbox")
    assert first["secureKey"] != second["secureKey"]

    again = voxflow(env, "account", "create", "alice", "--json", "--db", db)
    assert_one_line_failure(again, "alice", "already exists")
    assert again.stdout == ""

    bad_name = voxflow(env, "account", "create", "no spaces please", "--db", db)
    assert_one_line_failure(bad_name, "invalid account name")
    bad_ip = voxflow(env, "account", "create", "carol", "--allow-ip", "10.0.0.999/8", "--db", db)
    assert_one_line_failure(bad_ip, "10.0.0.999/8")

    human = voxflow(env, "account", "create", "dave", "--db", db)
    assert_ok(human)
    assert re.search(r"\b[0-9a-f]{32}\b", human.stdout), human.stdout


def test_db_upgrade_is_idempotent(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "voxflow.db"
    for _ in range(2):
        run = voxflow(env, "db", "upgrade", "--db", sqlite_url(path))
        assert_ok(run)
        assert str(path) in run.stdout
        assert run.stderr == ""
    assert path.exists()


def test_database_url_from_env_config_and_flag(env: dict[str, str], tmp_path: Path) -> None:
    from_env = tmp_path / "from-env.db"
    env_with_url = {**env, "VOXFLOW_DB_URL": sqlite_url(from_env)}
    assert_ok(voxflow(env_with_url, "db", "upgrade"))
    assert from_env.exists()
    create_account(env_with_url, "alice")
    # The account went to the database the env names: a second create there collides.
    assert_one_line_failure(voxflow(env_with_url, "account", "create", "alice"), "already exists")

    # --db wins over the environment.
    from_flag = tmp_path / "from-flag.db"
    create_account(env_with_url, "alice", "--db", sqlite_url(from_flag))
    assert from_flag.exists()

    # The config file's [database] url is used when neither flag nor env is given ...
    from_config = tmp_path / "from-config.db"
    config = tmp_path / "voxflow.toml"
    config.write_text(f'[database]\nurl = "{sqlite_url(from_config)}"\n')
    create_account(env, "alice", "--config", str(config))
    assert from_config.exists()
    # ... and loses to the environment.
    run = voxflow(env_with_url, "account", "create", "alice", "--config", str(config))
    assert_one_line_failure(run, "already exists")

    # Without any of them the database lives in the data directory.
    create_account(env, "alice")
    assert (Path(env["VOXFLOW_DATA_DIR"]) / "voxflow.db").exists()


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("::::", "invalid database URL"),
        ("nosuchdriver://host/db", "cannot use database URL"),
        ("postgresql://nobody@127.0.0.1:{closed}/voxflow", "cannot migrate the database"),
        ("sqlite:///{tmp}/a-file/voxflow.db", "cannot open the database"),
        ("sqlite:///{tmp}", "database"),
    ],
)
def test_bad_database_url_is_a_one_line_failure(
    env: dict[str, str], tmp_path: Path, url: str, fragment: str
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    url = url.format(closed=free_port(), tmp=tmp_path)
    for args in (("db", "upgrade"), ("account", "create", "alice")):
        assert_one_line_failure(voxflow(env, *args, "--db", url), fragment)
        assert_one_line_failure(voxflow({**env, "VOXFLOW_DB_URL": url}, *args), fragment)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read config file"),
        ("directory", "cannot read config file"),
        ("unreadable", "cannot read config file"),
        ("port = = 1\n", "is not valid TOML"),
        ("[server]\nport = 99999\n", "port must be a number from 1 to 65535"),
        ('[server]\nport = "8080"\n', "port must be a number from 1 to 65535"),
        ("server = 1\n", "[server] must be a table"),
        ("database = 'x'\n", "[database] must be a table"),
        ("[dialer]\nlease_s = 1\n", "[dialer] lease_s must be a number from 3 to 3600"),
        ('[dialer]\nname = "a/b"\n', "[dialer] name must be text of at most 50 characters"),
        ("[limits]\nmax_concurrent_link = -1\n", "[limits] max_concurrent_link must be a number"),
        pytest.param(b'[server]\nhost = "\xff\xfe"\n', "is not valid TOML", id="not-utf-8"),
    ],
)
def test_bad_config_is_a_one_line_failure(
    env: dict[str, str], tmp_path: Path, content: str | bytes | None, fragment: str
) -> None:
    path = tmp_path / "voxflow.toml"
    if content == "directory":
        path.mkdir()
    elif content == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("root can read a file without read permission")
        path.write_text("[server]\nport = 8080\n")
        path.chmod(0)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    db = sqlite_url(tmp_path / "voxflow.db")
    for args in (("db", "upgrade"), ("account", "create", "alice"), ("serve",)):
        assert_one_line_failure(voxflow(env, *args, "--db", db, "--config", str(path)), fragment)
    assert_one_line_failure(
        voxflow({**env, "VOXFLOW_CONFIG": str(path)}, "db", "upgrade", "--db", db), fragment
    )


def test_a_dialer_that_cannot_have_its_sip_port_is_a_one_line_failure(
    env: dict[str, str], tmp_path: Path
) -> None:
    db = sqlite_url(tmp_path / "voxflow.db")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = str(taken.getsockname()[1])
        run = voxflow(env, "dialer", "--db", db, "--sip-host", "127.0.0.1", "--sip-port", port)
    assert_one_line_failure(run, f"cannot listen on 127.0.0.1:{port}")
    assert_one_line_failure(voxflow(env, "dialer", "--db", db, "--name", "a/b"), "--name must be")


def test_the_installed_console_script(env: dict[str, str], tmp_path: Path) -> None:
    """``.venv/bin/voxflow`` (what ``make run`` starts) is the same program."""
    script = Path(sys.executable).with_name("voxflow")
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable} (not installed with pip)")
    db = sqlite_url(tmp_path / "script.db")
    run = subprocess.run(
        [str(script), "account", "create", "alice", "--json", "--db", db],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=TIMEOUT,
        check=False,
    )
    assert_ok(run)
    assert KEY_RE.match(json.loads(run.stdout)["secureKey"])


def test_usage_errors_exit_non_zero(env: dict[str, str]) -> None:
    for args in (
        (),
        ("nosuchcommand",),
        ("account",),
        ("serve", "--port", "http"),
        ("serve", "--port", "70000"),  # would otherwise listen on 70000 % 65536
        ("serve", "--port", "0"),
        ("serve", "--port", "-1"),
    ):
        run = voxflow(env, *args)
        assert run.returncode != 0, args
        assert "Traceback" not in run.stderr
    version = voxflow(env, "--version")
    assert_ok(version)
    assert version.stdout.startswith("voxflow ")


# ------------------------------------------------------------------ serve


@pytest.fixture
def serve(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``voxflow serve`` on a free port with one account; yields its base URL and credentials."""
    db = sqlite_url(tmp_path / "served.db")
    account = create_account(env, "alice", "--db", db)
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voxflow", "serve", "--port", str(port), "--db", db],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"voxflow serve exited with {proc.returncode}: {log_path.read_text()}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"voxflow serve did not answer within 60 s: {log_path.read_text()}")
            time.sleep(0.1)
        yield base, account
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_answers_health_and_authenticated_requests(
    serve: tuple[str, dict[str, str]],
) -> None:
    base, account = serve
    health = httpx.get(f"{base}/health", timeout=10)
    assert health.status_code == 200 and health.text == "ok"

    headers = {"username": account["username"], "secureKey": account["secureKey"]}
    params = {"v": "3", "method": "getNodes"}
    r = httpx.get(f"{base}/Nodes", params=params, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    root = etree.fromstring(r.content)
    assert root.tag == "response"
    assert root.findtext("total_results") == "0"

    body = b"<request><node><node_id>n1</node_id><node_name>a</node_name></node></request>"
    r = httpx.post(
        f"{base}/Nodes",
        params={"v": "3", "method": "createNodes"},
        headers=headers,
        content=body,
        timeout=10,
    )
    assert r.status_code == 201, r.text

    wrong = {**headers, "secureKey": "0" * 32}
    r = httpx.get(f"{base}/Nodes", params=params, headers=wrong, timeout=10)
    assert r.status_code == 401


def test_serve_on_a_busy_port_fails(env: dict[str, str], tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = voxflow(env, "serve", "--port", str(port), "--db", sqlite_url(tmp_path / "x.db"))
    assert run.returncode != 0
    assert "Traceback" not in run.stderr


# ------------------------------------------------------------------ PostgreSQL


@pytest.mark.postgres
def test_postgres_upgrade_and_account_create(env: dict[str, str], postgres: PostgresServer) -> None:
    url = postgres.url(postgres.create_database())
    for _ in range(2):
        run = voxflow(env, "db", "upgrade", "--db", url)
        assert_ok(run)
        assert run.stderr == ""
    create_account(env, "alice", "--db", url)
    assert_one_line_failure(
        voxflow(env, "account", "create", "alice", "--db", url), "already exists"
    )

    # The plain postgresql:// form (no driver) works too, from the environment.
    plain = f"postgresql://postgres@127.0.0.1:{postgres.port}/{postgres.create_database()}"
    pg_env = {**env, "VOXFLOW_DB_URL": plain}
    assert_ok(voxflow(pg_env, "db", "upgrade"))
    create_account(pg_env, "alice")
    create_account(pg_env, "bob")

    missing = postgres.url("no_such_database")
    assert_one_line_failure(voxflow(env, "db", "upgrade", "--db", missing), "no_such_database")


def test_calls_list_show_and_cancel(env: dict[str, str], tmp_path: Path) -> None:
    from tests.support import start_server, wrap
    from voxflow.store.db import Database

    db_url = sqlite_url(tmp_path / "calls.db")
    db = Database(db_url)
    db.upgrade()
    server = start_server(db)
    try:
        api = server.client("carol")
        from tests.support import attach, make_flow, make_link

        make_link(api)
        make_flow(
            api,
            '<callFlow name="F"><call id="c" label="A" destinationPhoneNumber="4411"/></callFlow>',
        )
        attach(api, "F", "link123")
        body = wrap(
            "<link_id>link123</link_id><call_variables><call_destination>4499</call_destination>"
            "<delay>10</delay></call_variables>"
        )
        call_id = etree.fromstring(api.post("Calling", "initiateCall", body).content).findtext(
            "call_id"
        )
    finally:
        server.stop()
        db.dispose()
    listed = voxflow(env, "calls", "list", "--db", db_url)
    assert_ok(listed)
    assert call_id in listed.stdout and "scheduled" in listed.stdout
    shown = voxflow(env, "calls", "show", str(call_id), "--db", db_url)
    assert_ok(shown)
    assert json.loads(shown.stdout)["events"][0]["kind"] == "scheduled"
    assert_ok(voxflow(env, "calls", "cancel", str(call_id), "--db", db_url))
    again = voxflow(env, "calls", "cancel", str(call_id), "--db", db_url)
    assert_one_line_failure(again, "cannot be cancelled")
    assert_one_line_failure(voxflow(env, "calls", "show", "nope", "--db", db_url), "no call nope")
