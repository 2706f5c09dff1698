"""Claim decisions with an injected time: GCRA pacing, caps, lateness, lease owners."""

from __future__ import annotations

from datetime import datetime, timedelta

from voxflow.domain.dispatch import (
    Allowance,
    Candidate,
    TrunkState,
    dialer_name,
    gcra_slot,
    lease_owner,
    plan_claims,
    too_late,
)

T0 = datetime(2026, 11, 26, 12, 0, 0)
S = timedelta(seconds=1)


def calls(
    n: int, *, trunk: str | None = "t", account: int = 1, link: int | None = 10
) -> list[Candidate]:
    return [Candidate(pk, T0 - (n - pk) * S, trunk, account, link) for pk in range(1, n + 1)]


def test_gcra_spaces_slots_by_one_over_cps_and_never_in_the_past() -> None:
    interval = timedelta(milliseconds=250)
    assert gcra_slot(None, T0, interval) == (T0, T0 + interval)
    # After idle time the TAT is in the past: the next call may go now.
    assert gcra_slot(T0 - 10 * S, T0, interval) == (T0, T0 + interval)
    # Busy trunk: the slot is the TAT.
    assert gcra_slot(T0 + 3 * S, T0, interval) == (T0 + 3 * S, T0 + 3 * S + interval)


def test_slots_of_one_trunk_follow_the_cps_in_due_order() -> None:
    trunks = {"t": TrunkState(cps=4, max_calls=100)}
    plan = plan_claims(
        reversed(calls(5)), now=T0, room=10, horizon=2 * S, trunks=trunks, accounts={}, links={}
    )
    assert list(plan.slots) == [1, 2, 3, 4, 5]  # oldest due first
    assert [plan.slots[pk] - T0 for pk in range(1, 6)] == [
        timedelta(milliseconds=250 * i) for i in range(5)
    ]
    assert trunks["t"].tat == T0 + timedelta(milliseconds=1250)
    assert trunks["t"].busy == 5


def test_calls_beyond_the_horizon_wait_and_say_when_to_look_again() -> None:
    trunks = {"t": TrunkState(cps=1, max_calls=100, tat=T0 + 2 * S)}
    plan = plan_claims(
        calls(3), now=T0, room=10, horizon=3 * S, trunks=trunks, accounts={}, links={}
    )
    assert plan.slots == {1: T0 + 2 * S, 2: T0 + 3 * S}
    assert plan.paced_until == T0 + 1 * S  # call 3's slot (T0+4) minus the horizon
    assert not plan.waiting_for_capacity


def test_a_full_trunk_holds_its_calls_but_not_another_trunks() -> None:
    trunks = {"a": TrunkState(cps=100, max_calls=2, busy=1), "b": TrunkState(cps=100, max_calls=5)}
    candidates = [*calls(3, trunk="a"), Candidate(9, T0, "b", 1, 10)]
    plan = plan_claims(candidates, now=T0, room=10, horizon=S, trunks=trunks, accounts={}, links={})
    assert sorted(plan.slots) == [1, 9]
    assert plan.waiting_for_capacity


def test_account_and_link_concurrency_limits() -> None:
    accounts = {1: Allowance(limit=3, busy=1)}
    links = {10: Allowance(limit=1), 11: Allowance()}
    candidates = [
        *calls(2, trunk=None, link=10),
        Candidate(7, T0, None, 1, 11),
        Candidate(8, T0, None, 1, 11),
    ]
    plan = plan_claims(
        candidates, now=T0, room=10, horizon=S, trunks={}, accounts=accounts, links=links
    )
    # Link 10 takes one; the account (3, one busy) then has room for one more, on link 11.
    assert sorted(plan.slots) == [1, 7]
    assert plan.waiting_for_capacity
    assert (accounts[1].busy, links[10].busy, links[11].busy) == (3, 1, 1)


def test_calls_without_a_trunk_are_not_paced_and_the_dialer_room_counts() -> None:
    plan = plan_claims(
        calls(5, trunk=None), now=T0, room=3, horizon=S, trunks={}, accounts={}, links={}
    )
    assert plan.slots == {1: T0, 2: T0, 3: T0}
    assert plan.waiting_for_capacity


def test_unlimited_is_zero() -> None:
    assert not Allowance(limit=0, busy=10_000).full
    assert Allowance(limit=2, busy=2).full


def test_too_late() -> None:
    hour = timedelta(hours=1)
    assert not too_late(T0 - hour, T0, hour)
    assert too_late(T0 - hour - S, T0, hour)
    assert not too_late(T0 - 100 * hour, T0, None)


def test_lease_owner_keeps_the_stable_name() -> None:
    owner = lease_owner("host:10.0.0.1:5080", "0123456789abcdef")
    assert owner == "host:10.0.0.1:5080/0123456789ab"
    assert dialer_name(owner) == "host:10.0.0.1:5080"
    assert dialer_name("legacy") == "legacy"
    assert len(lease_owner("x" * 80, "y" * 40)) <= 64


def test_calls_due_within_the_horizon_are_claimed_ahead_with_their_due_time_as_slot() -> None:
    trunks = {"t": TrunkState(cps=10, max_calls=100)}
    soon = [
        Candidate(1, T0 + timedelta(milliseconds=300), "t", 1, 10),
        Candidate(2, T0 + timedelta(milliseconds=320), "t", 1, 10),  # 100 ms after 1 by pacing
        Candidate(3, T0 + timedelta(milliseconds=700), None, 1, 10),  # no trunk: its due time
    ]
    plan = plan_claims(soon, now=T0, room=10, horizon=S, trunks=trunks, accounts={}, links={})
    assert plan.slots == {
        1: T0 + timedelta(milliseconds=300),
        2: T0 + timedelta(milliseconds=400),
        3: T0 + timedelta(milliseconds=700),
    }
    assert trunks["t"].tat == T0 + timedelta(milliseconds=500)
