"""``kill -9`` while calls come due: every accepted call is placed exactly once or is ``unknown``
with a reason, and none is lost.

1,000 calls are accepted through the API with ``<delay>1</delay>`` (a real minute), over about
25 s and each to its own destination number, so they come due over a window of that length.
While they come due, voxflow is killed (SIGKILL) at seeded random moments and started again.
SIPp answers each call and hangs up after a second by itself, so calls end even when voxflow
died in the middle of one, and its own message log (``-trace_msg``) counts the INVITEs per
destination number.

Afterwards:

- every call is final: none is left queued, scheduled, dialing, ringing or answered, none
  expired;
- a call whose final status is not ``unknown`` reached SIPp exactly once (one INVITE Call-ID
  for its destination);
- an ``unknown`` call has a ``status_reason`` and reached SIPp at most once;
- exactly the calls that were in progress in a killed process when it died are ``unknown``
  (they are never dialled again); the claims it held that had not started were placed by
  another run.

Set ``VOXFLOW_CRASH_SEED`` to replay the kill moments of a run (the seed is printed).
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.e2e.processes import (
    Voxflow,
    account,
    calls,
    initiate,
    invites_per_destination,
    trunk,
    voxflow,
    wait_for,
)
from tests.peers.sipp import Sipp, sipp_uas
from tests.support import ApiClient, PostgresServer, free_port, xml_of
from voxflow.domain.calls import IN_PROGRESS, NOT_STARTED
from voxflow.store import tables as t
from voxflow.store.db import Database

pytestmark = pytest.mark.slow

CALLS = 1000
ACCEPT_OVER_S = 25.0  # the calls come due over this window, a minute after acceptance
KILLS = 4
DELAY_S = 60.0  # <delay>1</delay>: one minute
ALL_FINAL_WITHIN_S = 240
RTP = (33000, 36000)  # a range of its own: other tests use 31000-32100
# SIPp hangs up 1 s after answering; voxflow's own hold is longer, so SIPp ends every call. A
# call voxflow abandoned (it died) ends in SIPp after -recv_timeout.
SIPP_ARGS = ("-recv_timeout", "20000")
IN_PROGRESS_VALUES = {s.value for s in IN_PROGRESS}
NOT_FINAL = IN_PROGRESS_VALUES | {s.value for s in NOT_STARTED}


def seeded() -> random.Random:
    seed = int(os.environ.get("VOXFLOW_CRASH_SEED") or random.randrange(2**32))
    print(f"\ncrash test seed: VOXFLOW_CRASH_SEED={seed}")
    return random.Random(seed)


def config(sipp: Sipp, dialer: str) -> str:
    return (
        f"[sip]\nport = 0\n[dialer]\n{dialer}lease_s = 6\n"
        f"{trunk(sipp, rtp=RTP, hold_s=5, cps=100, max_calls=600)}"
    )


def destination(i: int) -> str:
    return f"447700{i:06d}"


def accept(api: ApiClient) -> tuple[dict[str, str], float]:
    """Accept CALLS calls, spread evenly over ACCEPT_OVER_S; returns {call_id: destination}
    and the monotonic time of the first acceptance."""
    accepted: dict[str, str] = {}
    start = time.monotonic()
    for i in range(CALLS):
        pause = start + i * ACCEPT_OVER_S / CALLS - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        r = api.post("Calling", "initiateCall", initiate(destination(i), delay=1))
        assert r.status_code == 201, r.text
        accepted[xml_of(r).findtext("call_id") or ""] = destination(i)
    print(f"accepted {len(accepted)} calls in {time.monotonic() - start:.1f} s")
    return accepted, start


@dataclass
class Kill:
    at_s: float  # seconds after the first call fell due
    who: str
    in_progress: set[str]  # calls this process was dialling when it died
    claimed: int  # calls it held that had not started


@dataclass
class Crashes:
    db: Database
    first_due: float  # monotonic
    kills: list[Kill] = field(default_factory=list)

    def kill(self, proc: subprocess.Popen[bytes], who: str, owner_prefix: str) -> None:
        proc.kill()
        proc.wait()
        at = time.monotonic() - self.first_due
        owned = t.calls.c.lease_owner.startswith(owner_prefix, autoescape=True)
        with self.db.read() as conn:
            rows = conn.execute(
                select(t.calls.c.call_id, t.calls.c.status).where(
                    owned, t.calls.c.status.in_(NOT_FINAL)
                )
            ).all()
        kill = Kill(
            at,
            who,
            {r.call_id for r in rows if r.status in IN_PROGRESS_VALUES},
            sum(r.status not in IN_PROGRESS_VALUES for r in rows),
        )
        self.kills.append(kill)
        print(
            f"kill -9 {who} at due+{at:.1f} s: {len(kill.in_progress)} calls in progress,"
            f" {kill.claimed} claimed and not started"
        )


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def all_final(db: Database) -> Callable[[], bool]:
    def check() -> bool:
        with db.read() as conn:
            left = conn.execute(
                select(t.calls.c.id).where(t.calls.c.status.in_(NOT_FINAL)).limit(1)
            ).first()
        return left is None

    return check


def check_outcome(
    db: Database, sipp: Sipp, accepted: dict[str, str], crashes: Crashes
) -> Counter[str]:
    """The invariants of the module docstring; returns the count of final statuses."""
    sipp.stop()  # its message log is complete once it exited
    placed = invites_per_destination(sipp)
    rows: dict[str, Any] = calls(db)
    assert set(rows) == set(accepted)
    statuses = Counter(r.status for r in rows.values())
    print(f"final statuses: {dict(statuses)}")
    assert not NOT_FINAL & set(statuses) and "expired" not in statuses, statuses
    assert set(placed) <= set(accepted.values()), "an INVITE to a number nobody asked for"
    wrong = []
    for call_id, row in rows.items():
        n = len(placed.get(accepted[call_id], ()))
        if row.status == "unknown":
            if n > 1 or not row.status_reason:
                wrong.append((call_id, row.status, n, row.status_reason))
        elif n != 1:
            wrong.append((call_id, row.status, n, row.status_reason))
    assert not wrong, f"{len(wrong)} calls not placed exactly once: {wrong[:20]}"
    died_dialling = set().union(*(k.in_progress for k in crashes.kills))
    unknown = {c for c, r in rows.items() if r.status == "unknown"}
    assert unknown == died_dialling, (
        sorted(unknown - died_dialling),
        sorted(died_dialling - unknown),
    )
    # Something happened: a kill landed while calls were being placed or held.
    assert died_dialling or any(k.claimed for k in crashes.kills), crashes.kills
    reached = sum(len(placed.get(accepted[c], ())) for c in unknown)
    print(
        f"{len(unknown)} unknown (in progress at a kill; {reached} of them had reached SIPp),"
        f" {sum(k.claimed for k in crashes.kills)} claims taken over,"
        f" {len(crashes.kills)} kills at due+"
        + ", ".join(f"{k.at_s:.1f} s ({k.who})" for k in crashes.kills)
    )
    return statuses


def test_kill_9_serve_while_calls_come_due(tmp_path: Path) -> None:
    rng = seeded()
    with sipp_uas("uas_answer_then_bye", *SIPP_ARGS) as sipp:
        db_url = f"sqlite:///{tmp_path / 'voxflow.db'}"
        # A stable dialer name: a restarted serve takes back what its killed run left.
        with voxflow(tmp_path, db_url, config(sipp, 'name = "crash"\n')) as vf:
            port = free_port()
            proc, base = vf.serve(port=port)
            db = Database(db_url)
            api = account(vf, base)
            accepted, start = accept(api)
            api.close()
            crashes = Crashes(db, start + DELAY_S)
            moment = crashes.first_due + rng.uniform(0, 3)
            for _ in range(KILLS):
                sleep_until(moment)
                crashes.kill(proc, "serve", "crash/")
                time.sleep(rng.uniform(0, 2))  # down for a moment
                proc, _ = vf.serve(port=port)
                moment = time.monotonic() + rng.uniform(1, 5)
            wait_for(vf, "every call to end", all_final(db), ALL_FINAL_WITHIN_S)
            statuses = check_outcome(db, sipp, accepted, crashes)
            assert statuses["completed"] > 0
            db.dispose()


def _start_dialer(vf: Voxflow, name: str) -> subprocess.Popen[bytes]:
    proc = vf.start("dialer", "--name", name)
    vf.wait_logged(proc, f"dialer {name}/")
    return proc


@pytest.mark.postgres
def test_kill_9_dialers_sharing_postgresql_while_calls_come_due(
    tmp_path: Path, postgres: PostgresServer, pg_template: str
) -> None:
    rng = seeded()
    db_url = postgres.url(postgres.create_database(template=pg_template))
    with (
        sipp_uas("uas_answer_then_bye", *SIPP_ARGS) as sipp,
        voxflow(tmp_path, db_url, config(sipp, "")) as vf,
    ):
        _, base = vf.serve("--no-dialer")
        db = Database(db_url)
        api = account(vf, base)
        dialers = {name: _start_dialer(vf, name) for name in ("dialer-a", "dialer-b")}
        accepted, start = accept(api)
        api.close()
        crashes = Crashes(db, start + DELAY_S)
        moment = crashes.first_due + rng.uniform(0, 3)
        for _ in range(KILLS):
            sleep_until(moment)
            victims = rng.choice([["dialer-a"], ["dialer-b"], ["dialer-a", "dialer-b"]])
            for name in victims:
                crashes.kill(dialers[name], name, name + "/")
            # Down long enough, sometimes, for the other dialer to find the leases expired.
            time.sleep(rng.uniform(0.5, 9))
            for name in victims:
                dialers[name] = _start_dialer(vf, name)
            moment = time.monotonic() + rng.uniform(1, 5)
        wait_for(vf, "every call to end", all_final(db), ALL_FINAL_WITHIN_S)
        check_outcome(db, sipp, accepted, crashes)
        db.dispose()
