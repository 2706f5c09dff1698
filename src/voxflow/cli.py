"""The ``voxflow`` command. Every subcommand exits non-zero with a one-line reason on failure."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

from voxflow import __version__, account_cli, calls_cli, logs
from voxflow.clock import SystemClock
from voxflow.config import ConfigError, Settings, load
from voxflow.digits import ascii_digits
from voxflow.services.accounts import AccountError, create_account
from voxflow.store.db import DatabaseError


def _port(value: str) -> int:
    # Checked here: the socket layer would silently take the port modulo 65536.
    if not ascii_digits(value) or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"must be a number from 1 to 65535, not {value!r}")
    return int(value)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="URL", help="database URL (env VOXFLOW_DB_URL)")
    parser.add_argument("--config", metavar="FILE", help="TOML configuration (env VOXFLOW_CONFIG)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxflow", description=__doc__)
    parser.add_argument("--version", action="version", version=f"voxflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API server")
    _common(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port to listen on (default 8080)")
    serve.add_argument("--no-dialer", action="store_true", help="run the API alone")

    dialer = sub.add_parser("dialer", help="run a dialer alone (no API)")
    _common(dialer)
    dialer.add_argument("--sip-host", help="SIP address of this dialer (default [sip] host)")
    dialer.add_argument(
        "--sip-port", type=_port, help="SIP port of this dialer (default [sip] port)"
    )
    dialer.add_argument("--name", help="stable, unique name of this dialer (default [dialer] name)")

    phone = sub.add_parser("softphone", help="answer SIP calls and log the keypresses heard")
    _common(phone)
    phone.add_argument("--host", default="127.0.0.1", help="SIP address (default 127.0.0.1)")
    phone.add_argument("--port", type=_port, default=5070, help="SIP port (default 5070)")
    phone.add_argument("--answer-after", type=float, default=0.5, metavar="SECONDS")
    phone.add_argument("--record-dir", metavar="DIR", help="save each call's audio here as WAV")

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="apply migrations")
    _common(upgrade)

    calls_cli.add_parser(sub, _common)

    account = sub.add_parser("account", help="manage accounts")
    account_sub = account.add_subparsers(dest="account_command", required=True)
    create = account_sub.add_parser("create", help="create an account and print its secureKey")
    _common(create)
    create.add_argument("name")
    create.add_argument("--allow-ip", action="append", default=[], metavar="CIDR")
    create.add_argument("--sandbox", action="store_true", help="never dial a real trunk")
    create.add_argument("--json", action="store_true", help="print JSON")
    account_cli.add_account_parsers(account_sub, _common)
    account_cli.add_links_parser(sub, _common)
    return parser


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import gc

    import uvicorn

    from voxflow.app import create_app

    app, db = create_app(settings, dialer=not args.no_dialer)
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    # Everything loaded so far (modules, tables, compiled statements) lives as long as the
    # process. Frozen, the collector no longer walks it on every full collection, which had
    # stopped the event loop for tens of milliseconds at a time under load (bench/api_accept.py:
    # initiateCall p99 113 ms -> 40 ms, server CPU per call 270 -> 190 µs).
    gc.collect()
    gc.freeze()
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
    finally:
        db.dispose()
    return 0


def _dialer(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from voxflow.app import open_database, run_dialer

    tel = settings.telephony
    tel.sip_host = args.sip_host or tel.sip_host
    tel.sip_port = args.sip_port if args.sip_port is not None else tel.sip_port
    if args.name is not None:
        if not args.name or len(args.name) > 50 or "/" in args.name:
            raise ConfigError("--name must be 1-50 characters without '/'")
        tel.dialer_name = args.name
    db = open_database(settings)
    try:
        asyncio.run(run_dialer(db, settings))
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {tel.sip_host}:{tel.sip_port}: {exc.strerror}"
        ) from None
    finally:
        db.dispose()
    return 0


def _account_create(settings: Settings, args: argparse.Namespace) -> int:
    from voxflow.app import open_database

    db = open_database(settings)
    try:
        new = create_account(db, SystemClock(), args.name, args.allow_ip, args.sandbox)
    finally:
        db.dispose()
    if args.json:
        print(json.dumps({"username": new.username, "secureKey": new.secure_key}))
    else:
        print(f"account {new.username} created")
        print(f"secureKey: {new.secure_key}  (shown once; store it now)")
    return 0


def _account_settings(settings: Settings, args: argparse.Namespace) -> int:
    from voxflow.app import open_database

    db = open_database(settings)
    try:
        if args.command == "links":
            return account_cli.run_link_callback(db, args)
        if args.account_command == "limits":
            return account_cli.run_limits(db, settings, args)
        return account_cli.run_account_callback(db, args)
    finally:
        db.dispose()


def _db_upgrade(settings: Settings, _args: argparse.Namespace) -> int:
    from voxflow.app import open_database

    open_database(settings).dispose()
    print(f"database is up to date: {settings.database_url}")
    return 0


def _calls(settings: Settings, args: argparse.Namespace) -> int:
    from voxflow.app import open_database

    db = open_database(settings)
    try:
        return calls_cli.run(db, settings, args)
    finally:
        db.dispose()


def _softphone(_settings: Settings, args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from voxflow.media.clock import MediaClock
    from voxflow.telephony.softphone import Softphone

    async def run() -> None:
        media = MediaClock()
        media.start()
        record_dir = Path(args.record_dir) if args.record_dir else None
        phone = Softphone(media, answer_after_s=args.answer_after, record_dir=record_dir)
        try:
            await phone.start(args.host, args.port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
        try:
            await asyncio.Event().wait()
        finally:
            await phone.close()
            await media.stop()

    asyncio.run(run())
    return 0


Command = Callable[[Settings, argparse.Namespace], int]


def _command(args: argparse.Namespace) -> Command:
    if args.command == "account":
        return _account_create if args.account_command == "create" else _account_settings
    commands: dict[str, Command] = {
        "serve": _serve,
        "db": _db_upgrade,
        "dialer": _dialer,
        "softphone": _softphone,
        "calls": _calls,
        "links": _account_settings,
    }
    return commands[args.command]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup()
    # Alembic logs every migration step at INFO; keep stderr to the one-line reason on failure.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        settings = load(args.config, args.db)
        return _command(args)(settings, args)
    except (
        ConfigError,
        DatabaseError,
        AccountError,
        calls_cli.CallsError,
        account_cli.SettingsError,
    ) as exc:
        print(f"voxflow: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
