"""``voxflow calls list|show|cancel``: the operator's view of calls, across accounts."""

from __future__ import annotations

import argparse
import json

from sqlalchemy import select

from voxflow.clock import SystemClock, wire_time
from voxflow.config import Settings
from voxflow.errors import ApiError
from voxflow.services.call_control import cancel_call, events_of, find_call
from voxflow.store import tables as t
from voxflow.store.db import Database


class CallsError(Exception):
    """A calls command failed; the message is one line for the operator."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: object) -> None:
    calls = sub.add_parser("calls", help="list, show and cancel calls")
    calls_sub = calls.add_subparsers(dest="calls_command", required=True)
    listing = calls_sub.add_parser("list", help="recent calls, newest first")
    listing.add_argument("--account", help="only this account's calls")
    listing.add_argument("--status", help="only calls with this status")
    listing.add_argument("--limit", type=int, default=50)
    show = calls_sub.add_parser("show", help="one call with its events (JSON)")
    show.add_argument("call_id")
    stop = calls_sub.add_parser("cancel", help="cancel a call, or hang up one in progress")
    stop.add_argument("call_id")
    for parser in (listing, show, stop):
        common(parser)  # type: ignore[operator]


def _account_of(db: Database, call_id: str) -> int:
    with db.read() as conn:
        account = conn.execute(
            select(t.calls.c.account_id).where(t.calls.c.call_id == call_id)
        ).scalar()
    if account is None:
        raise CallsError(f"no call {call_id}")
    return int(account)


def run(db: Database, _settings: Settings, args: argparse.Namespace) -> int:
    if args.calls_command == "list":
        q = select(t.calls, t.accounts.c.username).join(
            t.accounts, t.accounts.c.id == t.calls.c.account_id
        )
        if args.account:
            q = q.where(t.accounts.c.username == args.account)
        if args.status:
            q = q.where(t.calls.c.status == args.status)
        with db.read() as conn:
            rows = conn.execute(q.order_by(t.calls.c.id.desc()).limit(args.limit)).all()
        for r in rows:
            print(
                f"{r.call_id}  {r.username:<12} {r.status:<10} {r.destination:<20} "
                f"due {wire_time(r.due_at)}  {r.sip_code or ''} {r.sip_reason or ''}".rstrip()
            )
        return 0
    account = _account_of(db, args.call_id)
    try:
        if args.calls_command == "show":
            with db.read() as conn:
                row = find_call(conn, account, args.call_id)
                events = events_of(conn, row.id)
            shown = {k: (str(v) if v is not None else None) for k, v in row._mapping.items()}
            shown.pop("flow_xml", None)
            shown["events"] = [  # type: ignore[assignment]
                {"at": str(e.at), "kind": e.kind, **e.detail} for e in events
            ]
            print(json.dumps(shown, indent=2))
            return 0
        before = cancel_call(db, account, args.call_id, SystemClock().now())
    except ApiError as exc:
        raise CallsError(str(exc)) from None
    print(
        f"call {args.call_id} was {before.value}: "
        + ("cancelled" if before.value in ("queued", "scheduled") else "its dialer will hang it up")
    )
    return 0
