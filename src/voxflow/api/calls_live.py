"""Calling::getCall, getCalls and cancelCall: live status and cancellation (beyond iovox)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from voxflow.api import paging, xmlcodec
from voxflow.api.routing import Request, Result, route
from voxflow.api.xmlcodec import Tree
from voxflow.clock import parse_wire_time, wire_time
from voxflow.domain.calls import CallStatus
from voxflow.errors import ApiError
from voxflow.services.call_control import cancel_call, events_of, find_call
from voxflow.store import tables as t

CALL_COLUMNS = paging.Columns(
    [
        ("id", "call_id"),
        ("st", "status"),
        ("lid", "link_id"),
        ("cd", "call_destination"),
        ("cr", "created"),
        ("sf", "scheduled_for"),
        ("en", "ended"),
        ("res", "result"),
        ("sc", "sip_code"),
    ]
)


def _summary(row: Any) -> dict[str, str]:
    return {
        "call_id": row.call_id,
        "status": row.status,
        "link_id": row.link_id,
        "call_destination": row.destination,
        "created": wire_time(row.created_at),
        "scheduled_for": wire_time(row.due_at),
        "ended": wire_time(row.ended_at),
        "result": row.result or "",
        "sip_code": str(row.sip_code) if row.sip_code is not None else "",
    }


@route("Calling", "getCall", "GET")
def get_call(req: Request) -> Result:
    with req.db.read() as conn:
        row = find_call(conn, req.account.id, req.query.get("call_id", "").strip())
        events = events_of(conn, row.id)
    call: dict[str, Tree] = {
        **_summary(row),
        "dial_string": row.dial_string,
        "node_id": row.node_id,
        "call_flow": row.call_flow_name,
        "started": wire_time(row.started_at),
        "answered": wire_time(row.answered_at),
        "sip_reason": row.sip_reason or "",
        "attempts": str(row.attempts),
        "cancel_requested": wire_time(row.cancel_requested_at),
        # voxflow: why a call ended as unknown or expired; how long it waited for its trunk.
        "status_reason": row.status_reason or "",
        "queue_wait_ms": str(row.queue_wait_ms) if row.queue_wait_ms is not None else "",
        "events": {
            "event": [
                {
                    "at": e.at.isoformat(sep=" ", timespec="milliseconds"),
                    "kind": e.kind,
                    "details": {str(k): str(v) for k, v in e.detail.items()} or None,
                }
                for e in events
            ]
        },
    }
    return Result(200, {"call": call})


@route("Calling", "getCalls", "GET")
def get_calls(req: Request) -> Result:
    q = select(t.calls).where(t.calls.c.account_id == req.account.id)
    status = req.query.get("status", "").strip()
    if status:
        if status not in {s.value for s in CallStatus}:
            raise ApiError("Status Invalid")
        q = q.where(t.calls.c.status == status)
    for param, column in (
        ("link_id", t.calls.c.link_id),
        ("call_destination", t.calls.c.destination),
    ):
        if req.query.get(param, "").strip():
            q = q.where(column == req.query[param].strip())
    for param, label, op in (
        ("sdt", "Start Date Invalid", "ge"),
        ("edt", "End Date Invalid", "le"),
    ):
        raw = req.query.get(param, "").strip()
        if raw:
            when = parse_wire_time(raw)
            if when is None:
                raise ApiError(label)
            q = q.where(
                t.calls.c.created_at >= when if op == "ge" else t.calls.c.created_at <= when
            )
    paging.page_params(req.query)
    with req.db.read() as conn:
        rows = [_summary(r) for r in conn.execute(q.order_by(t.calls.c.id.desc()))]
    return Result(200, paging.paged(req.query, rows, CALL_COLUMNS, default_order="cr_DESC"))


@route("Calling", "cancelCall", "PUT")
def cancel(req: Request) -> Result:
    assert req.body is not None
    call_id = xmlcodec.text(req.body, "call_id") or ""
    cancel_call(req.db, req.account.id, call_id, req.clock.now())
    return Result.no_content()
