"""The call record as the dialer changes it: status moves and events (claims and leases are
in :mod:`voxflow.services.call_leases`).

Every change of status is one conditional UPDATE (it only applies from a status that may move
to the new one, see :data:`voxflow.domain.calls.TRANSITIONS`) plus one ``call_events`` row, in
one transaction. A move that no longer applies (the call was cancelled meanwhile) changes
nothing and says so. The UPDATE returns what the status callback needs (its URL with it), so
a call without a callback URL costs two statements, run straight on the driver.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select

from voxflow.clock import Clock
from voxflow.domain.calls import CALL_RESULTS, FINAL, IN_PROGRESS, CallStatus, predecessors
from voxflow.domain.dialstring import Keypress
from voxflow.services import callbacks
from voxflow.store import tables as t
from voxflow.store.db import Database
from voxflow.store.raw import RawStatement

CLAIMED = (
    select(
        t.calls.c.id,
        t.calls.c.call_id,
        t.calls.c.destination,
        t.calls.c.keypresses,
        t.calls.c.trunk,
        t.calls.c.due_at,
        t.accounts.c.sandbox,
    )
    .join(t.accounts, t.accounts.c.id == t.calls.c.account_id)
    .where(t.calls.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(t.calls.c.due_at, t.calls.c.id)
)


# One conditional UPDATE per status (it applies from the statuses that may move to it); the
# columns it sets are the keys of its parameters, besides ``call_pk``.
_MOVES = {
    status: RawStatement(
        t.calls.update()
        .where(
            t.calls.c.id == bindparam("call_pk"),
            t.calls.c.status.in_([s.value for s in predecessors(status)]),
        )
        .returning(*callbacks.TARGET_COLUMNS, callbacks.URL_OF_CALL)
    )
    for status in CallStatus
    if predecessors(status)
}
_INSERT_EVENT = RawStatement(t.call_events.insert())


@dataclass(frozen=True)
class DueCall:
    """What the dialer needs to place one call."""

    pk: int
    call_id: str
    destination: str
    keypresses: tuple[Keypress, ...]
    trunk: str | None
    sandbox: bool
    due_at: datetime


class CallRecords:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def move(self, pk: int, status: CallStatus, **details: Any) -> bool:
        """Move a call to ``status`` in a transaction of its own; False when its current status
        does not allow it. ``details``: those of :meth:`move_on`."""
        with self.db.write() as conn:
            return self.move_on(conn, pk, status, **details)

    def move_on(
        self,
        conn: Connection,
        pk: int,
        status: CallStatus,
        *,
        sip_code: int | None = None,
        sip_reason: str = "",
        detail: dict[str, Any] | None = None,
        status_reason: str | None = None,
    ) -> bool:
        """Move a call to ``status`` in the caller's write transaction (a writer's batch);
        False when its current status does not allow it."""
        now = self.clock.now()
        values: dict[str, Any] = {"status": status.value, "updated_at": now}
        if sip_code is not None:
            values["sip_code"] = sip_code
            values["sip_reason"] = sip_reason[:255]
        if status is CallStatus.ANSWERED:
            values["answered_at"] = now
        if status in FINAL:
            values["ended_at"] = now
            values["result"] = CALL_RESULTS.get(status)
            values["lease_owner"] = None
            values["lease_expires_at"] = None
        if status_reason is not None:
            values["status_reason"] = status_reason[:255]
        event = {**(detail or {})}
        if sip_code is not None:
            event.update(sip_code=sip_code, sip_reason=sip_reason)
        if status_reason is not None:
            event["reason"] = status_reason
        move = _MOVES.get(status)
        if move is None:  # no status moves to it
            return False
        changed = move.rows(conn, {**values, "call_pk": pk})
        if changed:
            _INSERT_EVENT.insert(
                conn,
                {"call_pk": pk, "at": now, "kind": status.value, "detail": json.dumps(event)},
            )
            target = callbacks.Target(*changed[0])
            callbacks.enqueue_target(conn, target, status.value, now, event)
        return bool(changed)

    def cancel_requests(self, owner: str) -> list[int]:
        """Calls of ``owner`` in progress that cancelCall asked to end."""
        with self.db.read() as conn:
            return list(
                conn.execute(
                    select(t.calls.c.id).where(
                        t.calls.c.lease_owner == owner,
                        t.calls.c.cancel_requested_at.is_not(None),
                        t.calls.c.status.in_([s.value for s in IN_PROGRESS]),
                    )
                ).scalars()
            )

    def event_on(self, conn: Connection, pk: int, kind: str, detail: dict[str, Any]) -> None:
        """Record something that happened on a call without changing its status, in the
        caller's write transaction (a writer's batch)."""
        _INSERT_EVENT.insert(
            conn,
            {"call_pk": pk, "at": self.clock.now(), "kind": kind, "detail": json.dumps(detail)},
        )


def due_call(row: Any) -> DueCall:
    plan = tuple(
        Keypress(k["key"], int(k["pauses"]), int(k["run_index"]))
        for k in json.loads(row.keypresses)
    )
    return DueCall(
        pk=row.id,
        call_id=row.call_id,
        destination=row.destination,
        keypresses=plan,
        trunk=row.trunk,
        sandbox=bool(row.sandbox),
        due_at=row.due_at,
    )
