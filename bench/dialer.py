"""Outbound calls: voxflow's dialer placing SIP calls into a SIPp UAS, next to SIPp calling it.

One run, everything on 127.0.0.1, every load bounded in count and time:

1. reference: a SIPp UAC calls the SIPp UAS (``scenarios/uac_short.xml`` into
   ``scenarios/uas_echo.xml``: short calls, ``-buff_size 4194304`` on both sides) in fixed-rate
   steps (``-r`` with an ``-m`` bound), up to the first step with a failed call or below 95 % of
   the asked rate; the highest clean step is the reference calls/s.
2. voxflow's own Dialer in this process, built as ``telephony/runtime.py`` builds it (UserAgent
   + MediaClock + Dialer + CallRecords over a scratch SQLite file, the dialer's default 0.2 s
   poll), with a trunk pointing at the same UAS (answers at once, echoes RTP). Calls are queued
   in the store with due times spaced at the offered rate; the dialer claims and places them.
   a. concurrency (first, so that RSS per call is measured on a fresh heap): ramp to N calls
      (100, then 500) at 250/s, each with the keypress plan ``,,1,,2`` (keys 4 s and 8 s after
      the answer, while every call is up), RTP both ways, 4 s hold after the last key. Printed
      with all calls up: CPU (process CPU time / wall), RSS per call, RTP packet rates, the
      media clock's time per tick, event-loop timer lag, GC pauses, and the keypress timing
      error (first packet minus plan) as ``SipLeg.send_keypress`` reports it and as dumpcap
      sees it on the wire.
   b. calls/s: short calls (hold 0 s, like the reference) in 4 s fixed-rate steps until one
      does not keep up (answer rate, 1st to 99th percentile answer, < 95 % of offered, or calls
      unfinished 6 s after the last was due).
   c. sustained: 60 s at each of ``--sustain-rates`` (300 and 350/s), ascending, until one
      loses a call. As in production, the calls are due evenly spaced at the rate and the
      dialer claims the due ones at each poll (0.2 s): a claim is about 60-70 calls, placed at
      once. 60 s is longer than RFC 6026's Timer M (32 s), so the finished transactions the
      user agent remembers reach their steady state (the 10 s slices show it). The calls/s
      figure is the highest sustained rate with zero failed (lost, unfinished) calls.

voxflow runs on uvloop, as under ``voxflow serve`` (uvicorn picks it when installed, and
``uvicorn[standard]`` installs it), with the whole process pinned to core 0; the SIPp UAS,
dumpcap and py-spy run on core 1. As root the bench and its peers run at nice -10, and so
does their autogroup (``--nice``), so that other jobs on a shared machine take less of the
cores from them; the time the event loop still waited for core 0 is printed with each
phase. Targets: >= 300 calls/s and >= 500 concurrent calls on one core with zero failed
calls; keypress p99 <= 5 ms at 500 concurrent calls.

    python bench/dialer.py                  # the default run, about 5 minutes
    python bench/dialer.py --quick          # about 1 minute: small steps, 50 and 100 calls
    python bench/dialer.py --concurrency 100,500,1000 --cps-rates 100,200,300,400
    python bench/dialer.py --loop asyncio   # the stock event loop instead of uvloop
    python bench/dialer.py --profile DIR    # py-spy --gil every voxflow phase into DIR
    other flags: --ref-rates, --ref-seconds, --cps-seconds, --sustain-seconds,
    --sustain-rates, --nice, --ramp-cps,
    --plan, --hold, --poll-s, --no-wire (no dumpcap), --no-pin, --log-level ERROR (tracebacks
    of failed calls)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import itertools
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import start_udp_listener, stop_process, udp_port_free
from voxflow import ids
from voxflow.clock import SystemClock
from voxflow.domain.calls import FINAL, CallStatus
from voxflow.domain.dialstring import parse_dial_string
from voxflow.media.clock import ClockStats, MediaClock
from voxflow.media.dtmf import KEYS as DTMF
from voxflow.scheduling.dialer import Dialer, DialerSettings, LegPlan
from voxflow.services.accounts import create_account
from voxflow.services.call_records import CallRecords, DueCall
from voxflow.sip.useragent import UserAgent
from voxflow.store import tables as t
from voxflow.store.db import Database
from voxflow.telephony.interpreter import tune_after_start
from voxflow.telephony.leg import DialResult, KeypressSent
from voxflow.telephony.sip_leg import SipLeg
from voxflow.trunks import Trunk

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
TARGET_CPS = 300
TARGET_CONCURRENT = 500
TARGET_KEY_P99_MS = 5.0
SUSTAIN = 0.95  # a step passes at >= 95 % of the offered rate
BUFF = "4194304"  # SIPp socket buffers, both sides
LEAD_S = 0.5  # the first call of a phase is due this long after it is queued
SAMPLE_S = 0.2
LAG_PROBE_S = 0.007  # not a divisor of the 20 ms tick, so it lands all over the tick
RTP_PPS = 50  # one 20 ms frame per tick
VOX_CORE, PEER_CORE = 0, 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
NUMBER = "1000"
BIND_ERROR = "could not bind to local_addr"  # how uvloop words EADDRINUSE (errno None)


# ---------------------------------------------------------------- small helpers


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def dist_ms(values_s: Sequence[float]) -> str:
    ms = [v * 1000 for v in values_s]
    if not ms:
        return "n/a (no values)"
    return (
        f"p50 {pct(ms, 50):7.2f}  p99 {pct(ms, 99):7.2f}  max {max(ms):7.2f} ms"
        f"  (min {min(ms):.2f}, n={len(ms)})"
    )


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_wait_s() -> float:
    """Seconds this process's main thread (the event loop) has waited, runnable, for a CPU
    (/proc/self/schedstat): core 0 busy with voxflow's own store threads or other processes."""
    return int(Path("/proc/self/schedstat").read_text().split()[1]) / 1e9


def rss_mb(pid: int | None = None) -> float:
    statm = Path(f"/proc/{pid or 'self'}/statm").read_text().split()
    return int(statm[1]) * PAGE / 2**20


def udp_counters() -> dict[str, int]:
    """System-wide UDP counters (/proc/net/snmp); this run is the only loopback traffic."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    head, values = next(pair for pair in itertools.pairwise(lines) if pair[0][0] == "Udp:")
    return dict(zip(head[1:], map(int, values[1:]), strict=True))


def socket_drops(ports: dict[str, int]) -> dict[str, int]:
    """Datagrams dropped by each named UDP socket on 127.0.0.1 (/proc/net/udp ``drops``)."""
    by_port: dict[int, int] = {}
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        cols = line.split()
        host, _, port = cols[1].partition(":")
        if host == "0100007F":
            by_port[int(port, 16)] = by_port.get(int(port, 16), 0) + int(cols[-1])
    return {name: by_port.get(port, 0) for name, port in ports.items()}


def free_port(pair: bool = False) -> int:
    """A free UDP port outside voxflow's RTP range (20000-30000); with ``pair`` also port + 2."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not pair or (port + 2 < 65536 and udp_port_free(port + 2)):
            return port


def pinned(core: int | None) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None else []


# ---------------------------------------------------------------- SIPp


@dataclass(frozen=True)
class SippStats:
    """Cumulative counters from the last line of a SIPp -trace_stat file."""

    lines: int = 0
    calls: int = 0  # incoming (UAS) or outgoing (UAC) calls
    ok: int = 0
    failed: int = 0
    retrans: int = 0
    rate: float = 0.0

    @classmethod
    def read(cls, path: Path) -> SippStats:
        try:
            rows = [r.split(";") for r in path.read_text().splitlines() if r.strip()]
        except FileNotFoundError:
            return cls()
        if len(rows) < 2:
            return cls()
        row = dict(zip(rows[0], rows[-1], strict=False))
        calls = int(row["IncomingCall(C)"]) + int(row["OutgoingCall(C)"])
        return cls(
            len(rows) - 1,
            calls,
            int(row["SuccessfulCall(C)"]),
            int(row["FailedCall(C)"]),
            int(row["Retransmissions(C)"]),
            float(row["CallRate(C)"]),
        )

    def __sub__(self, other: SippStats) -> SippStats:
        return SippStats(
            self.lines,
            self.calls - other.calls,
            self.ok - other.ok,
            self.failed - other.failed,
            self.retrans - other.retrans,
        )


def sipp_command(
    core: int | None, scenario: str, port: int, media_port: int, stat_file: Path
) -> list[str]:
    """SIPp on loopback with 4 MiB socket buffers and a stat line every second."""
    options = f"-i 127.0.0.1 -p {port} -mi 127.0.0.1 -mp {media_port} -buff_size {BUFF}"
    options += f" -nostdin -trace_stat -fd 1 -stf {stat_file}"
    return [*pinned(core), "sipp", "-sf", str(SCENARIOS / scenario), *options.split()]


class Uas:
    """The SIPp UAS both callers ring: answers at once, holds until BYE, echoes RTP."""

    def __init__(self, workdir: Path, core: int | None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.media_port = free_port(pair=True)
        self.stat_file = workdir / "uas_stat.csv"
        args = sipp_command(core, "uas_echo.xml", self.port, self.media_port, self.stat_file)
        args += ["-rtp_echo", "-trace_err", "-error_file", str(workdir / "uas_errors.log")]
        self.error_file = workdir / "uas_errors.log"
        self._errors_seen = 0
        self.process = start_udp_listener(args, workdir, self.port)

    def cpu_s(self) -> float:
        return proc_cpu_s(self.process.pid)

    def stats(self) -> SippStats:
        return SippStats.read(self.stat_file)

    def fresh_stats(self, timeout_s: float = 3.0) -> SippStats:
        """The counters as of now: waits for the next line of the stat file (one per second)."""
        before = self.stats().lines
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.stats()
            if now.lines > before:
                return now
        return self.stats()

    def new_errors(self) -> Counter[str]:
        """SIPp's error log since the last call, by kind (call ids and times taken out)."""
        text = self.error_file.read_text(errors="replace") if self.error_file.exists() else ""
        fresh, self._errors_seen = text[self._errors_seen :], len(text)
        kinds: Counter[str] = Counter()
        for entry in re.split(r"\d{4}-\d\d-\d\d\t[\d:.]+\t[\d.]+: ", fresh)[1:]:
            line = entry.strip().splitlines()[0] if entry.strip() else ""
            kinds[re.sub(r"'[^']*'|\d+", "N", line)[:100]] += 1
        return kinds

    def stop(self) -> None:
        # SIPp waits for its calls on SIGTERM; calls a cut-off step left behind never end.
        stop_process(self.process, grace_s=1.0)


@dataclass(frozen=True)
class RefStep:
    rate: int
    calls: int
    ok: int
    failed: int
    retrans: int
    achieved: float
    wall_s: float
    uac_cpu: float  # fraction of a core
    uas_cpu: float
    finished: bool

    @property
    def passed(self) -> bool:
        return (
            self.finished
            and self.failed == 0
            and self.ok == self.calls
            and self.achieved >= SUSTAIN * self.rate
        )


def run_uac(uas: Uas, rate: int, seconds: float, workdir: Path, core: int | None) -> RefStep:
    calls = max(1, round(rate * seconds))
    stat = workdir / f"uac_{rate}.csv"
    args = sipp_command(core, "uac_short.xml", free_port(), free_port(pair=True), stat)
    args += ["-s", NUMBER, "-r", str(rate), "-m", str(calls), f"127.0.0.1:{uas.port}"]
    uas_cpu0, started = uas.cpu_s(), time.monotonic()
    process = subprocess.Popen(
        args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    finished = True
    uac_cpu = 0.0
    try:
        # Bounded: a failing step (retransmissions running to timer B) is cut off.
        while process.poll() is None:
            uac_cpu = proc_cpu_s(process.pid)
            if time.monotonic() - started > seconds + 6:
                finished = False
                break
            time.sleep(0.05)
    finally:
        stop_process(process)
    wall = time.monotonic() - started
    uas_cpu = uas.cpu_s() - uas_cpu0
    s = SippStats.read(stat)
    failed = s.failed if finished else max(s.failed, calls - s.ok)
    return RefStep(
        rate,
        calls,
        s.ok,
        failed,
        s.retrans,
        s.rate,
        wall,
        uac_cpu / wall,
        uas_cpu / wall,
        finished and process.returncode == 0,
    )


def reference(args: argparse.Namespace, uas: Uas, workdir: Path) -> list[RefStep]:
    steps: list[RefStep] = []
    for rate in args.ref_rates:
        step = run_uac(uas, rate, args.ref_seconds, workdir, VOX_CORE if args.pin else None)
        steps.append(step)
        print(
            f"  SIPp UAC -r {rate:<6} -m {step.calls:<6} ok {step.ok:<6} failed {step.failed:<5}"
            f" retrans {step.retrans:<6} achieved {step.achieved:8.1f}/s"
            f"  UAC cpu {step.uac_cpu:4.2f} UAS cpu {step.uas_cpu:4.2f}"
            f"  {'pass' if step.passed else 'FAIL'}",
            flush=True,
        )
        if not step.passed:
            break
    return steps


# ---------------------------------------------------------------- wire capture


class Wire:
    """dumpcap on lo, keeping only the first packet of each keypress voxflow sends to the UAS:
    RFC 4733 PT 101 with the marker bit (RTP byte 1 == 0xe5)."""

    def __init__(self, media_port: int, path: Path, core: int | None) -> None:
        self.path = path
        bpf = f"udp dst port {media_port} and udp[9] = 0xe5"
        cmd = [*pinned(core), "dumpcap", "-q", "-i", "lo", "-P", "-w", str(path), "-f", bpf]
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        assert self.process.stderr is not None
        os.set_blocking(self.process.stderr.fileno(), False)
        deadline, seen = time.monotonic() + 10, b""
        while b"Capturing on" not in seen:
            seen += self.process.stderr.read() or b""
            if self.process.poll() is not None or time.monotonic() > deadline:
                stop_process(self.process)
                raise RuntimeError(f"dumpcap did not start: {seen.decode(errors='replace')}")
            time.sleep(0.05)

    def stop(self) -> list[tuple[float, int, str]]:
        """Stop the capture; (epoch time, source port, key) of each captured keypress start."""
        stop_process(self.process, signal.SIGINT)
        return read_pcap(self.path)


def read_pcap(path: Path) -> list[tuple[float, int, str]]:
    data = path.read_bytes() if path.exists() else b""
    if len(data) < 24:
        return []
    magic, linktype = struct.unpack_from("<I", data)[0], struct.unpack_from("<I", data, 20)[0]
    if magic != 0xA1B2C3D4:
        raise RuntimeError(f"unexpected pcap magic {magic:#x}")
    link = {1: 14, 113: 16, 0: 4}[linktype]  # Ethernet (lo), Linux cooked, BSD loopback
    out: list[tuple[float, int, str]] = []
    pos = 24
    while pos + 16 <= len(data):
        sec, usec, caplen, _ = struct.unpack_from("<IIII", data, pos)
        frame = data[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
        ip = frame[link:]
        udp = ip[(ip[0] & 0x0F) * 4 :]
        rtp = udp[8:]
        if len(rtp) >= 16 and rtp[12] < len(DTMF):
            out.append((sec + usec / 1e6, struct.unpack_from("!H", udp)[0], DTMF[rtp[12]]))
    return out


# ---------------------------------------------------------------- py-spy


class Profiler:
    """py-spy record (raw collapsed stacks) of this process during one phase."""

    def __init__(self, directory: Path | None, tag: str, core: int | None) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.path = directory / f"{tag}.txt" if directory else None
        spy = Path(sys.executable).parent / "py-spy"
        if self.path is None or not spy.exists():
            return
        cmd = [*pinned(core), str(spy), "record", "--pid", str(os.getpid()), "--rate", "250"]
        cmd += ["--gil", "--nonblocking", "--nolineno", "--format", "raw", "-o", str(self.path)]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> str:
        if self.process is None or self.path is None:
            return ""
        stop_process(self.process, signal.SIGINT)
        return summarise_profile(self.path)


def summarise_profile(path: Path, top: int = 10) -> str:
    """Where the GIL-holding thread was: functions by self and by inclusive samples, and the
    innermost voxflow file of each sample."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    files: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines() if path.exists() else []:
        stack, _, count = line.rpartition(" ")
        frames = [f for f in stack.split(";") if f]
        if not count.isdigit() or not frames:
            continue
        n = int(count)
        total += n
        own[_short(frames[-1])] += n
        for name in {_short(f) for f in frames if "voxflow/" in f}:
            inclusive[name] += n
        inner = next((f for f in reversed(frames) if "voxflow/" in f), None)
        files[_where(inner).split("voxflow/", 1)[1] if inner else "(not in voxflow)"] += n
    if not total:
        return f"    no samples in {path}"
    rows = [f"    py-spy --gil {path}: {total} samples; self:"]
    rows += [f"      {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    rows.append("    inclusive (voxflow functions):")
    rows += [f"      {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    rows.append("    by innermost voxflow file:")
    rows += [f"      {n / total:6.1%}  {name}" for name, n in files.most_common(top)]
    return "\n".join(rows)


def _where(frame: str) -> str:
    return frame.rpartition("(")[2].rstrip(")")


def _short(frame: str) -> str:
    """``Class.method (voxflow/x.py)`` -> ``Class.method (x.py)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rstrip(')').rsplit('/', 1)[-1]})"


# ---------------------------------------------------------------- the store


class Store:
    """A scratch SQLite database (migrated as ``voxflow db upgrade`` does) with one account;
    each phase's calls are tagged by ``link_id``."""

    def __init__(self, workdir: Path) -> None:
        self.db = Database(f"sqlite:///{workdir / 'voxflow.db'}")
        self.db.upgrade()
        self.clock = SystemClock()
        create_account(self.db, self.clock, "bench", [], False)
        with self.db.read() as conn:
            query = select(t.accounts.c.id).where(t.accounts.c.username == "bench")
            self.account_id = int(conn.execute(query).scalar_one())
        self.records = CallRecords(self.db, self.clock)

    def queue(
        self, tag: str, dial_strings: Sequence[str], first_due: datetime, rate: float
    ) -> None:
        """Insert the calls and their first events as ``services.calls.store_call`` does, in one
        transaction (executemany, so that queueing stays off the measured path)."""
        now = self.clock.now()
        rows = []
        for i, dial in enumerate(dial_strings):
            parsed = parse_dial_string(dial)
            rows.append(
                {
                    "call_id": ids.uuid7(),  # as initiateCall makes them
                    "account_id": self.account_id,
                    "link_pk": None,
                    "link_id": tag,
                    "node_id": "bench",
                    "call_flow_name": "Bench",
                    "flow_xml": '<callFlow name="Bench"/>',
                    "rule_values": "{}",
                    "variables": json.dumps({"call_destination": dial}),
                    "destination": parsed.number,
                    "dial_string": dial,
                    "keypresses": json.dumps([k.to_json() for k in parsed.keypresses]),
                    "trunk": None,
                    "status": CallStatus.QUEUED.value,
                    "created_at": now,
                    "due_at": first_due + timedelta(seconds=i / rate),
                    "updated_at": now,
                }
            )
        with self.db.write() as conn:
            conn.execute(t.calls.insert(), rows)
            pks = conn.execute(select(t.calls.c.id).where(t.calls.c.link_id == tag)).scalars()
            detail = json.dumps({"delay_minutes": 0})
            events = [{"call_pk": pk, "at": now, "kind": "queued", "detail": detail} for pk in pks]
            conn.execute(t.call_events.insert(), events)

    def outcome(self, tag: str) -> tuple[Counter[str], int, Counter[str]]:
        """The phase's final statuses, the keypress events the dialer recorded, and why calls
        failed (the ``failed`` events' error or SIP code)."""
        calls, events = t.calls, t.call_events
        joined = events.join(calls, calls.c.id == events.c.call_pk)
        with self.db.read() as conn:
            statuses = conn.execute(
                select(calls.c.status, func.count())
                .where(calls.c.link_id == tag)
                .group_by(calls.c.status)
            ).all()
            keys = conn.execute(
                select(func.count())
                .select_from(joined)
                .where(calls.c.link_id == tag, events.c.kind == "keypress")
            ).scalar_one()
            failed = conn.execute(
                select(events.c.detail)
                .select_from(joined)
                .where(calls.c.link_id == tag, events.c.kind == CallStatus.FAILED.value)
            ).scalars()
            reasons = Counter(_reason(json.loads(d)) for d in failed)
        return Counter({str(s): int(n) for s, n in statuses}), int(keys), reasons


def _reason(detail: dict[str, object]) -> str:
    error = detail.get("error") or f"SIP {detail.get('sip_code')} {detail.get('sip_reason', '')}"
    return str(error)[:90]


# ---------------------------------------------------------------- voxflow side


@dataclass
class KeyTrace:
    key: str
    planned: float  # loop time
    actual: float  # loop time of the first packet, as SipLeg.send_keypress reports it
    live: int  # answered calls up when it was sent


@dataclass(eq=False)
class Trace:
    """One call as the bench saw it through its leg (loop times)."""

    due: float
    leg: SipLeg | None  # None once the call is over, in calls/s phases (see Rig.keep_legs)
    answered_at: float | None = None
    hangup_at: float | None = None
    keys: list[KeyTrace] = field(default_factory=list)


class BenchLeg:
    """A SipLeg seen through a window: every call goes straight to it; times are noted."""

    def __init__(self, leg: SipLeg, trace: Trace, rig: Rig) -> None:
        self.leg, self.trace, self.rig = leg, trace, rig

    async def dial(self, on_ringing: Callable[[int, str], None]) -> DialResult:
        result = await self.leg.dial(on_ringing)
        self.trace.answered_at = result.answered_at
        if result.status is CallStatus.ANSWERED:
            self.rig.answered(self.trace)
        elif not self.rig.keep_legs:
            self.trace.leg = None
        return result

    async def send_keypress(self, key: str, at: float, tone_ms: int) -> KeypressSent:
        sent = await self.leg.send_keypress(key, at, tone_ms)
        self.trace.keys.append(KeyTrace(key, sent.planned_at, sent.actual_at, self.rig.live))
        return sent

    async def wait_remote_hangup(self) -> None:
        await self.leg.wait_remote_hangup()

    async def hangup(self) -> None:
        self.rig.hung_up(self.trace)
        await self.leg.hangup()
        if not self.rig.keep_legs:
            self.trace.leg = None


@dataclass
class Sample:
    at: float  # loop time
    cpu: float  # process CPU seconds (every thread)
    loop_cpu: float  # CPU seconds of the event-loop thread
    rss: float  # MiB
    live: int
    sent: int  # RTP packets sent / received by this phase's sessions so far
    received: int
    transactions: int  # SIP transactions the user agent keeps
    sip_drops: int  # datagrams dropped by voxflow's SIP socket (calls/s phases only)
    cpu_wait: float  # seconds the event-loop thread waited for the CPU so far (cpu_wait_s)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():  # cancelled in the iteration the timer fired
        future.set_result(None)


class TickProbe:
    """Times each media-clock tick: ``self`` is subscribed first and ``self.end`` is moved
    behind each newly answered call's session, so end - start is the time that every session's
    on_tick took (exact once all calls of a phase are up; that is the only window used)."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.ticks: list[tuple[float, float]] = []
        self.end = _TickEnd(self)

    def on_tick(self, tick_index: int, now: float) -> None:
        self.t0 = time.perf_counter()


class _TickEnd:
    def __init__(self, probe: TickProbe) -> None:
        self.probe = probe

    def on_tick(self, tick_index: int, now: float) -> None:
        self.probe.ticks.append((now, time.perf_counter() - self.probe.t0))


@dataclass
class Phase:
    tag: str
    calls: int
    rate: float
    first_due: float  # loop time
    traces: list[Trace]
    samples: list[Sample]
    ticks: list[tuple[float, float]]
    lags: list[tuple[float, float]]
    gc_pauses: list[tuple[float, int, float]]
    statuses: Counter[str]
    key_events: int
    failures: Counter[str]
    uas_errors: Counter[str]
    counters: Counters
    clock: ClockStats
    wall_s: float
    timed_out: bool
    profile: str = ""

    def causes(self) -> Counter[str]:
        """Calls that did not complete, by cause."""
        out: Counter[str] = Counter()
        for reason, n in self.failures.items():
            out["RTP port bind error" if reason.startswith(BIND_ERROR) else reason] += n
        for status, n in self.statuses.items():
            if status in (CallStatus.COMPLETED.value, CallStatus.FAILED.value):
                continue
            final = CallStatus(status) in FINAL
            out[status if final else f"still {status} at the deadline"] += n
        return out

    def causes_text(self) -> str:
        return ", ".join(f"{n} {cause}" for cause, n in self.causes().most_common())

    def problems(self) -> str:
        """Lines on the calls that did not complete, or ""."""
        if not self.causes():
            return ""
        text = f"    not completed: {self.causes_text()}"
        examples = [r for r in self.failures if not r.startswith(BIND_ERROR)][:2]
        examples += [r for r in self.failures if r.startswith(BIND_ERROR)][:1]
        text += "".join(f"\n      e.g. {r}" for r in examples)
        for kind, n in self.uas_errors.most_common(3):
            text += f"\n    UAS error log: {n} x {kind}"
        return text

    @property
    def completed(self) -> int:
        return self.statuses.get(CallStatus.COMPLETED.value, 0)

    @property
    def failed(self) -> int:
        return self.calls - self.completed

    def gc_text(self) -> str:
        pauses = [d for _, _, d in self.gc_pauses]
        full = [d for _, g, d in self.gc_pauses if g == 2]
        return (
            f"GC {len(pauses)} collections ({len(full)} full), {sum(pauses) * 1000:.0f} ms in all,"
            f" longest {max(pauses, default=0) * 1000:.1f} ms"
        )

    def wait_text(self) -> str:
        """How much of the phase the event loop was runnable while core 0 ran another thread."""
        first, last = self.samples[0], self.samples[-1]
        waited = last.cpu_wait - first.cpu_wait
        return (
            f"event loop waited for the core {waited:.2f} s of {last.at - first.at:.1f} s"
            " (store threads, other processes)"
        )

    def setup_text(self) -> str:
        answers = [t.answered_at for t in self.traces if t.answered_at is not None]
        setup = [t.answered_at - t.due for t in self.traces if t.answered_at is not None]
        lags = [d for _, d in self.lags]
        ramp = max(answers) - min(answers) if answers else math.nan
        return (
            f"first to last answer {ramp:.2f} s, setup (answer - due) p50"
            f" {pct(setup, 50) * 1000:.0f} p99 {pct(setup, 99) * 1000:.0f} ms; event-loop timer"
            f" lag over the phase p99 {pct(lags, 99) * 1000:.1f}"
            f" max {max(lags, default=0) * 1000:.1f} ms; {self.gc_text()}"
        )

    def window(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.at <= end]


class Rig:
    """voxflow's calling side as ``voxflow serve`` wires it (telephony/runtime.py), with the
    bench's trunk pointing at the SIPp UAS and a window on each leg."""

    def __init__(self, store: Store, uas: Uas, args: argparse.Namespace) -> None:
        self.store, self.uas, self.args = store, uas, args
        self.trunk = Trunk(
            name="sipp",
            host="127.0.0.1",
            port=uas.port,
            caller_id="441234567890",
            hold_s=0,
            ring_timeout_s=10,
            max_calls=max([500, *args.concurrency]),
        )
        self.media = MediaClock()
        self.ua = UserAgent()
        self.probe = TickProbe()
        self.traces: list[Trace] = []
        self.up: set[Trace] = set()  # answered, not hung up
        self.live = 0
        self.hold_s = 0.0
        self.idle = 0.0
        self.rss_start = 0.0
        self.watch_sip = False  # read /proc/net/udp at each sample (not while timing keys)
        # Hold phases read each leg's RTP counters at the end; calls/s phases drop a leg when
        # its call is over, as the product does (only the trace's times stay).
        self.keep_legs = True
        self.lags: list[tuple[float, float]] = []
        self._anchor = (datetime.min, 0.0)
        self._tasks: list[asyncio.Task[None]] = []
        self.gc_pauses: list[tuple[float, int, float]] = []  # (loop time, generation, seconds)
        self._gc_started = 0.0

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            took = time.perf_counter() - self._gc_started
            self.gc_pauses.append((time.monotonic(), info["generation"], took))

    async def start(self) -> None:
        gc.callbacks.append(self._gc)
        self.media.start()
        await self.ua.start("127.0.0.1", 0)
        self.media.subscribe(self.probe)
        self.media.subscribe(self.probe.end)
        self._tasks.append(asyncio.get_running_loop().create_task(self._lag_probe()))
        tune_after_start()  # as Telephony.start does

    async def close(self) -> None:
        gc.callbacks.remove(self._gc)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ua.close()
        await self.media.stop()

    # ---------------------------------------------------------- legs

    def legs(self, call: DueCall) -> LegPlan:
        """The dialer's leg factory: runtime.leg_for's SipLeg, through the bench's window."""
        leg = SipLeg(self.ua, self.media, self.trunk, call.destination)
        anchor_dt, anchor_loop = self._anchor
        trace = Trace(anchor_loop + (call.due_at - anchor_dt).total_seconds(), leg)
        self.traces.append(trace)
        plan = BenchLeg(leg, trace, self)
        return LegPlan(plan, self.trunk.tone_ms, self.trunk.gap_ms, self.hold_s)

    def answered(self, trace: Trace) -> None:
        self.live += 1
        self.up.add(trace)
        # Its session subscribed to the clock just now: keep the tick probe's end after it.
        self.media.unsubscribe(self.probe.end)
        self.media.subscribe(self.probe.end)

    def hung_up(self, trace: Trace) -> None:
        if trace.hangup_at is None and trace.answered_at is not None:
            self.live -= 1
            self.up.discard(trace)
        trace.hangup_at = asyncio.get_running_loop().time()

    # ---------------------------------------------------------- probes

    async def idle_cpu(self, seconds: float) -> float:
        """CPU of this process with no calls: the media clock ticking, the probes, the loop."""
        start, cpu = time.monotonic(), time.process_time()
        await asyncio.sleep(seconds)
        return (time.process_time() - cpu) / (time.monotonic() - start)

    async def _lag_probe(self) -> None:
        """How late a timer fires (the way SipLeg waits for a keypress: loop.call_at)."""
        loop = asyncio.get_running_loop()
        while True:
            wanted = time.perf_counter() + LAG_PROBE_S
            due = loop.create_future()
            handle = loop.call_at(loop.time() + LAG_PROBE_S, _wake, due)
            try:
                await due
            finally:
                handle.cancel()
            self.lags.append((loop.time(), time.perf_counter() - wanted))

    def _sample(self) -> Sample:
        sent = received = 0
        for trace in self.up:
            session = trace.leg.session if trace.leg is not None else None
            if session is not None:
                sent += session.stats.packets_sent
                received += session.stats.packets_received
        return Sample(
            asyncio.get_running_loop().time(),
            time.process_time(),
            time.thread_time(),
            rss_mb(),
            self.live,
            sent,
            received,
            len(self.ua.layer.clients) + len(self.ua.layer.servers),
            socket_drops({"sip": self.ua.port})["sip"] if self.watch_sip else 0,
            cpu_wait_s(),
        )

    def _counters(self) -> Counters:
        ports = {"voxflow SIP": self.ua.port, "UAS SIP": self.uas.port}
        ports["UAS RTP echo"] = self.uas.media_port
        return Counters(udp_counters(), socket_drops(ports), self.uas.stats(), self.uas.cpu_s())

    # ---------------------------------------------------------- one phase

    async def run(
        self,
        tag: str,
        dials: Sequence[str],
        rate: float,
        hold_s: float,
        timeout_s: float,
        *,
        watch_sip: bool = False,
    ) -> Phase:
        """Queue ``dials`` due at ``rate`` per second, let a Dialer place them all, and watch."""
        loop = asyncio.get_running_loop()
        self.watch_sip = watch_sip
        self.keep_legs = not watch_sip
        gc.collect()
        self.traces, self.up, self.live, self.hold_s = [], set(), 0, hold_s
        now_dt, now_loop = self.store.clock.now(), loop.time()
        self._anchor = (now_dt, now_loop)
        first_due = now_dt + timedelta(seconds=LEAD_S)
        await asyncio.to_thread(self.store.queue, tag, dials, first_due, rate)
        # Measure from here: what came before is the bench's own set-up.
        self.probe.ticks, self.lags, self.gc_pauses = [], [], []
        skipped = self.media.stats.skipped  # the clock keeps this one cumulative
        self.media.stats = ClockStats()
        before = self._counters()
        profiler = Profiler(self.args.profile, tag, PEER_CORE if self.args.pin else None)
        dialer = Dialer(
            self.store.records,
            self.legs,
            settings=DialerSettings(max_calls=max(500, len(dials)), poll_s=self.args.poll_s),
            name=f"bench-{tag}",
        )
        started = loop.time()
        runner = loop.create_task(dialer.run())
        samples = [self._sample()]
        timed_out = False
        try:
            while len(self.traces) < len(dials) or dialer.active:
                await asyncio.sleep(SAMPLE_S)
                samples.append(self._sample())
                if loop.time() > started + timeout_s:
                    timed_out = True
                    break
            await self._stop(dialer, runner)
        finally:
            profile = profiler.stop()
        samples.append(self._sample())
        wall = loop.time() - started
        statuses, key_events, failures = await asyncio.to_thread(self.store.outcome, tag)
        after = await asyncio.to_thread(self._counters_fresh)
        clock = dataclasses.replace(self.media.stats, skipped=self.media.stats.skipped - skipped)
        uas_errors = self.uas.new_errors()
        return Phase(
            tag=tag,
            calls=len(dials),
            rate=rate,
            first_due=now_loop + LEAD_S,
            traces=self.traces,
            samples=samples,
            ticks=self.probe.ticks,
            lags=self.lags,
            gc_pauses=self.gc_pauses,
            statuses=statuses,
            key_events=key_events,
            failures=failures,
            uas_errors=uas_errors,
            counters=after - before,
            clock=clock,
            wall_s=wall,
            timed_out=timed_out,
            profile=profile,
        )

    def _counters_fresh(self) -> Counters:
        self.uas.fresh_stats()  # wait for the UAS's next stat line
        return self._counters()

    async def _stop(self, dialer: Dialer, runner: asyncio.Task[None]) -> None:
        for task in list(dialer.active):  # calls still going at the phase deadline
            task.cancel()  # the dialer then hangs up: CANCEL or BYE, which may go unanswered
        try:
            await asyncio.wait_for(dialer.stop(), 5)
        except TimeoutError:  # the gather was cancelled, and its tasks with it
            await asyncio.gather(*list(dialer.active), return_exceptions=True)
        await runner
        for trace in self.traces:  # a cancelled call may leave its dialog and RTP socket open
            if trace.leg is not None and trace.leg.dialog is not None:
                self.ua.remove_dialog(trace.leg.dialog)
            if trace.leg is not None and trace.leg.session is not None:
                trace.leg.session.close()


@dataclass(frozen=True)
class Counters:
    udp: dict[str, int]  # system-wide UDP counters
    drops: dict[str, int]  # per named socket
    uas: SippStats
    uas_cpu: float

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            {k: v - other.udp.get(k, 0) for k, v in self.udp.items()},
            {k: v - other.drops.get(k, 0) for k, v in self.drops.items()},
            self.uas - other.uas,
            self.uas_cpu - other.uas_cpu,
        )

    def drop_text(self) -> str:
        named = ", ".join(f"{k} {v}" for k, v in self.drops.items())
        return f"udp receive-buffer drops {self.udp.get('RcvbufErrors', 0)} ({named})"


# ---------------------------------------------------------------- calls/s phase


@dataclass(frozen=True)
class CpsStep:
    rate: float
    phase: Phase
    achieved: float  # answers per second, 1st to 99th percentile answer
    setup: list[float]  # answer - due, seconds
    cpu: float  # process CPU / wall from the first due time to the last answer
    cpu_ms_per_call: float  # the phase's CPU above the idle baseline, per call

    @property
    def kept_up(self) -> bool:
        return not self.phase.timed_out and self.achieved >= SUSTAIN * self.rate

    @property
    def passed(self) -> bool:
        return self.kept_up and self.phase.failed == 0

    @property
    def verdict(self) -> str:
        if self.passed:
            return "pass"
        if self.phase.timed_out:
            return "FAIL (calls still unfinished at the deadline)"
        return "FAIL" if self.kept_up else "FAIL (fell behind)"


def cps_step(phase: Phase, idle_cpu: float) -> CpsStep:
    answers = sorted(t.answered_at for t in phase.traces if t.answered_at is not None)
    # Between the 1st and the 99th percentile answer: a straggler (an INVITE answered after a
    # retransmission) shows in setup p99 and in the failures, not as a lower rate.
    lo, hi = len(answers) // 100, len(answers) - 1 - len(answers) // 100
    span = answers[hi] - answers[lo] if hi > lo else 0.0
    achieved = (hi - lo) / span if span > 0 else 0.0
    setup = [t.answered_at - t.due for t in phase.traces if t.answered_at is not None]
    busy = phase.window(phase.first_due, answers[-1] if answers else math.inf)
    if len(busy) < 2:
        busy = phase.samples
    cpu = (busy[-1].cpu - busy[0].cpu) / (busy[-1].at - busy[0].at)
    first, last = phase.samples[0], phase.samples[-1]
    net = last.cpu - first.cpu - idle_cpu * (last.at - first.at)
    return CpsStep(phase.rate, phase, achieved, setup, cpu, net / phase.calls * 1000)


def print_cps(step: CpsStep) -> None:
    p, c = step.phase, step.phase.counters
    print(
        f"  {step.rate:>5g}/s x{p.calls:<5} completed {p.completed:<5} failed {p.failed:<4}"
        f" answered at {step.achieved:6.1f}/s  setup (answer - due) p50"
        f" {pct(step.setup, 50) * 1000:4.0f} p99 {pct(step.setup, 99) * 1000:5.0f} ms"
        f"  cpu {step.cpu:4.2f}, {step.cpu_ms_per_call:4.2f} ms/call  {step.verdict}"
    )
    print(
        f"        UAS: {c.uas.calls} calls, {c.uas.failed} failed, {c.uas.retrans} retransmissions;"
        f" {c.drop_text()}; {p.gc_text()}; {p.wait_text()}",
        flush=True,
    )
    if p.problems():
        print(p.problems())
    if p.profile:
        print(p.profile)


async def calls_per_second(rig: Rig, args: argparse.Namespace) -> list[CpsStep]:
    """Fixed-rate steps until the dialer falls behind (failures alone do not stop the ladder:
    a step can lose a call for a reason that has nothing to do with the rate)."""
    steps: list[CpsStep] = []
    for rate in args.cps_rates:
        n = max(2, round(rate * args.cps_seconds))
        dials = [NUMBER] * n
        phase = await rig.run(
            f"cps-{rate}", dials, rate, args.cps_hold, n / rate + 6, watch_sip=True
        )
        step = cps_step(phase, rig.idle)
        steps.append(step)
        print_cps(step)
        phase.traces.clear()  # finished legs are garbage in the product too
        if not step.kept_up:
            break
    return steps


async def sustained(rig: Rig, args: argparse.Namespace, rate: float) -> CpsStep:
    """One long run at ``rate``: longer than RFC 6026's Timer M (32 s), so that the heap of
    finished-but-remembered transactions reaches its steady state."""
    n = round(rate * args.sustain_seconds)
    print(f"  sustained: {rate:g}/s for {args.sustain_seconds:g} s")
    dials = [NUMBER] * n
    phase = await rig.run(
        f"sustain-{rate}", dials, rate, args.cps_hold, n / rate + 6, watch_sip=True
    )
    step = cps_step(phase, rig.idle)
    print_cps(step)
    print_buckets(phase)
    phase.traces.clear()
    return step


def print_buckets(phase: Phase, bucket_s: float = 10.0) -> None:
    """The sustained run in slices: does it hold as remembered transactions pile up?"""
    start = phase.first_due
    last = max((t.due for t in phase.traces), default=start)
    k = 0
    while start + k * bucket_s <= last:
        lo, hi = start + k * bucket_s, start + (k + 1) * bucket_s
        due = [t for t in phase.traces if lo <= t.due < hi]
        answered = sum(1 for t in phase.traces if t.answered_at and lo <= t.answered_at < hi)
        lost = sum(1 for t in due if t.answered_at is None)
        window = [x for x in phase.samples if lo <= x.at < hi]
        gcs = [d for at, _, d in phase.gc_pauses if lo <= at < hi]
        drops = window[-1].sip_drops - window[0].sip_drops if len(window) > 1 else 0
        cpu = wait = math.nan
        if len(window) > 1:
            span = window[-1].at - window[0].at
            cpu = (window[-1].cpu - window[0].cpu) / span
            wait = (window[-1].cpu_wait - window[0].cpu_wait) / span
        print(
            f"      {k * bucket_s:3.0f}-{(k + 1) * bucket_s:3.0f} s: answered"
            f" {answered / bucket_s:5.0f}/s, {lost:4} of {len(due):5} due not answered;"
            f" transactions kept up to {max((x.transactions for x in window), default=0):5};"
            f" GC {sum(gcs) * 1000:5.0f} ms, longest {max(gcs, default=0) * 1000:4.0f} ms;"
            f" SIP socket drops {drops}; cpu {cpu:4.2f}, waited for the core {wait:4.2f}"
        )
        k += 1


# ---------------------------------------------------------------- concurrency phase


@dataclass(frozen=True)
class HoldResult:
    phase: Phase
    answered: int
    up_at: float  # loop time the last call was answered
    down_at: float  # loop time of the first hang-up
    cpu: float  # process CPU / wall with all calls up
    loop_cpu: float
    rss_base: float
    rss_peak: float
    pps_out: float
    pps_in: float
    no_rtp_back: int  # calls that never received RTP
    min_echo: float  # lowest received/sent among calls
    key_errors: list[float]  # seconds
    key_min_live: int
    keys_expected: int
    ticks: list[float]
    lags: list[float]
    wire_errors: list[float] | None
    wire_vs_reported: list[float] | None
    gc_in_window: list[float]

    @property
    def window_s(self) -> float:
        return self.down_at - self.up_at

    @property
    def passed(self) -> bool:
        p = self.phase
        return (
            not p.timed_out
            and p.failed == 0
            and self.no_rtp_back == 0
            and self.window_s > 0
            and len(self.key_errors) == self.keys_expected
        )


def _rtp(phase: Phase, up: float, down: float) -> tuple[float, float, int, float]:
    window = phase.window(up, down)
    pps_out = pps_in = math.nan
    if len(window) >= 2:
        a, b = window[0], window[-1]
        pps_out = (b.sent - a.sent) / (b.at - a.at)
        pps_in = (b.received - a.received) / (b.at - a.at)
    no_back, min_echo = 0, 1.0
    for trace in phase.traces:
        if trace.answered_at is None:
            continue
        session = trace.leg.session if trace.leg is not None else None
        stats = session.stats if session is not None else None
        if stats is None or stats.packets_received == 0:
            no_back += 1
            continue
        min_echo = min(min_echo, stats.packets_received / max(1, stats.packets_sent))
    return pps_out, pps_in, no_back, min_echo


def _wire(
    phase: Phase, packets: list[tuple[float, int, str]], offset: float
) -> tuple[list[float], list[float]]:
    """Match captured keypress starts to calls by RTP source port and key."""
    planned: dict[tuple[int, str], KeyTrace] = {}
    for trace in phase.traces:
        if trace.leg is not None and trace.leg.session is not None:
            port = trace.leg.session.local_address[1]
            for sent in trace.keys:
                planned[(port, sent.key)] = sent
    errors, versus = [], []
    for at, port, key in packets:
        match = planned.get((port, key))
        if match is not None:
            errors.append(at - (match.planned + offset))
            versus.append(at - (match.actual + offset))
    return errors, versus


def hold_result(
    phase: Phase,
    rss_base: float,
    keys_per_call: int,
    packets: list[tuple[float, int, str]] | None,
    offset: float,
) -> HoldResult:
    """The figures of a hold phase; ``keys_per_call`` is the plan's keypress count."""
    answered = [t.answered_at for t in phase.traces if t.answered_at is not None]
    hangups = [t.hangup_at for t in phase.traces if t.hangup_at is not None]
    up = max(answered, default=math.inf)  # every call that was answered is up from here
    down = min(hangups, default=-math.inf)
    window = phase.window(up, down)
    cpu = loop_cpu = math.nan
    if len(window) >= 2:
        a, b = window[0], window[-1]
        cpu = (b.cpu - a.cpu) / (b.at - a.at)
        loop_cpu = (b.loop_cpu - a.loop_cpu) / (b.at - a.at)
    pps_out, pps_in, no_back, min_echo = _rtp(phase, up, down)
    keys = [k for tr in phase.traces for k in tr.keys]
    wire = _wire(phase, packets, offset) if packets is not None else None
    return HoldResult(
        phase=phase,
        answered=len(answered),
        up_at=up,
        down_at=down,
        cpu=cpu,
        loop_cpu=loop_cpu,
        rss_base=rss_base,
        rss_peak=max((s.rss for s in window), default=math.nan),
        pps_out=pps_out,
        pps_in=pps_in,
        no_rtp_back=no_back,
        min_echo=min_echo,
        key_errors=[k.actual - k.planned for k in keys],
        key_min_live=min((k.live for k in keys), default=0),
        keys_expected=keys_per_call * len(answered),
        ticks=[d for at, d in phase.ticks if up <= at <= down],
        lags=[d for at, d in phase.lags if up <= at <= down],
        wire_errors=wire[0] if wire else None,
        wire_vs_reported=wire[1] if wire else None,
        gc_in_window=[d for at, _, d in phase.gc_pauses if up <= at <= down],
    )


def print_hold(r: HoldResult, args: argparse.Namespace) -> None:
    p, n, c = r.phase, r.phase.calls, r.phase.counters
    print(
        f"  hold {n} calls (ramp {args.ramp_cps:g}/s, plan '{args.plan}', then {args.hold:g} s):"
        f" answered {r.answered}, completed {p.completed}, failed {p.failed};"
        f" all answered calls up together for {r.window_s:.1f} s"
        f"  {'pass' if r.passed else 'FAIL'}"
    )
    print(
        f"    all up: cpu {r.cpu:4.2f} of a core (event-loop thread {r.loop_cpu:4.2f}),"
        f" {r.cpu / r.answered * 100:.3f} % of a core per call; RSS {r.rss_base:.0f} MiB before"
        f" any call -> {r.rss_peak:.0f}"
        f" MiB, {(r.rss_peak - r.rss_base) * 1024 / r.answered:.0f} KiB per call"
    )
    print(
        f"    RTP: out {r.pps_out:7.0f} pkt/s (expected {r.answered * RTP_PPS}), echoed back in"
        f" {r.pps_in:7.0f} pkt/s; calls with no RTP back {r.no_rtp_back}, lowest in/out"
        f" {r.min_echo:.3f}"
    )
    k = p.clock
    print(
        f"    media clock: {k.late_ticks} ticks late by >= 20 ms, {k.skipped} skipped,"
        f" worst lateness {k.max_lateness_s * 1000:.1f} ms; time of one tick (all sessions):"
        f" {dist_ms(r.ticks)}"
    )
    print(f"    event-loop timer lag (call_at probe every 7 ms): {dist_ms(r.lags)}")
    print(f"    whole phase: {p.setup_text()}; {p.wait_text()}")
    print(
        f"    GC with all calls up: {len(r.gc_in_window)} collections, longest"
        f" {max(r.gc_in_window, default=0) * 1000:.1f} ms"
    )
    print(
        f"    keypress error, SipLeg.send_keypress: {dist_ms(r.key_errors)}; expected"
        f" {r.keys_expected}, dialer recorded {p.key_events}; fewest calls up at a keypress"
        f" {r.key_min_live}"
    )
    if r.wire_errors is not None and r.wire_vs_reported is not None:
        print(f"    keypress error, on the wire (dumpcap): {dist_ms(r.wire_errors)}")
        print(f"      wire time minus reported time:       {dist_ms(r.wire_vs_reported)}")
    print(
        f"    UAS: {c.uas.calls} calls, {c.uas.failed} failed, {c.uas.retrans} retransmissions,"
        f" cpu {c.uas_cpu / p.wall_s:4.2f}; {c.drop_text()}",
        flush=True,
    )
    if p.profile:
        print(p.profile)
    if p.problems():
        print(p.problems())


async def concurrency(rig: Rig, args: argparse.Namespace, workdir: Path) -> list[HoldResult]:
    plan = parse_dial_string(NUMBER + args.plan).keypresses
    plan_end = max((k.offset_s(rig.trunk.tone_ms, rig.trunk.gap_ms) for k in plan), default=0)
    results: list[HoldResult] = []
    for n in args.concurrency:
        wire = None
        if args.wire:
            core = PEER_CORE if args.pin else None
            wire = Wire(rig.uas.media_port, workdir / f"keys-{n}.pcap", core)
        timeout = n / args.ramp_cps + plan_end + args.hold + 30
        try:
            phase = await rig.run(
                f"hold-{n}", [NUMBER + args.plan] * n, args.ramp_cps, args.hold, timeout
            )
        finally:
            packets = wire.stop() if wire else None
        offset = time.time() - time.monotonic()  # loop.time() is CLOCK_MONOTONIC on both loops
        result = hold_result(phase, rig.rss_start, len(plan), packets, offset)
        print_hold(result, args)
        phase.traces.clear()  # finished legs are garbage in the product too
        results.append(result)
        if phase.timed_out:
            break
    return results


# ---------------------------------------------------------------- run and report


@dataclass
class Results:
    reference: list[RefStep] = field(default_factory=list)
    cps: list[CpsStep] = field(default_factory=list)
    hold: list[HoldResult] = field(default_factory=list)
    idle_cpu: float = 0.0
    sustained: list[CpsStep] = field(default_factory=list)


async def voxflow_side(args: argparse.Namespace, uas: Uas, workdir: Path, out: Results) -> None:
    store = Store(workdir)
    rig = Rig(store, uas, args)
    await rig.start()
    try:
        out.idle_cpu = rig.idle = await rig.idle_cpu(2.0)
        gc.collect()
        rig.rss_start = rss_mb()
        print(
            f"voxflow idle (media clock, probes, no call): cpu {out.idle_cpu:.3f} of a core,"
            f" RSS {rig.rss_start:.0f} MiB"
        )
        if args.concurrency:  # first, so that RSS per call is not hidden by earlier phases
            print("voxflow Dialer -> SIPp UAS, calls held with RTP both ways and keypresses:")
            out.hold = await concurrency(rig, args, workdir)
        if args.cps_rates:
            print(
                f"voxflow Dialer -> SIPp UAS, short calls (hold {args.cps_hold:g} s),"
                f" {args.cps_seconds:g} s steps at fixed rates:"
            )
            out.cps = await calls_per_second(rig, args)
        if args.sustain_rates and args.sustain_seconds > 0:
            print(
                f"voxflow Dialer -> SIPp UAS, short calls, {args.sustain_seconds:g} s at each"
                f" sustained rate (calls due evenly spaced, claimed by the dialer's poll):"
            )
            for rate in sorted(args.sustain_rates):
                out.sustained.append(await sustained(rig, args, rate))
                if not out.sustained[-1].passed:
                    break
    finally:
        await rig.close()
        store.db.dispose()


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def summary(args: argparse.Namespace, out: Results) -> bool:
    print("summary")
    ref = max((s.rate for s in out.reference if s.passed), default=0)
    if out.reference:
        note = " (the highest step asked)" if out.reference[-1].passed else ""
        print(f"  reference SIPp UAC -> SIPp UAS: {ref:>6} calls/s with zero failed calls{note}")
    cps_ok = summary_cps(out, ref, args)
    held_ok = summary_hold(out)
    key_ok = summary_keys(out)
    core = f"core {VOX_CORE} only" if args.pin else "not pinned"
    print(
        f"  voxflow process: {core}, nice {args.nice}, {args.loop} event loop, dialer poll"
        f" {args.poll_s:g} s"
    )
    ok = cps_ok and held_ok and key_ok
    print("targets met" if ok else "targets NOT met")
    return ok


def summary_cps(out: Results, ref: int, args: argparse.Namespace) -> bool:
    passed = [run for run in out.sustained if run.passed]
    best = max(passed, key=lambda run: run.rate) if passed else None
    ok = best is not None and best.rate >= TARGET_CPS
    if best is not None:
        ratio = f" = {best.rate / ref:.3f} x the reference" if ref else ""
        head = f"{best.rate:>6g} calls/s for {args.sustain_seconds:g} s, zero failed calls{ratio}"
    else:
        head = "  none sustained with zero failed calls"
    print(f"  voxflow Dialer -> SIPp UAS:     {head}  (target >= {TARGET_CPS}: {verdict(ok)})")
    pad = " " * 34
    for run in out.sustained:
        print(
            f"{pad}{args.sustain_seconds:g} s at {run.rate:g}/s: answered at"
            f" {run.achieved:.0f}/s, lost {run.phase.failed} of {run.phase.calls}"
            f" ({run.phase.causes_text() or 'none'}); cpu {run.cpu:.2f} of the core,"
            f" {run.cpu_ms_per_call:.2f} ms per call; setup p99"
            f" {pct(run.setup, 99) * 1000:.0f} ms; {run.phase.gc_text()}"
        )
    if out.cps:
        clean = max((x.rate for x in out.cps if x.passed), default=0)
        kept = max((x.rate for x in out.cps if x.kept_up), default=0)
        behind = [x for x in out.cps if not x.kept_up]
        text = f"{args.cps_seconds:g} s steps: "
        text += f"zero failed calls up to {clean:g}/s, " if clean else "every step lost calls, "
        text += f"kept up to {kept:g}/s"
        if behind:
            text += f", not at {behind[0].rate:g}/s ({behind[0].phase.causes_text()})"
        print(pad + text)
    return ok


def summary_hold(out: Results) -> bool:
    held = max((r.phase.calls for r in out.hold if r.passed), default=0)
    ok = held >= TARGET_CONCURRENT
    print(
        f"  concurrent calls with RTP:      {held:>6} held with zero failed calls"
        f"  (target >= {TARGET_CONCURRENT}: {verdict(ok)})"
    )
    for r in out.hold:
        if not r.passed:
            print(
                f"{'':34}{r.phase.calls} calls: {r.answered} answered and held, CPU {r.cpu:.2f}"
                f" of the core with all up; lost {r.phase.failed} ({r.phase.causes_text()})"
            )
    return ok


def summary_keys(out: Results) -> bool:
    at_target = [r for r in out.hold if r.phase.calls == TARGET_CONCURRENT]
    if not at_target:
        print(f"  keypress p99 at {TARGET_CONCURRENT} calls:      not measured (no such phase)")
        return False
    r = at_target[0]
    p99 = pct(r.key_errors, 99) * 1000
    wire = f", {pct(r.wire_errors, 99) * 1000:.2f} ms on the wire" if r.wire_errors else ""
    ok = p99 <= TARGET_KEY_P99_MS and bool(r.key_errors)
    print(
        f"  keypress p99 at {TARGET_CONCURRENT} calls:      {p99:6.2f} ms as reported{wire}"
        f"  (target <= {TARGET_KEY_P99_MS:g} ms: {verdict(ok)})"
    )
    for other in out.hold:
        if other is not r and other.key_errors:
            print(
                f"{'':34}at {other.phase.calls} calls: p99 {pct(other.key_errors, 99) * 1000:.2f}"
                " ms as reported"
            )
    return ok


def rates(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--ref-rates", type=rates, default=rates("5000,10000,15000,20000,25000,30000")
    )
    parser.add_argument("--ref-seconds", type=float, default=2.0, help="length of a reference step")
    parser.add_argument("--cps-rates", type=rates, default=rates("100,200,250,300,350,400"))
    parser.add_argument("--cps-seconds", type=float, default=4.0, help="length of a calls/s step")
    parser.add_argument("--cps-hold", type=float, default=0.0, help="hold of the calls/s calls")
    parser.add_argument(
        "--sustain-seconds", type=float, default=60.0, help="length of a sustained run (0: none)"
    )
    parser.add_argument(
        "--sustain-rates",
        type=rates,
        default=rates("300,350"),
        help="rates of the sustained runs, ascending, until one loses a call",
    )
    parser.add_argument("--concurrency", type=rates, default=rates("100,500"))
    parser.add_argument("--ramp-cps", type=float, default=250.0, help="rate of the ramp to N calls")
    parser.add_argument("--plan", default=",,1,,2", help="dial-string tail: pauses and keys")
    parser.add_argument("--hold", type=float, default=4.0, help="hold after the last keypress")
    parser.add_argument("--poll-s", type=float, default=0.2, help="dialer poll (product default)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--profile", type=Path, help="py-spy every voxflow phase into DIR")
    parser.add_argument("--no-wire", dest="wire", action="store_false", help="skip dumpcap")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin cores")
    parser.add_argument(
        "--nice",
        type=int,
        default=-10,
        help="scheduling priority of the bench and its peers when root (0: unchanged)",
    )
    parser.add_argument("--log-level", default="CRITICAL", help="ERROR shows failed calls")
    parser.add_argument(
        "--quick", action="store_true", help="a small run: 2 short steps each, 50 and 100 calls"
    )
    args = parser.parse_args()
    if args.quick:
        args.ref_rates, args.ref_seconds = [2500, 5000], 1.0
        args.cps_rates, args.cps_seconds, args.sustain_seconds = [100, 300], 2.0, 10.0
        args.sustain_rates = [300]
        args.concurrency = [50, 100]
    return args


def main() -> int:
    args = parse_args()
    for tool in ("sipp", "taskset") + (("dumpcap",) if args.wire else ()):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (sip-tester, util-linux, tshark)", file=sys.stderr)
            return 2
    if args.wire and os.geteuid() != 0:
        print("not root: no wire capture (dumpcap on lo)", file=sys.stderr)
        args.wire = False
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    group_nice = _autogroup_nice()
    if args.nice and os.geteuid() == 0:
        # Before any thread or child: both inherit it (SIPp, dumpcap, the store's threads).
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        _set_autogroup_nice(args.nice)
    else:
        args.nice = 0
    try:
        return _run(args)
    finally:
        if args.nice and group_nice is not None:
            _set_autogroup_nice(group_nice)  # the group is the caller's session's too


def _autogroup_nice() -> int | None:
    try:
        return int(Path("/proc/self/autogroup").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _set_autogroup_nice(nice: int) -> None:
    """With autogroup scheduling a nice value only counts inside the session's group: the
    group's own nice is what weighs against other sessions' jobs."""
    with contextlib.suppress(OSError):
        Path("/proc/self/autogroup").write_text(f"{nice}\n")


def _run(args: argparse.Namespace) -> int:
    if args.pin:
        os.sched_setaffinity(0, {VOX_CORE})
    workdir = Path(tempfile.mkdtemp(prefix="voxflow-bench-dialer-"))
    out = Results()
    try:
        print(f"dialer: SIPp scenarios in {SCENARIOS}")
        if args.ref_rates:
            out.reference = run_reference(args, workdir / "reference")
        # A fresh UAS of the same kind: a failed reference step leaves calls behind in the first.
        uas = Uas(workdir / "voxflow", PEER_CORE if args.pin else None)
        try:
            print(f"SIPp UAS for voxflow on 127.0.0.1:{uas.port}, RTP echo on {uas.media_port}")
            runner = _uvloop_run if args.loop == "uvloop" else asyncio.run
            runner(voxflow_side(args, uas, workdir, out))
        finally:
            uas.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary(args, out)
    return 0


def run_reference(args: argparse.Namespace, workdir: Path) -> list[RefStep]:
    uas = Uas(workdir, PEER_CORE if args.pin else None)
    try:
        print(
            f"reference: SIPp UAC -> SIPp UAS (127.0.0.1:{uas.port}), short calls,"
            f" {args.ref_seconds:g} s steps:",
            flush=True,
        )
        return reference(args, uas, workdir)
    finally:
        uas.stop()


def _uvloop_run(coro: object) -> None:
    import uvloop

    uvloop.run(coro)  # type: ignore[arg-type]


if __name__ == "__main__":
    raise SystemExit(main())
