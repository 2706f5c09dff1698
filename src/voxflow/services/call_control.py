"""Seeing and cancelling calls (beyond iovox): getCall, getCalls and cancelCall.

A call that has not started is cancelled at once. A call in progress gets a cancel request in
its row; the dialer that owns it sees the request on its next poll and hangs the call up
(CANCEL while ringing, BYE once answered), which works across processes. A call that has
ended cannot be cancelled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from voxflow.domain.calls import FINAL, IN_PROGRESS, NOT_STARTED, CallStatus
from voxflow.errors import ApiError
from voxflow.services import callbacks
from voxflow.store import tables as t
from voxflow.store.db import Database

CALL_DOES_NOT_EXIST = "Call ID does not exist"
CALL_ID_EMPTY = "Call ID Empty"


def cannot_cancel(call_id: str) -> str:
    return f"Call ID {call_id} cannot be cancelled"


@dataclass(frozen=True)
class CallEvent:
    at: datetime
    kind: str
    detail: dict[str, Any]


def find_call(conn: Connection, account_id: int, call_id: str, *, lock: bool = False) -> Any:
    """The call row, or the iovox-style error (another account's call does not exist).

    ``lock`` holds the row (PostgreSQL ``FOR UPDATE``) until the transaction ends, so that the
    dialer cannot move it between our look and our change.
    """
    if not call_id:
        raise ApiError(CALL_ID_EMPTY)
    query = select(t.calls).where(t.calls.c.account_id == account_id, t.calls.c.call_id == call_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise ApiError(CALL_DOES_NOT_EXIST)
    return row


def events_of(conn: Connection, call_pk: int) -> list[CallEvent]:
    rows = conn.execute(
        select(t.call_events.c.at, t.call_events.c.kind, t.call_events.c.detail)
        .where(t.call_events.c.call_pk == call_pk)
        .order_by(t.call_events.c.id)
    )
    return [CallEvent(r.at, r.kind, json.loads(r.detail or "{}")) for r in rows]


def cancel_call(db: Database, account_id: int, call_id: str, now: datetime) -> CallStatus:
    """Cancel a call, or ask its dialer to hang it up; returns the status it had."""
    with db.write() as conn:
        row = find_call(conn, account_id, call_id, lock=True)
        status = CallStatus(row.status)
        if status in FINAL:
            raise ApiError(cannot_cancel(call_id))
        if status in NOT_STARTED:
            conn.execute(
                t.calls.update()
                .where(t.calls.c.id == row.id)
                .values(
                    status=CallStatus.CANCELLED.value,
                    result="CANCELLED",
                    ended_at=now,
                    updated_at=now,
                )
            )
            kind, detail = CallStatus.CANCELLED.value, {"by": "cancelCall"}
        else:
            assert status in IN_PROGRESS
            conn.execute(
                t.calls.update()
                .where(t.calls.c.id == row.id, t.calls.c.cancel_requested_at.is_(None))
                .values(cancel_requested_at=now, updated_at=now)
            )
            kind, detail = "cancel-requested", {"by": "cancelCall", "status": status.value}
        conn.execute(
            t.call_events.insert(),
            {"call_pk": row.id, "at": now, "kind": kind, "detail": json.dumps(detail)},
        )
        if kind == CallStatus.CANCELLED.value:
            callbacks.enqueue(conn, row.id, kind, now, detail)
    return status
