"""The calls table as the dialers' durable queue: leases, claim rounds, recovery.

A dialer *claims* a due call by taking a lease on it (``lease_owner``, ``lease_expires_at``,
``claimed_at``); the status stays ``queued``/``scheduled`` while the call waits for its send
slot. Right before the first SIP request the call moves to ``dialing`` in a committed,
conditional UPDATE (still this dialer's lease, still not started: a cancelled call never
goes). The dialer renews its leases in bulk. When a lease runs out:

- a call that never reached ``dialing`` is simply claimable again;
- a call found ``dialing``/``ringing``/``answered`` is never dialled again: it becomes
  ``unknown`` with a ``status_reason`` and an event, for the operator to see.

One claim round is one write transaction: reconcile expired leases, expire calls past the
maximum lateness, count what is in progress per trunk, account and link, pick the calls due
now or within the horizon oldest first (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and give each
its send slot, never before its due time, from the trunk's GCRA state in ``trunk_pacing``.
Claiming ahead lets each dialer wait for the exact due time with its own timer: how often
rounds run, and how long one takes, does not make calls late. On PostgreSQL claim rounds of
all dialers are serialised by a transaction-level advisory lock, so the counts and the pacing
state are exact across processes; on SQLite the one writer lock does the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, bindparam, func, or_, select, text

from voxflow.clock import Clock
from voxflow.domain.calls import IN_PROGRESS, NOT_STARTED, CallStatus
from voxflow.domain.dispatch import (
    Allowance,
    Candidate,
    Plan,
    TrunkPace,
    TrunkState,
    dialer_name,
    plan_claims,
)
from voxflow.services import callbacks
from voxflow.services.call_records import CLAIMED, DueCall, due_call
from voxflow.store import tables as t
from voxflow.store.db import Database

# pg_advisory_xact_lock key of claim rounds ("voxclaim" in ASCII, as a bigint).
CLAIM_LOCK = 0x766F78636C61696D
EXPIRE_BATCH = 500
CHUNK = 500

_NOT_STARTED = [s.value for s in NOT_STARTED]
_IN_PROGRESS = [s.value for s in IN_PROGRESS]
_c = t.calls.c


@dataclass(frozen=True)
class Claim:
    """A claimed call and the moment it may be sent (its trunk's pacing slot)."""

    call: DueCall
    slot: datetime


@dataclass(frozen=True)
class ClaimRound:
    claims: list[Claim]
    expired: int
    reconciled: int
    # When to look again: the next due call, a paced trunk's next slot, or now (more waiting).
    wake_at: datetime | None
    waiting_for_capacity: bool


@dataclass(frozen=True)
class Pacing:
    """What a claim round needs to know about trunks and limits."""

    trunks: Mapping[str, TrunkPace]
    default_trunk: str | None
    account_max_calls: int = 0  # configured defaults, 0 for unlimited
    link_max_calls: int = 0
    horizon: timedelta = timedelta(seconds=1)  # claim calls whose slot is at most this far off

    def trunk_of(self, trunk: str | None, sandbox: bool) -> str | None:
        if sandbox:
            return None
        return trunk or self.default_trunk


def _chunks(pks: Sequence[int]) -> Iterator[list[int]]:
    for i in range(0, len(pks), CHUNK):
        yield list(pks[i : i + CHUNK])


def _events(
    conn: Connection, details: Mapping[int, dict[str, Any]], kind: str, at: datetime
) -> None:
    """One ``call_events`` row per call: ``details`` maps each call's pk to its detail."""
    rows = [
        {"call_pk": pk, "at": at, "kind": kind, "detail": json.dumps(detail)}
        for pk, detail in details.items()
    ]
    if rows:
        conn.execute(t.call_events.insert(), rows)
    callbacks.enqueue_many(conn, details, kind, at)  # status callbacks, in this transaction


_LEASE_FREE = or_(_c.lease_expires_at.is_(None), _c.lease_expires_at <= bindparam("now"))
_ACTIVE = (
    select(_c.trunk, t.accounts.c.sandbox, _c.account_id, _c.link_pk, func.count().label("n"))
    .join(t.accounts, t.accounts.c.id == _c.account_id)
    .where(
        or_(
            _c.status.in_(_IN_PROGRESS),
            and_(
                _c.status.in_(_NOT_STARTED),
                _c.due_at <= bindparam("ahead"),
                _c.lease_expires_at > bindparam("now"),
            ),
        )
    )
    .group_by(_c.trunk, t.accounts.c.sandbox, _c.account_id, _c.link_pk)
)
_TOO_LATE = (
    select(_c.id, _c.due_at)
    .where(_c.status.in_(_NOT_STARTED), _c.due_at < bindparam("oldest"), _LEASE_FREE)
    .order_by(_c.due_at)
    .limit(EXPIRE_BATCH)
    .with_for_update(skip_locked=True)
)
_LEASE_LOST = (
    select(_c.id, _c.status, _c.lease_owner)
    # No expiry at all: a call a dialer of an earlier voxflow version left in progress.
    .where(_c.status.in_(_IN_PROGRESS), _LEASE_FREE)
    .limit(EXPIRE_BATCH)
    .with_for_update(skip_locked=True)
)


def _waiting(pacing: Pacing, blocked: Sequence[str], limit: int | None, *, only: str = "") -> Any:
    """Due calls nobody holds, oldest first: without the calls of the ``blocked`` trunks, or
    (``only``) those of one trunk; ``limit`` None: is there one at all."""
    sandbox = t.accounts.c.sandbox
    trunk = (
        _c.trunk if pacing.default_trunk is None else func.coalesce(_c.trunk, pacing.default_trunk)
    )
    query = (
        select(_c.id, _c.due_at, _c.trunk, _c.account_id, _c.link_pk, sandbox)
        .join(t.accounts, t.accounts.c.id == _c.account_id)
        .where(_c.status.in_(_NOT_STARTED), _c.due_at <= bindparam("ahead"), _LEASE_FREE)
    )
    if only:
        return query.where(sandbox.is_(False), trunk == only).limit(1)
    if blocked:
        query = query.where(or_(sandbox.is_(True), trunk.is_(None), trunk.not_in(blocked)))
    query = query.order_by(_c.due_at, _c.id)
    if limit is None:
        return query.limit(1)
    return query.limit(limit).with_for_update(skip_locked=True, of=t.calls)


def _save_pacing(
    conn: Connection, trunks: Mapping[str, TrunkState], before: Mapping[str, datetime | None]
) -> None:
    for name, state in trunks.items():
        if state.tat is None or state.tat == before[name]:
            continue
        if before[name] is None:
            conn.execute(t.trunk_pacing.insert(), {"trunk": name, "next_slot_at": state.tat})
        else:
            conn.execute(
                t.trunk_pacing.update()
                .where(t.trunk_pacing.c.trunk == name)
                .values(next_slot_at=state.tat)
            )


class CallLeases:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    # ------------------------------------------------------------------ claim round

    def claim(
        self,
        owner: str,
        *,
        room: int,
        lease: timedelta,
        pacing: Pacing,
        max_lateness: timedelta | None,
    ) -> ClaimRound:
        """One claim round (see the module docstring). ``room``: calls this dialer may add."""
        now = self.clock.now()
        times = {"now": now, "ahead": now + pacing.horizon}
        with self.db.write() as conn:
            if not self.db.is_sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CLAIM_LOCK})
            reconciled = self._reconcile(conn, now, _LEASE_LOST, {"now": now}, "lease expired")
            expired = self._expire(conn, now, max_lateness) if max_lateness is not None else 0
            plan, claims = Plan(), []
            if room > 0:
                plan = self._plan(conn, now=now, room=room, pacing=pacing)
                claims = self._take(conn, plan, owner, now, now + lease)
            elif conn.execute(_waiting(pacing, [], None), times).first() is not None:
                plan.waiting_for_capacity = True  # this dialer is full
            # The next call nobody could claim yet: look again when it is half a horizon away,
            # so that each round claims about half a horizon of calls, each ahead of its time.
            next_due = self._next_due(conn, times["ahead"])
            wake_at = next_due - pacing.horizon / 2 if next_due is not None else None
        if plan.paced_until is not None:
            wake_at = min(wake_at or plan.paced_until, plan.paced_until)
        return ClaimRound(claims, expired, reconciled, wake_at, plan.waiting_for_capacity)

    def _plan(self, conn: Connection, *, now: datetime, room: int, pacing: Pacing) -> Plan:
        times = {"now": now, "ahead": now + pacing.horizon}
        active = conn.execute(_ACTIVE, times).all()
        trunks = {name: TrunkState(p.cps, p.max_calls) for name, p in pacing.trunks.items()}
        for a in active:
            name = pacing.trunk_of(a.trunk, bool(a.sandbox))
            if name in trunks:
                trunks[name].busy += a.n
        for p in conn.execute(select(t.trunk_pacing).where(t.trunk_pacing.c.trunk.in_(trunks))):
            trunks[p.trunk].tat = p.next_slot_at
        before = {name: s.tat for name, s in trunks.items()}
        # Calls of a trunk that is full or paced beyond the horizon are not even looked at, so
        # that a backlog on one trunk does not hold up the calls of another.
        full = sorted(n for n, s in trunks.items() if s.busy >= s.max_calls)
        paced = {
            n: s.tat
            for n, s in trunks.items()
            if s.tat is not None and s.tat > now + pacing.horizon
        }
        blocked = sorted({*full, *paced})
        rows = conn.execute(_waiting(pacing, blocked, room + 100), times).all()
        accounts, links = self._allowances(conn, rows, active, pacing)
        candidates = [
            Candidate(
                r.id, r.due_at, pacing.trunk_of(r.trunk, bool(r.sandbox)), r.account_id, r.link_pk
            )
            for r in rows
        ]
        plan = plan_claims(
            candidates,
            now=now,
            room=room,
            horizon=pacing.horizon,
            trunks=trunks,
            accounts=accounts,
            links=links,
        )
        for name in blocked:  # is any call held up behind that trunk?
            if conn.execute(_waiting(pacing, [], None, only=name), times).first() is None:
                continue
            tat = paced.get(name)
            if tat is None:
                plan.waiting_for_capacity = True
            else:
                ready = tat - pacing.horizon
                plan.paced_until = min(plan.paced_until or ready, ready)
        _save_pacing(conn, trunks, before)
        return plan

    def _allowances(
        self, conn: Connection, rows: Sequence[Any], active: Sequence[Any], pacing: Pacing
    ) -> tuple[dict[int, Allowance], dict[int, Allowance]]:
        """The concurrency allowances of the candidates' accounts and links: each account's own
        limits from ``account_limits`` (NULL: the configured default), and what is in use."""
        accounts: dict[int, Allowance] = {}
        links: dict[int, Allowance] = {}
        if not rows:
            return accounts, links
        own = {
            r.account_id: r
            for r in conn.execute(
                select(
                    t.account_limits.c.account_id,
                    t.account_limits.c.max_concurrent_account,
                    t.account_limits.c.max_concurrent_link,
                ).where(t.account_limits.c.account_id.in_({r.account_id for r in rows}))
            )
        }
        for r in rows:
            limits = own.get(r.account_id)
            account_max = limits.max_concurrent_account if limits else None
            link_max = limits.max_concurrent_link if limits else None
            accounts[r.account_id] = Allowance(
                pacing.account_max_calls if account_max is None else account_max
            )
            if r.link_pk is not None:
                links[r.link_pk] = Allowance(
                    pacing.link_max_calls if link_max is None else link_max
                )
        for a in active:
            if a.account_id in accounts:
                accounts[a.account_id].busy += a.n
            if a.link_pk in links:
                links[a.link_pk].busy += a.n
        return accounts, links

    def _take(
        self, conn: Connection, plan: Plan, owner: str, now: datetime, until: datetime
    ) -> list[Claim]:
        pks = list(plan.slots)
        if not pks:
            return []
        conn.execute(
            t.calls.update()
            .where(_c.id.in_(pks))
            .values(lease_owner=owner, lease_expires_at=until, claimed_at=now, updated_at=now)
        )
        rows = conn.execute(CLAIMED, {"ids": pks}).all()
        return [Claim(due_call(r), plan.slots[r.id]) for r in rows]

    def _expire(self, conn: Connection, now: datetime, max_lateness: timedelta) -> int:
        rows = conn.execute(_TOO_LATE, {"now": now, "oldest": now - max_lateness}).all()
        if not rows:
            return 0
        limit_s = int(max_lateness.total_seconds())
        reason = f"not placed within max_lateness_s ({limit_s} s) of its due time"
        pks = [r.id for r in rows]
        conn.execute(
            t.calls.update()
            .where(_c.id.in_(pks), _c.status.in_(_NOT_STARTED))
            .values(_ended(CallStatus.EXPIRED, reason, now))
        )
        late = {r.id: round((now - r.due_at).total_seconds(), 3) for r in rows}
        details = {pk: {"reason": reason, "late_s": late[pk]} for pk in pks}
        _events(conn, details, CallStatus.EXPIRED.value, now)
        return len(pks)

    def _reconcile(
        self, conn: Connection, now: datetime, query: Any, params: dict[str, Any], why: str
    ) -> int:
        """Calls in progress whose dialer is gone: ``unknown``, never dialled again."""
        rows = conn.execute(query, params).all()
        for r in rows:
            reason = (
                f"{why}: dialer {r.lease_owner} was gone while the call was {r.status};"
                " not dialled again"
            )[:255]
            changed = conn.execute(
                t.calls.update()
                .where(_c.id == r.id, _c.status == r.status)
                .values(_ended(CallStatus.UNKNOWN, reason, now))
            ).rowcount
            if changed:
                _events(conn, {r.id: {"reason": reason, "was": r.status}}, "unknown", now)
        return len(rows)

    def _next_due(self, conn: Connection, after: datetime) -> datetime | None:
        found: list[datetime] = []
        for status in _NOT_STARTED:
            due = conn.execute(
                select(_c.due_at)
                .where(_c.status == status, _c.due_at > after)
                .order_by(_c.due_at)
                .limit(1)
            ).scalar()
            if due is not None:
                found.append(due)
        return min(found, default=None)

    # ------------------------------------------------------------------ one call

    def start_dialing(self, claim: Claim, owner: str, lease: timedelta) -> bool:
        """Commit ``dialing`` before the first SIP request; False if the call is no longer ours
        to place (cancelled, or the lease went to another dialer)."""
        with self.db.write() as conn:
            return self.start_dialing_on(conn, claim, owner, lease)

    def start_dialing_on(
        self, conn: Connection, claim: Claim, owner: str, lease: timedelta
    ) -> bool:
        """:meth:`start_dialing` in the caller's write transaction (a writer's batch)."""
        now = self.clock.now()
        call = claim.call
        wait_ms = max(0, round((now - call.due_at).total_seconds() * 1000))
        changed = conn.execute(
            t.calls.update()
            .where(_c.id == call.pk, _c.lease_owner == owner, _c.status.in_(_NOT_STARTED))
            .values(
                status=CallStatus.DIALING.value,
                attempts=_c.attempts + 1,
                started_at=now,
                updated_at=now,
                lease_expires_at=now + lease,
                queue_wait_ms=wait_ms,
            )
        ).rowcount
        if changed:
            detail = {
                "by": owner,
                "queue_wait_ms": wait_ms,
                "slot": claim.slot.isoformat(sep=" "),
            }
            _events(conn, {call.pk: detail}, CallStatus.DIALING.value, now)
        return bool(changed)

    # ------------------------------------------------------------------ leases in bulk

    def renew(self, owner: str, pks: Sequence[int], lease: timedelta) -> int:
        """Extend this dialer's leases on ``pks``; returns how many it renewed.

        On PostgreSQL a call whose row another transaction holds at this moment (the dialer's
        writer recording its status, in a batch with others) is skipped: it is renewed next
        time, a third of a lease later. Waiting for it could deadlock with that batch, which
        locks its rows in another order.
        """
        now = self.clock.now()
        held = 0
        for chunk in _chunks(pks):
            mine = and_(
                _c.id.in_(chunk),
                _c.lease_owner == owner,
                _c.status.in_(_NOT_STARTED + _IN_PROGRESS),
            )
            with self.db.write() as conn:
                where: ColumnElement[bool] = mine
                if conn.dialect.name == "postgresql":
                    where = _c.id.in_(select(_c.id).where(mine).with_for_update(skip_locked=True))
                held += conn.execute(
                    t.calls.update().where(where).values(lease_expires_at=now + lease)
                ).rowcount
        return held

    def release(self, owner: str, pks: Sequence[int]) -> int:
        """Give back claims that never reached ``dialing``: another dialer may take them now."""
        now = self.clock.now()
        released = 0
        for chunk in _chunks(pks):
            with self.db.write() as conn:
                mine = list(
                    conn.execute(
                        select(_c.id).where(
                            _c.id.in_(chunk), _c.lease_owner == owner, _c.status.in_(_NOT_STARTED)
                        )
                    ).scalars()
                )
                if not mine:
                    continue
                conn.execute(
                    t.calls.update()
                    .where(_c.id.in_(mine))
                    .values(lease_owner=None, lease_expires_at=None, updated_at=now)
                )
                _events(conn, {key: {"by": owner} for key in mine}, "released", now)
                released += len(mine)
        return released

    def recover(self, owner: str) -> tuple[int, int]:
        """At start: take back what an earlier run of this dialer (same name, another
        incarnation) left, without waiting for its leases to expire. Its claims that never
        reached ``dialing`` are released; its calls in progress become ``unknown``.

        Returns (released, reconciled). Leases of other dialers are left alone.
        """
        name = dialer_name(owner)
        now = self.clock.now()
        earlier = and_(
            _c.lease_owner.startswith(name + "/", autoescape=True), _c.lease_owner != owner
        )
        with self.db.write() as conn:
            stale = list(
                conn.execute(
                    select(_c.id)
                    .where(_c.status.in_(_NOT_STARTED), earlier)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            if stale:
                conn.execute(
                    t.calls.update()
                    .where(_c.id.in_(stale))
                    .values(lease_owner=None, lease_expires_at=None, updated_at=now)
                )
                again = {pk: {"by": owner, "restart": True} for pk in stale}
                _events(conn, again, "released", now)
            query = (
                select(_c.id, _c.status, _c.lease_owner)
                .where(_c.status.in_(_IN_PROGRESS), earlier)
                .with_for_update(skip_locked=True)
            )
            reconciled = self._reconcile(conn, now, query, {}, "restarted")
        return len(stale), reconciled


def _ended(status: CallStatus, reason: str, now: datetime) -> dict[str, Any]:
    """The columns of a call that the dialing side ends without placing it (again)."""
    return {
        "status": status.value,
        "status_reason": reason,
        "ended_at": now,
        "updated_at": now,
        "lease_owner": None,
        "lease_expires_at": None,
    }
