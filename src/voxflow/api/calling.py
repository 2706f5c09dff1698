"""Calling::initiateCall: accept a call that follows the link's Calling Rules."""

from __future__ import annotations

from voxflow.api import xmlcodec
from voxflow.api.routing import Request, Result, route
from voxflow.clock import wire_time
from voxflow.services import due_signal, idempotency, limits
from voxflow.services.calls import prepare_call, store_call
from voxflow.services.idempotency import StoredAnswer

IDEMPOTENCY_HEADER = "idempotency-key"


def _call_variables(req: Request) -> dict[str, str]:
    assert req.body is not None
    container = req.body.find("call_variables")
    if container is None:
        return {}
    variables: dict[str, str] = {}
    for el in container:
        if isinstance(el.tag, str) and len(el) == 0:
            variables.setdefault(el.tag, (el.text or "").strip())
    return variables


def _accept(req: Request, key: str | None, digest: str) -> StoredAnswer:
    assert req.body is not None
    now = req.clock.now()
    if key is not None:
        with req.db.read() as conn:
            stored = idempotency.lookup(conn, req.account.id, key, digest, now)
        if stored is not None:
            return stored
    with req.db.read() as conn:
        call = prepare_call(
            conn, req.account, xmlcodec.text(req.body, "link_id") or "", _call_variables(req), now
        )
    answer = StoredAnswer(
        201,
        {
            "call_id": call.call_id,
            "status": call.status.value,
            "scheduled_for": wire_time(call.due_at),
        },
    )
    with req.db.write() as conn:
        if key is not None:
            # Looked up again under the write lock: another request may have won meanwhile.
            stored = idempotency.lookup(conn, req.account.id, key, digest, now)
            if stored is not None:
                return stored
            idempotency.remember(
                conn, account_id=req.account.id, key=key, digest=digest, answer=answer, now=now
            )
        limits.admit(conn, call.row, req.limits)
        store_call(conn, call)
    due_signal.announce(req.db, call.due_at, due_now=call.delay_minutes == 0)
    return answer


@route("Calling", "initiateCall", "POST")
def initiate_call(req: Request) -> Result:
    raw_key = req.headers.get(IDEMPOTENCY_HEADER)
    key = idempotency.check_key(raw_key) if raw_key is not None else None
    digest = idempotency.request_hash("Calling::initiateCall", req.raw_body)
    # Two requests racing with one key on PostgreSQL: the loser's insert of the key breaks the
    # primary key, and the edge runs it again (api.http._run); it then finds the winner's answer.
    answer = _accept(req, key, digest)
    return Result(answer.status, dict(answer.tree))
