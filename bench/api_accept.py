"""initiateCall acceptance (parse, validate, commit) against a bare endpoint of the same stack.

Runs one voxflow server exactly as production runs it (``voxflow serve``: one API process,
uvicorn with uvloop and httptools, the dialer running, SQLite by default, with its writer
process) and drives it with wrk at 64 concurrent connections: first ``GET /health`` (the bare
endpoint: same process, same Starlette stack, no work), then
``POST /Calling?v=3&method=initiateCall`` (every request stores a call), each after a 2 s
warm-up of its own.
Prints requests/s, p50/p99 latency, the server's CPU time per request (from /proc: the server
process and its writer process) and the ratio, then checks that every 201 left a call in the
database. It does so in rounds (3 by default, each a bare run and an initiateCall run) and
judges the median of the rounds, since a single round on a shared machine varies by about
±5%. Targets: ratio >= 0.25, initiateCall p99 < 50 ms.

    python bench/api_accept.py [--seconds 10] [--connections 64] [--rounds 3] [--db URL]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Server, prepare_link, start_server
from voxflow.store import tables as t
from voxflow.store.db import Database

FLOW = (
    '<request><callFlow name="Bench"><call id="c1" label="Agent" '
    'destinationPhoneNumber="441234567890"/></callFlow></request>'
)
INITIATE = (
    "<request><link_id>bench-link</link_id><call_variables>"
    "<call_destination>449789123123,,1,,2</call_destination><delay>60</delay>"
    "</call_variables></request>"
)


@dataclass
class Figures:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    cpu_us: float = float("nan")  # server CPU time (all threads, writer process too) per request


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(out: str) -> Figures:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    lat = {k: _ms(*re.match(r"([\d.]+)(\w+)", v).groups()) for k, v in pct.items()}  # type: ignore[union-attr, misc]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return Figures(rps, lat["50"], lat["99"], total, int(bad.group(1)) if bad else 0)


def wrk(url: str, seconds: int, connections: int, script: Path | None = None) -> Figures:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], check=True, capture_output=True, text=True).stdout
    return parse_wrk(out)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), NaN where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (the API's writer process, on SQLite)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def server_cpu_seconds(pid: int) -> float:
    """CPU time of the server and its child processes (the writer process's work counts)."""
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in children(pid))


def measured(
    server: Server, url: str, seconds: int, connections: int, script: Path | None
) -> Figures:
    before = server_cpu_seconds(server.process.pid)
    figures = wrk(url, seconds, connections, script)
    spent = server_cpu_seconds(server.process.pid) - before
    figures.cpu_us = spent * 1e6 / max(figures.requests, 1)
    return figures


def stored_calls(db_url: str) -> int:
    db = Database(db_url)
    try:
        with db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(t.calls)).scalar_one())
    finally:
        db.dispose()


def prepare(server: Server) -> None:
    prepare_link(server.base_url, server.headers(), "bench-link", FLOW)


def lua_script(server: Server, directory: Path, run: int) -> Path:
    """The wrk script of one run: each request calls another number (run, wrk thread and a
    counter in the number), so that the per-destination limits (7 calls in 15 minutes by
    default) are checked on every request but never hit, however many runs there are."""
    body = INITIATE.replace('"', '\\"').replace("449789123123", f"44{run % 100:02d}%d%07d")
    script = directory / f"initiate-{run}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/xml"\n'
        f'wrk.headers["username"] = "{server.username}"\n'
        f'wrk.headers["secureKey"] = "{server.key}"\n'
        "local threads = 0\n"
        "setup = function(thread)\n"
        "  threads = threads + 1\n"
        '  thread:set("thread_number", threads)\n'
        "end\n"
        "local counter = 0\n"
        "request = function()\n"
        "  counter = counter + 1\n"
        f'  return wrk.format(nil, nil, nil, string.format("{body}", thread_number, counter))\n'
        "end\n"
    )
    return script


def row(name: str, f: Figures) -> str:
    return (
        f"{name:<24}{f.rps:>12.0f}{f.p50_ms:>10.2f}{f.p99_ms:>10.2f}{f.requests:>10}{f.non_2xx:>8}"
        f"{f.cpu_us:>10.0f}"
    )


@dataclass
class Round:
    bare: Figures
    accept: Figures
    stored: int  # calls the database gained while initiateCall was measured

    @property
    def ratio(self) -> float:
        return self.accept.rps / self.bare.rps


def one_round(
    server: Server, db_url: str, directory: Path, number: int, *, seconds: int, connections: int
) -> Round:
    """The bare endpoint, then initiateCall, each after a 2 s warm-up of its own."""
    health = f"{server.base_url}/health"
    wrk(health, 2, connections)
    bare = measured(server, health, seconds, connections, None)
    url = f"{server.base_url}/Calling?v=3&method=initiateCall"
    wrk(url, 2, connections, lua_script(server, directory, 2 * number))
    before = stored_calls(db_url)
    script = lua_script(server, directory, 2 * number + 1)
    accept = measured(server, url, seconds, connections, script)
    return Round(bare, accept, stored_calls(db_url) - before)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs; the median counts")
    parser.add_argument("--db", help="database URL (default: a scratch SQLite file)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    server = start_server(args.db)
    try:
        prepare(server)
        db_url = args.db or f"sqlite:///{server.workdir / 'voxflow.db'}"
        with tempfile.TemporaryDirectory() as tmp:
            rounds = [
                one_round(
                    server, db_url, Path(tmp), n, seconds=args.seconds, connections=args.connections
                )
                for n in range(args.rounds)
            ]
    finally:
        server.stop()
    db = args.db or "sqlite"
    print(
        f"api_accept: {args.connections} connections, {args.seconds} s each, "
        f"{args.rounds} rounds, db={db}"
    )
    header = ("endpoint", "req/s", "p50 ms", "p99 ms", "requests", "non-2xx", "cpu us/req")
    print(
        f"{header[0]:<24}{header[1]:>12}"
        + "".join(f"{h:>10}" for h in header[2:5])
        + f"{header[5]:>8}{header[6]:>11}"
    )
    failed = False
    for n, r in enumerate(rounds, 1):
        print(row(f"{n}: bare GET /health", r.bare))
        print(row(f"{n}: initiateCall", r.accept))
        print(f"{n}: ratio initiateCall/bare: {r.ratio:.3f}")
        # wrk counts the answers it read; requests still in flight when it stopped add rows.
        answered = r.accept.requests - r.accept.non_2xx
        print(f"{n}: calls stored: {r.stored} for {answered} answers 201 (every one stored)")
        failed = failed or r.stored < answered
    if failed:
        print("FAILED: fewer calls stored than answered 201")
        return 1
    # The machine is shared and noisy (a round's ratio varies by about ±5%): the median of the
    # rounds is the figure.
    ratio = statistics.median(r.ratio for r in rounds)
    p99 = statistics.median(r.accept.p99_ms for r in rounds)
    print(f"median ratio initiateCall/bare: {ratio:.3f} (target >= 0.25)")
    print(f"median initiateCall p99: {p99:.1f} ms (target < 50)")
    ok = ratio >= 0.25 and p99 < 50 and all(r.accept.non_2xx == 0 for r in rounds)
    print("targets met" if ok else "targets NOT met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
