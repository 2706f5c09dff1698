"""Durable scheduling: how late a real ``voxflow serve`` places calls that fall due at a steady
rate, next to a bare asyncio timer loop waking at the same due times on the same machine.

For each backend (SQLite, PostgreSQL):

1. a ``voxflow serve`` process (API + dialer, uvloop as always under uvicorn) with one trunk to
   a SIPp UAS on loopback (``scenarios/uas_echo.xml``: answers at once, echoes RTP, hangs up
   on the caller's BYE); the trunk's pacing allows the rate (``--cps``, default 250 > 10,000/60)
   and ``hold_s = 0``, so each call is a full INVITE / 200 / ACK / BYE;
2. ``--calls`` calls (default 10,000) are accepted with ``<delay>1</delay>`` through the
   product's own acceptance code (``services.calls.read_request``, ``prepare_call`` and
   ``store_call``, the code behind ``initiateCall``), each with its acceptance moment set one
   minute before its due time, so that the due times are spread evenly over ``--seconds``
   (default 60) starting ``--lead`` seconds later. Why not HTTP: ``delay`` is in whole minutes,
   so through the API the due times would be the acceptance moments plus 60 s, spread as
   unevenly as this shared machine serves HTTP at 167 requests/s; ``bench/api_accept.py``
   measures acceptance;
3. while the calls fall due, a thread of this process runs the reference: a bare asyncio loop
   (uvloop when installed, like ``voxflow serve``) with one ``call_at`` timer per due time;
4. afterwards, from the store: lateness = ``started_at`` (the moment the call was committed
   ``dialing``, right before its INVITE) - ``due_at``: p50 / p99 / max; the claim rate: calls
   claimed per second and claim rounds per second (a round stamps every call it claims with
   the same ``claimed_at``; rounds that claimed nothing leave no trace and are not counted);
   and how the calls ended.

Target: p99 lateness < 100 ms.

The far end is SIPp by default: every call is a real SIP call at 167 calls/s, so the figure
includes a process that is also running SIP and RTP for every call (and its store writes:
dialing, ringing, answered, completed). When the machine cannot carry that next to the dialer
(it is shared; the reference shows how noisy it is), the dialer falls behind in throughput, not
in timing: ``--far-end sandbox`` (the sandbox account's simulated far end, answering at once,
no SIP) measures the scheduler alone. Lateness is measured to ``started_at``, the moment the
dialer begins the move to ``dialing``; the INVITE follows that commit.

    python bench/scheduler.py                           # 10,000 calls over 60 s, both backends
    python bench/scheduler.py --calls 2000 --seconds 20 --backend sqlite
    python bench/scheduler.py --backend postgresql --pg-url postgresql+psycopg://u@host/db
    other flags: --cps, --lead, --far-end sandbox (no SIP: the sandbox account's simulated far
    end), --keep (keep the scratch directory)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from tests.support import PostgresServer  # noqa: E402 (the tests' throwaway PostgreSQL)

from common import (  # noqa: E402
    free_port,
    prepare_link,
    start_udp_listener,
    stop_process,
    udp_port_free,
    wait_healthy,
)
from voxflow.domain.calls import FINAL  # noqa: E402
from voxflow.services.accounts import Account  # noqa: E402
from voxflow.services.calls import prepare_call, read_request, store_call  # noqa: E402
from voxflow.store import tables as t  # noqa: E402
from voxflow.store.db import Database  # noqa: E402

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
LINK = "bench-link"
FLOW = (
    '<request><callFlow name="Bench"><call id="c1" label="Agent" '
    'destinationPhoneNumber="441234567890"/></callFlow></request>'
)
RTP = (36100, 39900)  # away from the tests' ranges and the default one
BATCH = 500
LATE = timedelta(milliseconds=100)
FINAL_VALUES = [s.value for s in FINAL]


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


# ------------------------------------------------------------------ the far end


class Uas:
    """SIPp answering every call at once and hanging up on the caller's BYE."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        media = free_port()
        while not (udp_port_free(media) and udp_port_free(media + 2)):
            media = free_port()
        args = [
            "sipp",
            "-sf",
            str(SCENARIOS / "uas_echo.xml"),
            "-i",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-mi",
            "127.0.0.1",
            "-mp",
            str(media),
            "-rtp_echo",
            "-nostdin",
            "-buff_size",
            "4194304",
            "-recv_timeout",
            "20000",
        ]
        self.process = start_udp_listener(args, workdir, self.port)

    def stop(self) -> None:
        stop_process(self.process, grace_s=2)


# ------------------------------------------------------------------ voxflow serve


class Serve:
    def __init__(self, workdir: Path, db_url: str, config: str) -> None:
        (workdir / "voxflow.toml").write_text(config)
        self.env = {**os.environ, "VOXFLOW_DATA_DIR": str(workdir), "VOXFLOW_LOG_LEVEL": "WARNING"}
        self.args = ["--db", db_url, "--config", str(workdir / "voxflow.toml")]
        self.log = workdir / "serve.log"
        self.username, self.key = self._account()
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        with self.log.open("wb") as fh:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "voxflow", "serve", "--port", str(port), *self.args],
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        wait_healthy(self.base, self.process, lambda: f":\n{self.log.read_text()[-3000:]}")

    def _account(self) -> tuple[str, str]:
        out = subprocess.run(
            [sys.executable, "-m", "voxflow", "account", "create", "bench", "--json", *self.args],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        new = json.loads(out)
        return new["username"], new["secureKey"]

    def prepare(self) -> None:
        """A node, a link and its call flow, through the API."""
        headers = {"username": self.username, "secureKey": self.key}
        prepare_link(self.base, headers, LINK, FLOW)

    def stop(self) -> None:
        stop_process(self.process, grace_s=60)


def config(uas: Uas | None, cps: float, max_calls: int) -> str:
    dialer = f"[sip]\nport = 0\n[dialer]\nmax_calls = {max_calls}\n"
    if uas is None:  # the sandbox account's simulated far end: answers at once, no hold
        return f"{dialer}[softphone]\nport = 0\n[sandbox]\nanswer_after_s = 0\nhold_s = 0\n"
    return (
        f'{dialer}[[trunks]]\nname = "uas"\nhost = "127.0.0.1"\nport = {uas.port}\n'
        f'caller_id = "441234567890"\nring_timeout_s = 10\nhold_s = 0\ncps = {cps}\n'
        f"max_calls = {max_calls}\nrtp_port_min = {RTP[0]}\nrtp_port_max = {RTP[1]}\n"
    )


# ------------------------------------------------------------------ the calls


def due_times(calls: int, seconds: float, first: datetime) -> list[datetime]:
    step = seconds / calls
    return [first + timedelta(seconds=i * step) for i in range(calls)]


def accept(db: Database, username: str, sandbox: bool, dues: Sequence[datetime]) -> float:
    """Store one call per due time through the product's acceptance code, accepted one minute
    before it (``<delay>1</delay>``); returns the seconds it took."""
    started = time.monotonic()
    with db.read() as conn:
        row = conn.execute(select(t.accounts).where(t.accounts.c.username == username)).one()
    account = Account(row.id, row.username, sandbox)
    if sandbox:
        with db.write() as conn:
            conn.execute(t.accounts.update().where(t.accounts.c.id == row.id).values(sandbox=True))
    for start in range(0, len(dues), BATCH):
        with db.write() as conn:
            for i, due in enumerate(dues[start : start + BATCH], start):
                variables = {"call_destination": f"4477{i:08d}", "delay": "1"}
                request = read_request(variables, due - timedelta(minutes=1))
                call = prepare_call(conn, account, LINK, request)
                assert call.due_at == due
                store_call(conn, call)
    return time.monotonic() - started


class Reference:
    """A bare asyncio loop in a thread, one ``call_at`` timer per due time: how late it wakes."""

    def __init__(self, dues: Sequence[datetime]) -> None:
        self.dues = [
            d.replace(tzinfo=UTC).timestamp() if d.tzinfo is None else d.timestamp() for d in dues
        ]
        self.late_s: list[float] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            import uvloop

            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        loop.run_until_complete(self._timers())
        loop.close()

    async def _timers(self) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        left = len(self.dues)

        def fire(due: float) -> None:
            nonlocal left
            self.late_s.append(time.time() - due)
            left -= 1
            if left == 0:
                done.set_result(None)

        offset = loop.time() - time.time()
        for due in self.dues:
            loop.call_at(due + offset, fire, due)
        await done

    def join(self, timeout_s: float) -> None:
        self.thread.join(timeout_s)


@dataclass
class Result:
    backend: str
    far_end: str
    calls: int
    accept_s: float
    placed: int
    late_ms: list[float]
    ref_ms: list[float]
    claim_span_s: float
    rounds: int
    biggest_round: int
    outcomes: Counter[str]


def wait_started(db: Database, calls: int, until: float) -> None:
    """Until every call has left queued/scheduled (or the bound)."""
    while time.monotonic() < until:
        with db.read() as conn:
            started = conn.execute(
                select(func.count()).select_from(t.calls).where(t.calls.c.started_at.is_not(None))
            ).scalar_one()
        if started >= calls:
            return
        time.sleep(0.5)


def wait_final(db: Database, until: float) -> None:
    while time.monotonic() < until:
        with db.read() as conn:
            left = conn.execute(
                select(func.count())
                .select_from(t.calls)
                .where(t.calls.c.status.not_in(FINAL_VALUES))
            ).scalar_one()
        if left == 0:
            return
        time.sleep(0.5)


def late_calls(rows: Sequence[Any]) -> None:
    """Where the calls more than 100 ms late were, by second of due time, and the worst five."""
    first = min(r.due_at for r in rows)

    def late(r: Any) -> timedelta:
        return r.started_at - r.due_at if r.started_at else timedelta(0)

    slow = Counter(int((r.due_at - first).total_seconds()) for r in rows if late(r) > LATE)
    if not slow:
        return
    print("  calls > 100 ms late, by second of due time:", dict(sorted(slow.items())))
    for r in sorted(rows, key=late)[-5:]:
        at = [(v - first).total_seconds() for v in (r.due_at, r.claimed_at, r.started_at)]
        print("    due +{:.3f} s, claimed +{:.3f} s, dialing +{:.3f} s".format(*at))


def measure(db: Database) -> tuple[list[float], int, float, int, Counter[str]]:
    with db.read() as conn:
        rows = conn.execute(
            select(t.calls.c.due_at, t.calls.c.started_at, t.calls.c.claimed_at, t.calls.c.status)
        ).all()
    late = [(r.started_at - r.due_at).total_seconds() * 1000 for r in rows if r.started_at]
    late_calls(rows)
    claimed = [r.claimed_at for r in rows if r.claimed_at is not None]
    rounds = Counter(claimed)
    span = (max(claimed) - min(claimed)).total_seconds() if claimed else 0.0
    return late, len(rounds), span, max(rounds.values(), default=0), Counter(r.status for r in rows)


def run_backend(backend: str, db_url: str, args: argparse.Namespace, workdir: Path) -> Result:
    workdir.mkdir(parents=True, exist_ok=True)
    uas = Uas(workdir) if args.far_end == "sipp" else None
    serve = None
    try:
        serve = Serve(workdir, db_url, config(uas, args.cps, args.max_calls))
        serve.prepare()
        db = Database(db_url)
        first = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=args.lead)
        dues = due_times(args.calls, args.seconds, first)
        took = accept(db, serve.username, uas is None, dues)
        lead_left = (first - datetime.now(UTC).replace(tzinfo=None)).total_seconds()
        print(
            f"{backend}: {args.calls} calls accepted in {took:.1f} s;"
            f" first due in {lead_left:.1f} s"
        )
        if lead_left < 1:
            print(f"{backend}: WARNING acceptance overran the lead; raise --lead")
        reference = Reference(dues)
        end = time.monotonic() + lead_left + args.seconds
        wait_started(db, args.calls, end + 60)
        wait_final(db, time.monotonic() + 60)
        reference.join(30)
        late, rounds, span, biggest, outcomes = measure(db)
        db.dispose()
    finally:
        if serve is not None:
            serve.stop()
        if uas is not None:
            uas.stop()
    return Result(
        backend,
        args.far_end,
        args.calls,
        took,
        len(late),
        late,
        [s * 1000 for s in reference.late_s],
        span,
        rounds,
        biggest,
        outcomes,
    )


def print_table(results: Sequence[Result], args: argparse.Namespace) -> bool:
    print()
    print(
        f"scheduler: {args.calls} calls due evenly over {args.seconds:g} s"
        f" ({args.calls / args.seconds:.0f}/s), trunk cps {args.cps:g}, far end {args.far_end}"
    )
    head = f"{'':<28}{'placed':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    print(head + f"{'claims/s':>10}{'rounds/s':>10}{'max/round':>10}")
    ok = True
    for r in results:
        rate = r.placed / r.claim_span_s if r.claim_span_s else 0.0
        rounds = r.rounds / r.claim_span_s if r.claim_span_s else 0.0
        for name, values, extra in (
            (
                f"{r.backend}: voxflow serve",
                r.late_ms,
                f"{rate:>10.0f}{rounds:>10.1f}{r.biggest_round:>10}",
            ),
            (f"{r.backend}: bare asyncio timers", r.ref_ms, ""),
        ):
            if not values:
                print(f"{name:<28}{0:>8}")
                continue
            print(
                f"{name:<28}{len(values):>8}{pct(values, 50):>9.1f}{pct(values, 99):>9.1f}"
                f"{max(values):>9.1f}{extra}"
            )
        print(
            f"{'':<28}outcomes: {dict(r.outcomes)};"
            f" mean lateness {statistics.fmean(r.late_ms or [0]):.1f} ms"
        )
        met = r.placed == r.calls and bool(r.late_ms) and pct(r.late_ms, 99) < 100
        ok = ok and met
        print(f"{'':<28}p99 < 100 ms and every call placed: {'yes' if met else 'NO'}")
    return ok


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="the due times' spread")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-url", help="a PostgreSQL database to use (default: a throwaway one)")
    parser.add_argument("--cps", type=float, default=250.0, help="the trunk's pacing")
    parser.add_argument("--max-calls", type=int, default=1500, help="dialer and trunk max_calls")
    parser.add_argument("--lead", type=float, default=30.0, help="seconds to the first due call")
    parser.add_argument("--far-end", choices=["sipp", "sandbox"], default="sipp")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.far_end == "sipp" and shutil.which("sipp") is None:
        print("sipp is not installed (apt-get install sip-tester)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="voxflow-bench-scheduler-"))
    results: list[Result] = []
    try:
        if args.backend in ("sqlite", "both"):
            url = f"sqlite:///{workdir / 'sqlite' / 'voxflow.db'}"
            results.append(run_backend("sqlite", url, args, workdir / "sqlite"))
        if args.backend in ("postgresql", "both"):
            if args.pg_url:
                results.append(run_backend("postgresql", args.pg_url, args, workdir / "pg"))
            else:
                pg = PostgresServer.start()
                try:
                    url = pg.url(pg.create_database())
                    results.append(run_backend("postgresql", url, args, workdir / "pg"))
                finally:
                    pg.stop()
    finally:
        if args.keep:
            print(f"scratch directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    ok = print_table(results, args)
    print("target met" if ok else "target NOT met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
