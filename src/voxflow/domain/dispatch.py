"""Which due calls a dialer may take now, and when each may be sent: pure decisions, no I/O.

A claim round looks at the due calls oldest first and takes each one that fits:

- the dialer has room (its own ``max_calls``);
- its trunk has a free call (``max_calls`` of the trunk, counted over every dialer) and a send
  slot within ``horizon`` from now: per-trunk pacing is GCRA (the generic cell rate algorithm)
  with no burst allowance: each trunk has a theoretical arrival time (TAT); a call's slot is
  ``max(TAT, now)`` and the TAT moves on by ``1 / cps``. The TAT lives in the store, so every
  dialer process shares it;
- its account and its link are under their concurrency limits (``0`` is unlimited).

A call that does not fit stays where it is (unclaimed, in due order) and is taken in a later
round: nothing is dropped. The round also says when it is worth looking again.

Calls are claimed *ahead*: a call that falls due within ``horizon`` is claimed before it is due
and its slot is never before its due time (``max(TAT, due_at)``), so the dialer waits for the
exact moment with a timer of its own, and how often claim rounds run does not make calls late.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

UNLIMITED = 0


@dataclass(frozen=True)
class Candidate:
    """A due call that nobody holds. ``trunk`` is None for calls that use no trunk (sandbox)."""

    pk: int
    due_at: datetime
    trunk: str | None
    account_id: int
    link_pk: int | None


@dataclass(frozen=True)
class TrunkPace:
    """A trunk's configured pacing and cap."""

    cps: float
    max_calls: int


@dataclass
class TrunkState:
    """A trunk's limits and what is already using it."""

    cps: float
    max_calls: int
    busy: int = 0  # calls in progress or claimed on this trunk, by any dialer
    tat: datetime | None = None  # theoretical arrival time of the next call (GCRA)

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=1 / self.cps)


@dataclass
class Allowance:
    """A concurrency limit (``0`` for none) and the calls already counted against it."""

    limit: int = UNLIMITED
    busy: int = 0

    @property
    def full(self) -> bool:
        return self.limit != UNLIMITED and self.busy >= self.limit


@dataclass
class Plan:
    """The calls to claim with their send slots, and when to look again."""

    slots: dict[int, datetime] = field(default_factory=dict)
    # The earliest moment a call left waiting for its trunk's pacing could get a slot.
    paced_until: datetime | None = None
    # Some call waits for a call in progress to end (a trunk, account, link or dialer cap).
    waiting_for_capacity: bool = False


def gcra_slot(
    tat: datetime | None, now: datetime, interval: timedelta
) -> tuple[datetime, datetime]:
    """The send slot of the next call arriving at ``now`` (its due time, or the present if
    that is later) and the trunk's TAT after it (GCRA, no burst)."""
    slot = now if tat is None or tat < now else tat
    return slot, slot + interval


def plan_claims(
    candidates: Iterable[Candidate],
    *,
    now: datetime,
    room: int,
    horizon: timedelta,
    trunks: Mapping[str, TrunkState],
    accounts: MutableMapping[int, Allowance],
    links: MutableMapping[int, Allowance],
) -> Plan:
    """Take candidates in due order while they fit; ``trunks`` and the allowances are updated.

    A trunk not in ``trunks`` (a link names a trunk this dialer does not know) is not paced:
    placing the call fails with the reason, which is better than holding it forever.
    """
    plan = Plan()
    for call in sorted(candidates, key=lambda c: (c.due_at, c.pk)):
        if room <= 0:
            plan.waiting_for_capacity = True
            break
        account = accounts.setdefault(call.account_id, Allowance())
        link = (
            links.setdefault(call.link_pk, Allowance()) if call.link_pk is not None else Allowance()
        )
        trunk = trunks.get(call.trunk) if call.trunk is not None else None
        if account.full or link.full or (trunk is not None and trunk.busy >= trunk.max_calls):
            plan.waiting_for_capacity = True
            continue
        slot = max(now, call.due_at)  # claimed ahead: never sent before it is due
        if trunk is not None:
            slot, tat = gcra_slot(trunk.tat, slot, trunk.interval)
            if slot > now + horizon:
                ready = slot - horizon
                plan.paced_until = (
                    ready if plan.paced_until is None else min(plan.paced_until, ready)
                )
                continue
            trunk.tat = tat
            trunk.busy += 1
        account.busy += 1
        link.busy += 1
        plan.slots[call.pk] = slot
        room -= 1
    return plan


def too_late(due_at: datetime, now: datetime, max_lateness: timedelta | None) -> bool:
    """A call more than ``max_lateness`` past its due time is not placed (None: never)."""
    return max_lateness is not None and now - due_at > max_lateness


def lease_owner(name: str, incarnation: str) -> str:
    """The ``lease_owner`` of one run of a dialer: its stable name and this start's id."""
    return f"{name[:50]}/{incarnation[:12]}"


def dialer_name(owner: str) -> str:
    """The stable dialer name inside a ``lease_owner`` (the owner itself if it has none)."""
    name, sep, _ = owner.rpartition("/")
    return name if sep else owner
