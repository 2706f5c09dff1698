"""Durable scheduling against the real store (SQLite and PostgreSQL), with an injected clock:
leases, their expiry and renewal, reconciliation to ``unknown``, catch-up order, maximum
lateness, per-trunk pacing and caps, account and link concurrency."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from tests.integration.test_dialer_sandbox import FakeClock, events_of, initiate, setup
from tests.support import RunningServer, attach, make_link, wrap, xml_of
from voxflow.domain.calls import CallStatus
from voxflow.domain.dispatch import TrunkPace
from voxflow.services.call_leases import CallLeases, ClaimRound, Pacing
from voxflow.services.call_records import CallRecords
from voxflow.store import tables as t

LEASE = timedelta(seconds=30)
WAIT_S = 30
NO_TRUNKS = Pacing(trunks={}, default_trunk=None)


def claim(
    leases: CallLeases,
    owner: str,
    *,
    room: int = 100,
    pacing: Pacing = NO_TRUNKS,
    max_lateness: timedelta | None = None,
) -> ClaimRound:
    return leases.claim(owner, room=room, lease=LEASE, pacing=pacing, max_lateness=max_lateness)


def ids(round_: ClaimRound) -> list[str]:
    return [c.call.call_id for c in round_.claims]


def row(server: RunningServer, call_id: str) -> object:
    with server.db.read() as conn:
        return conn.execute(select(t.calls).where(t.calls.c.call_id == call_id)).one()


def test_a_claim_is_a_lease_and_the_call_stays_queued_until_dialing(
    server: RunningServer,
) -> None:
    api = setup(server)
    call_id = initiate(api, "441111")
    clock = FakeClock()
    leases = CallLeases(server.db, clock)
    [c] = claim(leases, "a/1").claims
    call = row(server, call_id)
    assert (call.status, call.lease_owner) == ("queued", "a/1")  # type: ignore[attr-defined]
    assert call.lease_expires_at == clock.at + LEASE  # type: ignore[attr-defined]
    assert claim(leases, "b/1").claims == []  # held by a
    clock.at += timedelta(seconds=2)
    assert leases.start_dialing(c, "a/1", LEASE)
    call = row(server, call_id)
    assert call.status == "dialing" and call.queue_wait_ms >= 2000  # type: ignore[attr-defined]
    _, events = events_of(server, call_id)
    assert events[-1][0] == "dialing" and events[-1][1]["queue_wait_ms"] == call.queue_wait_ms  # type: ignore[attr-defined]


def test_an_expired_lease_that_never_reached_dialing_is_claimed_again(
    server: RunningServer,
) -> None:
    api = setup(server)
    call_id = initiate(api, "441111")
    clock = FakeClock()
    leases = CallLeases(server.db, clock)
    [lost] = claim(leases, "a/1").claims
    clock.at += timedelta(seconds=20)
    assert leases.renew("a/1", [lost.call.pk], LEASE) == 1  # renewal pushes the expiry on
    clock.at += timedelta(seconds=20)
    assert claim(leases, "b/1").claims == []
    clock.at += timedelta(seconds=11)  # a stopped renewing: its lease ran out
    assert ids(claim(leases, "b/1")) == [call_id]
    # The first owner can no longer start it: it is b's now.
    assert not leases.start_dialing(lost, "a/1", LEASE)
    assert leases.renew("a/1", [lost.call.pk], LEASE) == 0


def test_renewal_on_postgresql_skips_a_call_whose_row_another_transaction_holds(
    server: RunningServer,
) -> None:
    """The dialer's writer may hold calls' rows in a batch; renewal must not wait for them (it
    could deadlock with a batch that locks them in another order): it renews the others and
    gets the held one next time."""
    if server.db.is_sqlite:
        pytest.skip("PostgreSQL row locks; SQLite's one write lock serialises every writer")
    api = setup(server)
    held_id, free_id = initiate(api, "441111"), initiate(api, "442222")
    clock = FakeClock()
    leases = CallLeases(server.db, clock)
    claims = {c.call.call_id: c for c in claim(leases, "a/1").claims}
    pks = [claims[held_id].call.pk, claims[free_id].call.pk]
    with server.db.write() as conn:  # another transaction holds one row, as a batch would
        conn.execute(select(t.calls.c.id).where(t.calls.c.id == pks[0]).with_for_update())
        clock.at += timedelta(seconds=10)
        renewed: list[int] = []
        renewal = threading.Thread(target=lambda: renewed.append(leases.renew("a/1", pks, LEASE)))
        renewal.start()
        renewal.join(WAIT_S)  # a bound for a renewal that waits for the row (it never should)
        assert not renewal.is_alive(), "renewal waited for a row another transaction holds"
    renewal.join()
    assert renewed == [1]
    assert row(server, held_id).lease_expires_at == clock.at - timedelta(seconds=10) + LEASE  # type: ignore[attr-defined]
    assert row(server, free_id).lease_expires_at == clock.at + LEASE  # type: ignore[attr-defined]
    assert leases.renew("a/1", pks, LEASE) == 2  # once the row is free, both


def test_a_call_in_progress_whose_dialer_vanished_becomes_unknown_and_is_never_redialled(
    server: RunningServer,
) -> None:
    api = setup(server)
    call_id = initiate(api, "441111")
    clock = FakeClock()
    leases = CallLeases(server.db, clock)
    [c] = claim(leases, "a/1").claims
    assert leases.start_dialing(c, "a/1", LEASE)
    CallRecords(server.db, clock).move(
        c.call.pk, CallStatus.RINGING, sip_code=180, sip_reason="Ringing"
    )
    clock.at += LEASE + timedelta(seconds=1)
    round_ = claim(leases, "b/1")
    assert round_.claims == [] and round_.reconciled == 1
    got = xml_of(api.get("Calling", "getCall", call_id=call_id)).find("call")
    assert got is not None and got.findtext("status") == "unknown"
    assert "not dialled again" in (got.findtext("status_reason") or "")
    call = row(server, call_id)
    assert "a/1" in call.status_reason and "ringing" in call.status_reason  # type: ignore[attr-defined]
    assert call.lease_owner is None and call.ended_at is not None  # type: ignore[attr-defined]
    kinds = [e.findtext("kind") for e in got.findall("events/event")]
    assert kinds == ["queued", "dialing", "ringing", "unknown"]
    clock.at += timedelta(hours=1)
    assert claim(leases, "c/1").claims == []


def test_a_restarted_dialer_takes_back_its_own_calls_at_once_but_not_anothers(
    server: RunningServer,
) -> None:
    api = setup(server)
    first, second, third = (initiate(api, f"44111{i}") for i in range(3))
    clock = FakeClock()
    leases = CallLeases(server.db, clock)
    claimed = {c.call.call_id: c for c in claim(leases, "host:5080/old", room=2).claims}
    assert set(claimed) == {first, second}
    assert leases.start_dialing(claimed[first], "host:5080/old", LEASE)
    assert ids(claim(leases, "other/1")) == [third]
    # Same name, new incarnation; no time has passed, the leases are all still valid.
    assert leases.recover("host:5080/new") == (1, 1)
    assert row(server, first).status == "unknown"  # type: ignore[attr-defined]
    assert "restarted" in row(server, first).status_reason  # type: ignore[attr-defined]
    assert ids(claim(leases, "host:5080/new")) == [second]
    assert row(server, third).lease_owner == "other/1"  # type: ignore[attr-defined]
    # A name that merely starts the same is another dialer.
    assert leases.recover("host:50/x") == (0, 0)


def _set_due(server: RunningServer, call_id: str, due: datetime) -> None:
    with server.db.write() as conn:
        conn.execute(t.calls.update().where(t.calls.c.call_id == call_id).values(due_at=due))


def test_catch_up_places_oldest_first_and_expires_the_too_late(server: RunningServer) -> None:
    api = setup(server)
    clock = FakeClock()
    now = clock.at
    made = {name: initiate(api, "4411" + str(i), delay=1) for i, name in enumerate("abcde")}
    # While voxflow was down: these fell due 5 min, 2 h, 30 min, 1 min ago and in 10 min.
    for name, ago in (("a", 300), ("b", 7200), ("c", 1800), ("d", 60), ("e", -600)):
        _set_due(server, made[name], now - timedelta(seconds=ago))
    leases = CallLeases(server.db, clock)
    round_ = claim(leases, "d/1", max_lateness=timedelta(hours=1))
    assert ids(round_) == [made["c"], made["a"], made["d"]]
    assert round_.expired == 1
    # The next due call, half a horizon (1 s) before it: it is claimed ahead of its time.
    assert round_.wake_at == now + timedelta(seconds=600) - timedelta(milliseconds=500)
    late = row(server, made["b"])
    assert late.status == "expired" and "max_lateness_s (3600 s)" in late.status_reason  # type: ignore[attr-defined]
    _, events = events_of(server, made["b"])
    assert events[-1][0] == "expired" and events[-1][1]["late_s"] == 7200
    # Scheduled calls move to dialing straight from scheduled.
    assert leases.start_dialing(round_.claims[0], "d/1", LEASE)
    assert row(server, made["c"]).queue_wait_ms == 1_800_000  # type: ignore[attr-defined]


def test_pacing_slots_come_from_the_shared_gcra_state(server: RunningServer) -> None:
    api = setup(server)
    with server.db.write() as conn:
        conn.execute(t.links.update().values(trunk="eu"))
    made = [initiate(api, f"4420{i}") for i in range(6)]
    clock = FakeClock()
    leases = CallLeases(server.db, clock)
    pacing = Pacing(
        trunks={"eu": TrunkPace(cps=4, max_calls=100)},
        default_trunk="eu",
        horizon=timedelta(milliseconds=500),
    )
    # Sandbox accounts use no trunk; these tests make the account a normal one.
    with server.db.write() as conn:
        conn.execute(t.accounts.update().values(sandbox=False))
    first = claim(leases, "a/1", pacing=pacing)
    assert [c.slot - clock.at for c in first.claims] == [
        timedelta(milliseconds=ms) for ms in (0, 250, 500)
    ]
    assert ids(first) == made[:3]
    assert first.wake_at == clock.at + timedelta(milliseconds=250)  # 750 ms slot - horizon
    # Another dialer continues from the same trunk state, not from its own.
    second = claim(leases, "b/1", pacing=pacing)
    assert second.claims == []
    clock.at += timedelta(milliseconds=300)
    second = claim(leases, "b/1", pacing=pacing)
    # The next slot is the TAT (750 ms after the first round, 450 ms from now); the one after,
    # 700 ms away, is beyond the 500 ms horizon.
    assert [c.slot - clock.at for c in second.claims] == [timedelta(milliseconds=450)]
    assert ids(second) == made[3:4]
    with server.db.read() as conn:
        tat = conn.execute(select(t.trunk_pacing.c.next_slot_at)).scalar_one()
    assert tat == clock.at + timedelta(milliseconds=700)


def test_a_trunk_cap_counts_calls_of_every_dialer_and_frees_as_calls_end(
    server: RunningServer,
) -> None:
    api = setup(server)
    with server.db.write() as conn:
        conn.execute(t.accounts.update().values(sandbox=False))
    made = [initiate(api, f"4430{i}") for i in range(4)]
    clock = FakeClock()
    leases = CallLeases(server.db, clock)
    records = CallRecords(server.db, clock)
    pacing = Pacing(trunks={"main": TrunkPace(cps=1000, max_calls=2)}, default_trunk="main")
    a = claim(leases, "a/1", pacing=pacing)
    assert ids(a) == made[:2]
    b = claim(leases, "b/1", pacing=pacing)
    assert b.claims == [] and b.waiting_for_capacity
    for c in a.claims:
        assert leases.start_dialing(c, "a/1", LEASE)
    records.move(a.claims[0].call.pk, CallStatus.BUSY, sip_code=486, sip_reason="Busy")
    assert ids(claim(leases, "b/1", pacing=pacing)) == [made[2]]  # in due order


def test_account_and_link_limits_from_account_limits_apply_at_placement(
    server: RunningServer,
) -> None:
    api = setup(server)
    made = [initiate(api, f"4440{i}") for i in range(3)]
    clock = FakeClock()
    leases = CallLeases(server.db, clock)
    pacing = Pacing(trunks={}, default_trunk=None, link_max_calls=2)
    assert ids(claim(leases, "a/1", pacing=pacing, room=10)) == made[:2]  # the default link cap
    with server.db.write() as conn:
        account_id = conn.execute(select(t.accounts.c.id)).scalar_one()
        conn.execute(
            t.account_limits.insert().values(
                account_id=account_id,
                max_concurrent_link=5,
                max_concurrent_account=2,
                updated_at=clock.at,
            )
        )
    assert claim(leases, "a/1", pacing=pacing).waiting_for_capacity  # the account's own: 2
    with server.db.write() as conn:
        conn.execute(t.account_limits.update().values(max_concurrent_account=None))
    assert ids(claim(leases, "a/1", pacing=pacing)) == made[2:]  # NULL: the default, unlimited


def test_a_cancelled_claim_never_reaches_dialing(server: RunningServer) -> None:
    api = setup(server)
    call_id = initiate(api, "441111")
    leases = CallLeases(server.db, FakeClock())
    [c] = claim(leases, "a/1").claims
    r = api.put("Calling", "cancelCall", f"<request><call_id>{call_id}</call_id></request>")
    assert r.status_code == 204
    assert not leases.start_dialing(c, "a/1", LEASE)
    assert row(server, call_id).status == "cancelled"  # type: ignore[attr-defined]


def test_released_claims_go_to_the_next_dialer_at_once(server: RunningServer) -> None:
    api = setup(server)
    call_id = initiate(api, "441111")
    leases = CallLeases(server.db, FakeClock())
    [c] = claim(leases, "a/1").claims
    assert leases.release("b/1", [c.call.pk]) == 0  # not b's to give back
    assert leases.release("a/1", [c.call.pk]) == 1
    assert ids(claim(leases, "b/1")) == [call_id]
    assert [k for k, _ in events_of(server, call_id)[1]] == ["queued", "released"]


def test_concurrent_claimers_never_take_the_same_call(server: RunningServer) -> None:
    """Several dialers claiming at once, each in its own thread and connection."""
    api = setup(server)
    made = {initiate(api, f"45{i:04d}") for i in range(60)}
    clock = FakeClock()
    taken: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def dialer(owner: str) -> None:
        leases = CallLeases(server.db, clock)
        mine = taken.setdefault(owner, [])
        try:
            for _ in range(40):
                mine.extend(ids(claim(leases, owner, room=3)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=dialer, args=(f"d{i}/1",)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    every = [c for owner in taken.values() for c in owner]
    assert len(every) == len(set(every)) == len(made)
    assert set(every) == made


def test_a_backlog_on_a_full_trunk_does_not_hold_up_another_trunk(server: RunningServer) -> None:
    api = setup(server)
    make_link(api, "link456")
    attach(api, "F", "link456")
    with server.db.write() as conn:
        conn.execute(t.accounts.update().values(sandbox=False))
        conn.execute(t.links.update().where(t.links.c.link_id == "link456").values(trunk="b"))
    # More calls on trunk a than one round looks at (room + 100), then one on trunk b.
    on_a = [initiate(api, f"446{i:03d}") for i in range(105)]
    body = wrap(
        "<link_id>link456</link_id><call_variables><call_destination>447000</call_destination>"
        "</call_variables>"
    )
    on_b = xml_of(api.post("Calling", "initiateCall", body)).findtext("call_id")
    leases = CallLeases(server.db, FakeClock())
    pacing = Pacing(
        trunks={"a": TrunkPace(cps=1000, max_calls=1), "b": TrunkPace(cps=1000, max_calls=1)},
        default_trunk="a",
    )
    assert ids(claim(leases, "d/1", pacing=pacing, room=1)) == [on_a[0]]
    # Trunk a is full: its calls are not even looked at, and b's call goes.
    assert ids(claim(leases, "d/1", pacing=pacing, room=1)) == [on_b]
    again = claim(leases, "d/1", pacing=pacing, room=1)
    assert again.claims == [] and again.waiting_for_capacity  # a's calls wait, in due order


def test_calls_are_claimed_ahead_within_the_horizon_and_sent_at_their_due_time(
    server: RunningServer,
) -> None:
    api = setup(server)
    soon, later = initiate(api, "44501", delay=1), initiate(api, "44502", delay=1)
    clock = FakeClock()
    _set_due(server, soon, clock.at + timedelta(milliseconds=600))
    _set_due(server, later, clock.at + timedelta(seconds=3))
    leases = CallLeases(server.db, clock)
    pacing = Pacing(trunks={}, default_trunk=None, horizon=timedelta(seconds=1))
    first = claim(leases, "a/1", pacing=pacing)
    # Not due yet, but within the horizon: claimed now, to be sent exactly when it is due.
    assert ids(first) == [soon]
    assert first.claims[0].slot == clock.at + timedelta(milliseconds=600)
    # The next call is looked at again half a horizon before it is due.
    assert first.wake_at == clock.at + timedelta(milliseconds=2500)
    assert claim(leases, "b/1", pacing=pacing).claims == []  # a holds it; the other is far
    # A restart of the same dialer gives back its claims that are not due yet, too.
    assert leases.recover("a/2") == (1, 0)
    again = claim(leases, "b/1", pacing=pacing)
    assert ids(again) == [soon] and again.claims[0].slot == first.claims[0].slot
