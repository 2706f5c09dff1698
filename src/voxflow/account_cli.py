"""``voxflow account limits|callback`` and ``voxflow links callback``: per-account settings
that live beyond the iovox wire API."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from voxflow.clock import SystemClock
from voxflow.config import Settings
from voxflow.digits import ascii_digits
from voxflow.domain.limits import UNLIMITED, Limits
from voxflow.services import callbacks, limits
from voxflow.store import tables as t
from voxflow.store.db import Database

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

Common = Callable[[argparse.ArgumentParser], None]

# Command-line option → account_limits column.
LIMIT_OPTIONS = {
    "--per-destination-15m": "per_destination_15m",
    "--per-destination-1h": "per_destination_1h",
    "--per-destination-24h": "per_destination_24h",
    "--concurrent-account": "max_concurrent_account",
    "--concurrent-link": "max_concurrent_link",
}


class SettingsError(Exception):
    """An account setting cannot be changed; the message is one line for the operator."""


def _limit_value(value: str) -> int | None:
    if value == "default":
        return None
    if not ascii_digits(value) or int(value) > 1_000_000:
        raise argparse.ArgumentTypeError(
            f"must be a number from 0 (unlimited) to 1000000, or 'default', not {value!r}"
        )
    return int(value)


def add_account_parsers(account_sub: Subparsers, common: Common) -> None:
    lim = account_sub.add_parser(
        "limits", help="show or set an account's call limits (0 = unlimited)"
    )
    common(lim)
    lim.add_argument("name")
    for option, column in LIMIT_OPTIONS.items():
        # Absent unless given, so that "default" (None) and 0 (unlimited) both count as given.
        lim.add_argument(
            option, dest=column, type=_limit_value, metavar="N|default", default=argparse.SUPPRESS
        )
    lim.add_argument("--show", action="store_true", help="print the limits (the default)")
    lim.add_argument("--json", action="store_true", help="print JSON")
    cb = account_sub.add_parser("callback", help="set or clear the account's status callback URL")
    common(cb)
    cb.add_argument("name")
    _url_arguments(cb)


def add_links_parser(sub: Subparsers, common: Common) -> None:
    links = sub.add_parser("links", help="link settings beyond the iovox API")
    links_sub = links.add_subparsers(dest="links_command", required=True)
    cb = links_sub.add_parser("callback", help="set or clear a link's status callback URL")
    common(cb)
    cb.add_argument("--account", required=True, metavar="NAME")
    cb.add_argument("link_id")
    _url_arguments(cb)


def _url_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("url", nargs="?", help="http:// or https:// URL to POST each status to")
    group.add_argument("--clear", action="store_true", help="remove the URL")


def _account_id(conn: Connection, name: str) -> int:
    found = conn.execute(select(t.accounts.c.id).where(t.accounts.c.username == name)).scalar()
    if found is None:
        raise SettingsError(f"no account {name!r}")
    return int(found)


def _show_limits(own: dict[str, int | None], defaults: Limits, as_json: bool) -> None:
    effective = defaults.overridden(own)
    rows: dict[str, Any] = {
        name: {
            "value": effective.value(name),
            "source": "default" if own.get(name) is None else "account",
        }
        for name in Limits.names()
    }
    if as_json:
        print(json.dumps(rows, sort_keys=False))
        return
    for name, row in rows.items():
        value = "unlimited" if row["value"] == UNLIMITED else str(row["value"])
        print(f"{name:<24} {value:<10} ({row['source']})")


def run_limits(db: Database, settings: Settings, args: argparse.Namespace) -> int:
    changes = {c: getattr(args, c) for c in LIMIT_OPTIONS.values() if hasattr(args, c)}
    with db.write() as conn:
        account_id = _account_id(conn, args.name)
        if changes:
            own = limits.set_own_limits(conn, account_id, changes, SystemClock().now())
        else:
            own = limits.own_limits(conn, account_id)
    _show_limits(own, settings.limits, args.json)
    return 0


def run_account_callback(db: Database, args: argparse.Namespace) -> int:
    url = None if args.clear else args.url
    try:
        with db.write() as conn:
            callbacks.set_account_url(conn, _account_id(conn, args.name), url)
    except callbacks.CallbackUrlError as exc:
        raise SettingsError(str(exc)) from None
    print(f"account {args.name}: status callback {'cleared' if url is None else url}")
    return 0


def run_link_callback(db: Database, args: argparse.Namespace) -> int:
    url = None if args.clear else args.url
    try:
        with db.write() as conn:
            if not callbacks.set_link_url(conn, _account_id(conn, args.account), args.link_id, url):
                raise SettingsError(f"account {args.account!r} has no link {args.link_id!r}")
    except callbacks.CallbackUrlError as exc:
        raise SettingsError(str(exc)) from None
    print(f"link {args.link_id}: status callback {'cleared' if url is None else url}")
    return 0
