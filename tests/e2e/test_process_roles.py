"""Real ``voxflow`` processes against SIPp: SIGTERM is a graceful stop, a restart picks up what
is left, and ``serve --no-dialer`` plus ``voxflow dialer`` processes share one PostgreSQL store
with every call placed exactly once."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.processes import (
    EXIT_WITHIN_S,
    account,
    calls,
    events,
    invites,
    place,
    trunk,
    voxflow,
    wait_for,
)
from tests.peers.sipp import sipp_uas
from tests.support import PostgresServer
from voxflow.store.db import Database

# uvicorn re-raises the signal once the graceful shutdown is done, so the exit says SIGTERM.
TERMINATED = (0, -signal.SIGTERM)


def test_sigterm_lets_calls_finish_and_a_restart_places_what_is_left(tmp_path: Path) -> None:
    with sipp_uas("uas_answer_dtmf") as sipp:
        # One call per 5 s through this trunk: the second call is still queued at SIGTERM.
        config = f"[sip]\nport = 0\n[dialer]\nshutdown_s = 60\n{trunk(sipp, hold_s=2, cps=0.2)}"
        db_url = f"sqlite:///{tmp_path / 'voxflow.db'}"
        with voxflow(tmp_path, db_url, config) as vf:
            proc, base = vf.serve()
            api = account(vf, base)
            db = Database(db_url)
            first, second = place(api, "1001"), place(api, "1002")
            wait_for(vf, "the first call answered", lambda: calls(db)[first].status == "answered")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(EXIT_WITHIN_S) in TERMINATED, vf.logs()
            done = calls(db)
            # It finished its 2 s hold and was hung up normally, not cut short.
            assert done[first].status == "completed" and done[first].status_reason is None
            assert [k for k, _ in events(db, first)][-1] == "completed"
            assert events(db, first)[-1][1] == {"hangup": "local"}
            assert done[second].status == "queued" and done[second].lease_owner is None
            # Started again, it places the call that was left.
            vf.serve()
            wait_for(vf, "the second call", lambda: calls(db)[second].ended_at is not None)
            assert calls(db)[second].status == "completed"
            db.dispose()
        assert sorted(invites(sipp).values()) == [1, 1]  # one INVITE per call, no re-dial


def test_sigterm_hangs_up_calls_that_outlive_shutdown_s(tmp_path: Path) -> None:
    with sipp_uas("uas_answer_dtmf") as sipp:
        config = f"[sip]\nport = 0\n[dialer]\nshutdown_s = 0.5\n{trunk(sipp, hold_s=600)}"
        db_url = f"sqlite:///{tmp_path / 'voxflow.db'}"
        with voxflow(tmp_path, db_url, config) as vf:
            proc, base = vf.serve()
            api = account(vf, base)
            db = Database(db_url)
            call_id = place(api, "1001")
            wait_for(vf, "the call answered", lambda: calls(db)[call_id].status == "answered")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(EXIT_WITHIN_S) in TERMINATED, vf.logs()
            call = calls(db)[call_id]
            assert call.status == "completed"
            assert call.status_reason == "hung up at shutdown: the call outlived shutdown_s (0.5 s)"
            assert events(db, call_id)[-1][1]["hangup"] == "shutdown"
            db.dispose()
            assert "BYE sip:" in sipp.messages


@pytest.mark.postgres
def test_api_and_two_dialers_share_postgresql_and_place_each_call_once(
    tmp_path: Path, postgres: PostgresServer, pg_template: str
) -> None:
    db_url = postgres.url(postgres.create_database(template=pg_template))
    with sipp_uas("uas_answer_dtmf") as sipp:
        config = f"[sip]\nport = 0\n{trunk(sipp, hold_s=1, cps=20)}"
        with voxflow(tmp_path, db_url, config) as vf:
            _, base = vf.serve("--no-dialer")
            api = account(vf, base)
            vf.start("dialer", "--name", "dialer-a")
            vf.start("dialer", "--name", "dialer-b")
            db = Database(db_url)
            made = [place(api, f"10{i:02d}") for i in range(12)]
            wait_for(
                vf,
                "every call to end",
                lambda: all(c.ended_at is not None for c in calls(db).values()),
            )
            assert {c.status for c in calls(db).values()} == {"completed"}
            owners = Counter(
                str(d["by"]).split("/")[0]
                for call_id in made
                for kind, d in events(db, call_id)
                if kind == "dialing"
            )
            assert sum(owners.values()) == 12 and set(owners) <= {"dialer-a", "dialer-b"}
            db.dispose()
            placed = invites(sipp)
            assert len(placed) == 12 and set(placed.values()) == {1}
