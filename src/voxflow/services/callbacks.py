"""Status callbacks, the store part: an outbox of status changes to POST, and its retry state.

:func:`enqueue` is called in the transaction that changes a call's status (after that change's
``call_events`` row is inserted), so a status change and its callback commit or vanish
together. The URL is the link's ``status_callback_url``, else the account's; with neither,
nothing is written. A caller that already read the call's :class:`Target` (initiateCall from
its link lookup, the dialer from its status UPDATE's ``RETURNING``) uses
:func:`enqueue_target`, which runs no query at all when there is no URL.

A sender (:mod:`voxflow.scheduling.callbacks`) takes due rows with a
lease (:func:`claim`), POSTs them, and records the outcome (:func:`delivered`,
:func:`attempt_failed`). Only the oldest pending row of each call is ever claimable, so one
call's callbacks go out in order, one at a time, across every sender process. Delivery is at
least once: a sender that dies mid-POST leaves a lease that expires, and the row goes again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.orm import aliased

from voxflow.domain.calls import CALL_RESULTS, CallStatus
from voxflow.store import tables as t
from voxflow.store.raw import RawStatement

URL_MAX = 2048
ERROR_MAX = 500
_STATUSES = [s.value for s in CallStatus]

_URL = func.coalesce(t.links.c.status_callback_url, t.accounts.c.status_callback_url)
# The columns of a Target, for a query or a RETURNING clause on ``calls``.
TARGET_COLUMNS = (
    t.calls.c.id,
    t.calls.c.call_id,
    t.calls.c.link_id,
    t.calls.c.destination,
    t.calls.c.attempts,
    t.calls.c.status_reason,
)
_TARGETS = RawStatement(
    select(*TARGET_COLUMNS, _URL.label("url"))
    .select_from(
        t.calls.join(t.accounts, t.accounts.c.id == t.calls.c.account_id).outerjoin(
            t.links, t.links.c.id == t.calls.c.link_pk
        )
    )
    .where(t.calls.c.id.in_(bindparam("pks", expanding=True)), _URL.is_not(None))
)
_STATUS_EVENTS = RawStatement(
    select(t.call_events.c.kind)
    .where(t.call_events.c.call_pk == bindparam("pk"), t.call_events.c.kind.in_(_STATUSES))
    .order_by(t.call_events.c.id.desc())
    .limit(2)
)

_cb = t.call_callbacks
_INSERT = RawStatement(_cb.insert())
_earlier = aliased(_cb)
_PENDING = (_cb.c.delivered_at.is_(None), _cb.c.failed_at.is_(None))
_DUE = (
    select(_cb.c.id)
    .where(
        *_PENDING,
        _cb.c.next_attempt_at <= bindparam("now"),
        (_cb.c.lease_expires_at.is_(None)) | (_cb.c.lease_expires_at <= bindparam("now")),
        ~select(_earlier.c.id)
        .where(
            _earlier.c.call_pk == _cb.c.call_pk,
            _earlier.c.id < _cb.c.id,
            _earlier.c.delivered_at.is_(None),
            _earlier.c.failed_at.is_(None),
        )
        .exists(),
    )
    .order_by(_cb.c.next_attempt_at, _cb.c.id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True, of=_cb)
)


class CallbackUrlError(ValueError):
    """A status callback URL that voxflow will not POST to."""


def check_url(url: str) -> str:
    """An absolute ``http`` or ``https`` URL with a host, at most 2048 characters."""
    if len(url) > URL_MAX:
        raise CallbackUrlError(f"callback URL is longer than {URL_MAX} characters")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise CallbackUrlError("callback URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError as exc:
        raise CallbackUrlError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackUrlError(f"callback URL must be http:// or https:// with a host: {url!r}")
    return url


def _wire_at(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds") + "Z"


@dataclass(frozen=True)
class Target:
    """What a call's status callback says of the call, and where it goes (``url`` None: none)."""

    id: int
    call_id: str
    link_id: str | None
    destination: str
    attempts: int | None
    status_reason: str | None
    url: str | None


URL_OF_CALL = func.coalesce(
    select(t.links.c.status_callback_url)
    .where(t.links.c.id == t.calls.c.link_pk)
    .scalar_subquery(),
    select(t.accounts.c.status_callback_url)
    .where(t.accounts.c.id == t.calls.c.account_id)
    .scalar_subquery(),
)


class _Unknown:
    pass


UNKNOWN = _Unknown()  # a previous status the caller does not know: read from the events


def enqueue_target(
    conn: Connection,
    target: Target,
    status: str,
    now: datetime,
    detail: Mapping[str, Any] | None = None,
    *,
    previous: str | _Unknown | None = UNKNOWN,
) -> None:
    """Queue the callback of ``target``'s move to ``status``: nothing (and no query) without a
    URL. ``previous`` is the status before, as the last two status events say."""
    if target.url is None or status not in _STATUSES:
        return
    if isinstance(previous, _Unknown):
        previous = _previous(conn, target.id, status)
    _INSERT.insert(conn, _row(target, status, previous, now, dict(detail or {})))


def _previous(conn: Connection, call_pk: int, status: str) -> str | None:
    kinds = [kind for (kind,) in _STATUS_EVENTS.rows(conn, {"pk": call_pk})]
    return kinds[1] if len(kinds) > 1 and kinds[0] == status else None


def _row(
    target: Target, status: str, previous: str | None, now: datetime, detail: dict[str, Any]
) -> dict[str, Any]:
    payload = _payload(target, status, previous, now, detail)
    return {
        "call_pk": target.id,
        "url": target.url,
        "payload": json.dumps(payload, separators=(",", ":")),
        "created_at": now,
        "attempts": 0,
        "next_attempt_at": now,
    }


def enqueue(
    conn: Connection,
    call_pk: int,
    status: str,
    now: datetime,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Queue the callback of one call's move to ``status`` (if the call has a callback URL)."""
    enqueue_many(conn, {call_pk: detail or {}}, status, now)


def enqueue_many(
    conn: Connection, details: Mapping[int, Mapping[str, Any]], status: str, now: datetime
) -> None:
    """Queue the callbacks of several calls that moved to ``status`` together; ``details``
    maps each call's pk to its status event's detail. A kind of event that is not a status
    (``released``, ``keypress``) is not reported."""
    if not details or status not in _STATUSES:
        return
    rows = []
    for found in _TARGETS.rows(conn, {"pks": list(details)}):
        target = Target(*found)
        previous = _previous(conn, target.id, status)
        rows.append(_row(target, status, previous, now, dict(details[target.id])))
    if rows:
        conn.execute(_cb.insert(), rows)


def _payload(
    target: Target, status: str, previous: str | None, now: datetime, detail: dict[str, Any]
) -> dict[str, Any]:
    sip_code = detail.pop("sip_code", None)
    sip_reason = detail.pop("sip_reason", None)
    result = CALL_RESULTS.get(CallStatus(status))
    return {
        "call_id": target.call_id,
        "status": status,
        "previous_status": previous,
        "at": _wire_at(now),
        "link_id": target.link_id,
        "destination": target.destination,
        "attempt": int(target.attempts or 0),
        "sip_code": sip_code,
        "sip_reason": sip_reason,
        "reason": target.status_reason,
        "result": result,
        "detail": detail,
    }


@dataclass(frozen=True)
class Callback:
    """One claimed callback: where to POST what, and how many attempts this one makes."""

    id: int
    call_pk: int
    url: str
    payload: str
    attempt: int
    created_at: datetime


def claim(
    conn: Connection, owner: str, now: datetime, *, lease: timedelta, limit: int
) -> list[Callback]:
    """Lease up to ``limit`` due callbacks, each the oldest pending one of its call."""
    if limit <= 0:
        return []
    ids = list(conn.execute(_DUE, {"now": now, "limit": limit}).scalars())
    if not ids:
        return []
    conn.execute(
        update(_cb)
        .where(_cb.c.id.in_(ids))
        .values(lease_owner=owner, lease_expires_at=now + lease, attempts=_cb.c.attempts + 1)
    )
    rows = conn.execute(
        select(_cb.c.id, _cb.c.call_pk, _cb.c.url, _cb.c.payload, _cb.c.attempts, _cb.c.created_at)
        .where(_cb.c.id.in_(ids))
        .order_by(_cb.c.id)
    )
    return [Callback(r.id, r.call_pk, r.url, r.payload, r.attempts, r.created_at) for r in rows]


def delivered(conn: Connection, callback: Callback, owner: str, now: datetime) -> None:
    conn.execute(
        update(_cb)
        .where(_cb.c.id == callback.id, _cb.c.lease_owner == owner)
        .values(delivered_at=now, lease_owner=None, lease_expires_at=None, last_error=None)
    )


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 10
    max_age: timedelta = timedelta(days=1)
    backoff: timedelta = timedelta(seconds=1)
    backoff_max: timedelta = timedelta(minutes=10)

    def delay(self, attempt: int) -> timedelta:
        """Exponential backoff: ``backoff`` after the first attempt, doubling, capped."""
        delay: timedelta = min(self.backoff * (2 ** min(max(attempt - 1, 0), 30)), self.backoff_max)
        return delay


def attempt_failed(
    conn: Connection,
    callback: Callback,
    owner: str,
    now: datetime,
    *,
    error: str,
    policy: RetryPolicy,
) -> bool:
    """Record a failed attempt: retry later, or give up. True when it was given up."""
    retry_at = now + policy.delay(callback.attempt)
    give_up = (
        callback.attempt >= policy.max_attempts or retry_at - callback.created_at > policy.max_age
    )
    values: dict[str, Any] = {
        "lease_owner": None,
        "lease_expires_at": None,
        "last_error": error[:ERROR_MAX],
    }
    if give_up:
        values["failed_at"] = now
    else:
        values["next_attempt_at"] = retry_at
    conn.execute(
        update(_cb).where(_cb.c.id == callback.id, _cb.c.lease_owner == owner).values(**values)
    )
    return give_up


def release(conn: Connection, owner: str) -> None:
    """Give back the leases of ``owner`` (a sender stopping), so others may take them now."""
    conn.execute(
        update(_cb)
        .where(_cb.c.lease_owner == owner, *_PENDING)
        .values(lease_owner=None, lease_expires_at=None, attempts=_cb.c.attempts - 1)
    )


def set_account_url(conn: Connection, account_id: int, url: str | None) -> None:
    conn.execute(
        update(t.accounts)
        .where(t.accounts.c.id == account_id)
        .values(status_callback_url=None if url is None else check_url(url))
    )


def set_link_url(conn: Connection, account_id: int, link_id: str, url: str | None) -> bool:
    """Set or clear a link's URL; False when the account has no such link."""
    changed = conn.execute(
        update(t.links)
        .where(t.links.c.account_id == account_id, t.links.c.link_id == link_id)
        .values(status_callback_url=None if url is None else check_url(url))
    ).rowcount
    return bool(changed)
