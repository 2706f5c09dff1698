"""Limits at acceptance: per destination over sliding windows, and concurrent calls.

:func:`admit` runs inside initiateCall's write transaction, just before the call row is
inserted, so that the count and the insert are one atomic step: on SQLite the write lock
serialises every writer; on PostgreSQL a transaction-level advisory lock per (account,
destination) makes a second request for the same number wait until the first commits, and
its count (a new statement under READ COMMITTED) then sees the first call.

What counts toward the per-destination windows: every call accepted for the account and
number whose ``created_at`` is within the window, except a call that ended ``cancelled`` or
``expired`` without ever being dialled (it never rang anyone). Concurrent calls are calls in
progress (``dialing``, ``ringing``, ``answered``). A limit of 0 is unlimited.

The account's own limits, the per-destination counts (all windows in one query over the
``(account_id, destination, created_at)`` index) and the concurrency counts (only read when a
concurrency limit applies) run straight on the driver (``store.raw``): they are on the path of
every accepted call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, func, not_, select, text

from voxflow.domain.calls import IN_PROGRESS, CallStatus
from voxflow.domain.limits import WINDOWS, Counts, Limits, passed
from voxflow.errors import ApiError
from voxflow.store import tables as t
from voxflow.store.raw import RawStatement

LIMIT_EXCEEDED = "The number of calls allowed has been exceeded"

_OWN = RawStatement(
    select(*(t.account_limits.c[name] for name in Limits.names())).where(
        t.account_limits.c.account_id == bindparam("account_id")
    )
)
_NEVER_DIALLED = and_(
    t.calls.c.status.in_([CallStatus.CANCELLED.value, CallStatus.EXPIRED.value]),
    t.calls.c.started_at.is_(None),
)
# The longest window: the rows read are the ones within it.
_LONGEST = max(WINDOWS, key=WINDOWS.__getitem__)
_PER_DESTINATION = RawStatement(
    select(
        *(
            func.coalesce(func.sum(case((t.calls.c.created_at > bindparam(name), 1), else_=0)), 0)
            for name in WINDOWS
        )
    ).where(
        t.calls.c.account_id == bindparam("account_id"),
        t.calls.c.destination == bindparam("destination"),
        t.calls.c.created_at > bindparam(_LONGEST),
        not_(_NEVER_DIALLED),
    )
)
_IN_PROGRESS = RawStatement(
    select(
        func.count(),
        func.coalesce(func.sum(case((t.calls.c.link_pk == bindparam("link_pk"), 1), else_=0)), 0),
    ).where(
        t.calls.c.status.in_([s.value for s in IN_PROGRESS]),
        t.calls.c.account_id == bindparam("account_id"),
    )
)
_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


_NAMES = Limits.names()
# The account's own values, as columns to join to a query that has ``accounts``' id (what
# initiateCall's link lookup does, so that acceptance reads them without a query of their own).
OWN_COLUMNS = tuple(t.account_limits.c[name] for name in _NAMES)


def own_limits(conn: Connection, account_id: int) -> dict[str, int | None]:
    """The account's own values (``None``: the configured default applies)."""
    return own_from(_OWN.first(conn, {"account_id": account_id}))


def own_from(row: Sequence[int | None] | None) -> dict[str, int | None]:
    """The account's own values from the :data:`OWN_COLUMNS` of a row (``None``: no row)."""
    if row is None:
        return dict.fromkeys(_NAMES)
    return dict(zip(_NAMES, row, strict=True))


def account_limits(
    conn: Connection,
    account_id: int,
    defaults: Limits | None = None,
    *,
    own: Mapping[str, int | None] | None = None,
) -> Limits:
    """The limits that apply to an account: its own values (read unless given) over
    ``defaults``."""
    if own is None:
        own = own_limits(conn, account_id)
    defaults = defaults or Limits()
    if all(value is None for value in own.values()):
        return defaults
    return defaults.overridden(own)


def lock_destination(conn: Connection, account_id: int, destination: str) -> None:
    """Serialise acceptances for one (account, number) until the transaction ends.

    SQLite needs nothing: its write transaction already holds the database's one write lock.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK, {"key": f"voxflow.limits:{account_id}:{destination}"})


def counts(
    conn: Connection,
    limits: Limits,
    *,
    account_id: int,
    destination: str,
    link_pk: int | None,
    now: datetime,
) -> Counts:
    """The calls already there, for the limits that apply (0 for the unlimited ones)."""
    per_destination = dict.fromkeys(WINDOWS, 0)
    if limits.checks_destination:
        params: dict[str, Any] = {name: now - window for name, window in WINDOWS.items()}
        params["account_id"] = account_id
        params["destination"] = destination
        row = _PER_DESTINATION.rows(conn, params)[0]
        per_destination = dict(zip(WINDOWS, map(int, row), strict=True))
    account = link = 0
    if limits.checks_concurrency:
        row = _IN_PROGRESS.rows(conn, {"account_id": account_id, "link_pk": link_pk})[0]
        account, link = int(row[0]), int(row[1])
    return Counts(per_destination, concurrent_account=account, concurrent_link=link)


def admit(
    conn: Connection,
    call: Mapping[str, Any],
    defaults: Limits | None = None,
    *,
    own: Mapping[str, int | None] | None = None,
) -> None:
    """Refuse ``call`` (the values of its new ``calls`` row) if it would pass a limit.

    Call it in the write transaction that inserts the call, right before the insert. ``own``:
    the account's own values when the caller read them in this transaction already.
    """
    limits = account_limits(conn, call["account_id"], defaults, own=own)
    if not (limits.checks_destination or limits.checks_concurrency):
        return
    lock_destination(conn, call["account_id"], call["destination"])
    found = counts(
        conn,
        limits,
        account_id=call["account_id"],
        destination=call["destination"],
        link_pk=call["link_pk"],
        now=call["created_at"],
    )
    if passed(limits, found):
        raise ApiError(LIMIT_EXCEEDED)


def set_own_limits(
    conn: Connection, account_id: int, changes: Mapping[str, int | None], now: datetime
) -> dict[str, int | None]:
    """Change some of an account's own values (``None`` back to the default); returns them all."""
    unknown = set(changes) - set(_NAMES)
    if unknown:
        raise ValueError(f"unknown limits: {', '.join(sorted(unknown))}")
    own = {**own_limits(conn, account_id), **changes}
    exists = _OWN.first(conn, {"account_id": account_id}) is not None
    if exists:
        conn.execute(
            t.account_limits.update()
            .where(t.account_limits.c.account_id == account_id)
            .values(**own, updated_at=now)
        )
    else:
        conn.execute(t.account_limits.insert().values(account_id=account_id, updated_at=now, **own))
    return own
