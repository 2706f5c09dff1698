"""Calling::initiateCall: accept a call that follows the link's Calling Rules.

The handler runs on the event loop: it reads the request (already parsed) into a
:class:`Pending` and hands it to the writer, which runs :func:`_accept` on it inside a write
transaction (on SQLite one shared with the other calls accepted at the same moment, see
``store.group_commit``). Every check that reads the database runs there, on the same snapshot
the call is committed into: a link deleted, a flow detached or a number blocked before that
transaction is seen by it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import Connection

from voxflow.api import xmlcodec
from voxflow.api.routing import Request, Result, route_async
from voxflow.clock import wire_time
from voxflow.domain.limits import Limits
from voxflow.services import due_signal, idempotency, limits
from voxflow.services.accounts import Account
from voxflow.services.calls import CallRequest, prepare_call, read_request, store_call
from voxflow.services.idempotency import StoredAnswer
from voxflow.store.db import Database

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


# Not frozen: one is built for every request, and a frozen dataclass's __init__ pays a
# setattr call per field.
@dataclass
class Pending:
    """An initiateCall as read from the request, before any check that needs the database;
    the writer's work item (``pending(conn)``)."""

    account: Account
    link_id: str
    request: CallRequest  # the variables, read (validated as far as they can be alone)
    key: str | None
    digest: str  # of the body, when there is a key
    now: datetime
    limits: Limits  # the configured defaults, under the account's own

    def __call__(self, conn: Connection) -> StoredAnswer | None:
        return _accept(self, conn)

    def __reduce__(self) -> tuple[Callable[..., Pending], tuple[Any, ...]]:
        """Pickled flat for the writer process: the fields of its parts as tuples, with one
        global to look up instead of seven (a pickle holding a request or a few costs half
        the time to write and to read, and a third fewer bytes)."""
        parts = (
            _ACCOUNT_FIELDS(self.account),
            self.link_id,
            _REQUEST_FIELDS(self.request),
            self.key,
            self.digest,
            self.now,
            _LIMITS_FIELDS(self.limits),
        )
        return (_pending, (parts,))


def _getter(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    """The values of a dataclass's fields, in order, as a tuple (``attrgetter`` of them all)."""
    names = [f.name for f in fields(cls)]
    assert len(names) > 1, "attrgetter of one name gives its value, not a tuple"
    return attrgetter(*names)


_ACCOUNT_FIELDS = _getter(Account)
_REQUEST_FIELDS = _getter(CallRequest)
_LIMITS_FIELDS = _getter(Limits)


def _pending(parts: tuple[Any, ...]) -> Pending:
    """A Pending from what its ``__reduce__`` gave."""
    account, link_id, request, key, digest, now, limits = parts
    return Pending(
        Account(*account), link_id, CallRequest(*request), key, digest, now, Limits(*limits)
    )


def _answer(request: CallRequest) -> StoredAnswer:
    """The 201 of a call accepted as requested (everything in it is known before the store)."""
    return StoredAnswer(
        201,
        {
            "call_id": request.call_id,
            "status": request.status.value,
            "scheduled_for": wire_time(request.due_at),
        },
    )


def _accept(pending: Pending, conn: Connection) -> StoredAnswer | None:
    """Check and store one call in the writer's transaction (may raise ApiError for it alone).

    None: the call is stored as requested (its answer is :func:`_answer`, built where the
    request is, so nothing but this None crosses back from a writer process); else the answer
    given earlier to the same Idempotency-Key.
    """
    account, key, now = pending.account, pending.key, pending.now
    if key is not None:
        stored = idempotency.lookup(conn, account.id, key, pending.digest, now)
        if stored is not None:
            return stored
    call = prepare_call(conn, account, pending.link_id, pending.request)
    # Counted in this transaction: on SQLite it sees the calls of the batch before this one.
    limits.admit(conn, call.row, pending.limits, own=call.own_limits)
    if key is not None:
        idempotency.remember(
            conn,
            account_id=account.id,
            key=key,
            digest=pending.digest,
            answer=_answer(pending.request),
            now=now,
        )
    store_call(conn, call)
    return None


def _announcer(db: Database, request: CallRequest) -> Callable[[StoredAnswer | None], None]:
    """Tell the dialers about a new call, once it is committed."""

    def announce(repeat: StoredAnswer | None) -> None:
        if repeat is None:
            due_signal.announce(db, request.due_at, due_now=request.delay_minutes == 0)

    return announce


@route_async("Calling", "initiateCall", "POST")
async def initiate_call(req: Request) -> Result:
    assert req.body is not None and req.writer is not None
    raw_key = req.headers.get(IDEMPOTENCY_HEADER)
    key = idempotency.check_key(raw_key) if raw_key is not None else None
    now = req.clock.now()
    request = read_request(_call_variables(req), now)
    pending = Pending(
        account=req.account,
        link_id=xmlcodec.text(req.body, "link_id") or "",
        request=request,
        key=key,
        # Only a request with a key is compared with an earlier one.
        digest=idempotency.request_hash("Calling::initiateCall", req.raw_body)
        if key is not None
        else "",
        now=now,
        limits=req.limits,
    )
    # Two requests with one key: on SQLite the writer runs them one after the other, so the
    # second finds the first's row; on PostgreSQL the loser's insert of the key breaks the
    # primary key and the writer runs it again, and it then finds the winner's answer.
    repeat = await req.writer.run(pending, _announcer(req.db, request))
    answer = _answer(request) if repeat is None else repeat
    return Result(answer.status, dict(answer.tree))
