"""Capture SIP and RTP during a test with dumpcap and decode it afterwards with tshark.

dumpcap captures on an interface of the test's namespace (``lo`` by default, or the veth end
of a :mod:`tests.peers.netns` namespace) or inside a given namespace, with a capture filter for
the given UDP ports only (the loopback interface may carry other tests' traffic). It writes
pcapng to a pipe (flushed per packet); the harness copies it into ``capture.pcapng`` in a
temporary directory (or a given one).

Completeness without sleeps: the filter also admits an extra marker port, and the harness sends
a marker datagram there. The capture is live once the start marker comes through the pipe;
on stop, everything sent before the stop marker is in the file once that marker is (a capture
socket keeps order). Only then is dumpcap stopped (SIGINT to its process group, then SIGKILL).

After stopping, the file is decoded once (``tshark -d udp.port==P,sip`` for each SIP port,
``--enable-heuristic rtp_udp``; dynamic payload types are learnt from the SDP) into
:class:`SipRow` and :class:`RtpEventRow` lists, and :meth:`Capture.keypresses` folds the RFC 4733
packets into one :class:`Keypress` per event.

Example fixture::

    @pytest.fixture
    def sip_capture(uas: Sipp) -> Iterator[Capture]:
        with capture([uas.port], media_ports=[uas.media_port]) as cap:
            yield cap           # after the call: cap.stop(); cap.sip, cap.keypresses()
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.peers.kamailio import free_udp_port

EVENT_CHARS = "0123456789*#ABCD"
MARKER_PREFIX = "voxflow-capture-marker-"
_MARKER = re.compile(rb"voxflow-capture-marker-([0-9a-f]{32})")
_MARKER_LEN = len(MARKER_PREFIX) + 32


@dataclass(frozen=True)
class SipRow:
    time: float  # frame.time_epoch
    src: str
    sport: int
    dst: str
    dport: int
    first_line: str  # request line or status line
    call_id: str
    cseq: str  # "2 INVITE"

    @property
    def is_request(self) -> bool:
        return not self.first_line.startswith("SIP/2.0 ")

    @property
    def method(self) -> str:
        """The request's method, or the CSeq method of a response."""
        return self.first_line.split(" ", 1)[0] if self.is_request else self.cseq.split()[-1]

    @property
    def status(self) -> int | None:
        return None if self.is_request else int(self.first_line.split()[1])

    @property
    def label(self) -> str:
        """``INVITE`` for requests, ``200 INVITE`` for responses: handy for order checks."""
        return self.method if self.is_request else f"{self.status} {self.method}"


@dataclass(frozen=True)
class RtpEventRow:
    time: float  # frame.time_epoch
    src: str
    sport: int
    dst: str
    dport: int
    payload_type: int
    event_id: int
    end_of_event: bool
    marker: bool
    seq: int
    timestamp: int
    duration: int  # timestamp units (1/8000 s for telephone-event/8000)

    @property
    def digit(self) -> str:
        return EVENT_CHARS[self.event_id] if self.event_id < len(EVENT_CHARS) else "?"


@dataclass(frozen=True)
class Keypress:
    """One RFC 4733 event of one RTP stream: its first and first end packet on the wire."""

    digit: str
    src: str
    sport: int
    dst: str
    dport: int
    start: float  # frame.time_epoch of the first packet of the event
    end: float | None  # ... of the first packet with the E bit
    duration: int  # final duration field, timestamp units
    timestamp: int


@dataclass
class Capture:
    process: subprocess.Popen[bytes]
    path: Path
    interface: str
    netns: str | None
    sip_ports: tuple[int, ...]
    marker: tuple[str, int]
    rtpevent_pt: int | None = None
    sip: list[SipRow] = field(default_factory=list)
    rtp_events: list[RtpEventRow] = field(default_factory=list)
    _markers: set[str] = field(default_factory=set)
    _eof: bool = False
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _stopped: bool = False

    # -- live part

    def _reader(self) -> None:
        """Copy dumpcap's pcapng stream into the file, noting the marker payloads in it."""
        assert self.process.stdout is not None
        tail = b""
        with self.path.open("wb") as out:
            while chunk := self.process.stdout.read1(65536):
                out.write(chunk)
                out.flush()
                found = _MARKER.findall(tail + chunk)
                tail = (tail + chunk)[-_MARKER_LEN:]
                if found:
                    with self._cond:
                        self._markers.update(m.decode() for m in found)
                        self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _send_marker(self, timeout: float) -> None:
        """Send a marker datagram until it shows up in the capture (resent: a start marker may
        go out before the capture is live)."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while True:
                with contextlib.suppress(OSError):
                    s.sendto(f"{MARKER_PREFIX}{token}".encode(), self.marker)
                with self._cond:
                    self._cond.wait_for(lambda: token in self._markers or self._eof, timeout=0.05)
                    if token in self._markers:
                        return
                if self.process.poll() is not None:
                    raise RuntimeError(f"dumpcap exited with {self.process.returncode}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"dumpcap did not capture a marker within {timeout} s")

    def stop(self, timeout: float = 10) -> Capture:
        """Wait until everything sent so far is captured, stop dumpcap, decode the file."""
        if self._stopped:
            return self
        self._stopped = True
        try:
            self._send_marker(timeout)
        finally:
            _stop_group(self.process)
            with self._cond:  # the reader has copied the rest of the stream
                self._cond.wait_for(lambda: self._eof, timeout)
        self.decode()
        return self

    # -- decoded part

    def decode(self) -> None:
        fields = [
            "frame.time_epoch",
            "ip.src",
            "udp.srcport",
            "ip.dst",
            "udp.dstport",
            "sip.Request-Line",
            "sip.Status-Line",
            "sip.Call-ID",
            "sip.CSeq",
            "rtp.p_type",
            "rtpevent.event_id",
            "rtpevent.end_of_event",
            "rtp.marker",
            "rtp.seq",
            "rtp.timestamp",
            "rtpevent.duration",
        ]
        args = ["tshark", "-n", "-r", str(self.path)]
        for port in self.sip_ports:
            args += ["-d", f"udp.port=={port},sip"]
        if self.rtpevent_pt is not None:
            args += ["-o", f"rtpevent.event_payload_type_value:{self.rtpevent_pt}"]
        args += ["--enable-heuristic", "rtp_udp", "-Y", "sip or rtpevent", "-T", "fields"]
        args += ["-E", "separator=\t", "-E", "occurrence=f"]
        for name in fields:
            args += ["-e", name]
        out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
        self.sip, self.rtp_events = [], []
        for line in out.stdout.splitlines():
            v = line.split("\t")
            if len(v) < len(fields):
                continue
            t, src, sport, dst, dport = float(v[0]), v[1], int(v[2]), v[3], int(v[4])
            if v[5] or v[6]:
                self.sip.append(SipRow(t, src, sport, dst, dport, v[5] or v[6], v[7], v[8]))
            elif v[10]:
                self.rtp_events.append(
                    RtpEventRow(
                        t,
                        src,
                        sport,
                        dst,
                        dport,
                        payload_type=int(v[9]),
                        event_id=int(v[10]),
                        end_of_event=v[11] in ("1", "True"),
                        marker=v[12] in ("1", "True"),
                        seq=int(v[13]),
                        timestamp=int(v[14]),
                        duration=int(v[15]),
                    )
                )

    def sip_for(self, call_id: str) -> list[SipRow]:
        return [r for r in self.sip if r.call_id == call_id]

    def keypresses(self, dport: int | None = None) -> list[Keypress]:
        """RFC 4733 events in wire order (optionally only those sent to ``dport``); the
        packets of one event (same stream, same RTP timestamp) become one keypress."""
        firsts: dict[tuple[str, int, str, int, int], RtpEventRow] = {}
        ends: dict[tuple[str, int, str, int, int], float] = {}
        durations: dict[tuple[str, int, str, int, int], int] = {}
        for r in self.rtp_events:
            if dport is not None and r.dport != dport:
                continue
            key = (r.src, r.sport, r.dst, r.dport, r.timestamp)
            firsts.setdefault(key, r)
            durations[key] = max(durations.get(key, 0), r.duration)
            if r.end_of_event:
                ends.setdefault(key, r.time)
        return [
            Keypress(
                r.digit,
                r.src,
                r.sport,
                r.dst,
                r.dport,
                r.time,
                ends.get(k),
                durations[k],
                r.timestamp,
            )
            for k, r in firsts.items()
        ]


def _stop_group(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGINT the capture's process group (dumpcap finishes the stream), then SIGKILL."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)


def _port_filter(ports: Sequence[int | tuple[int, int]]) -> str:
    parts = []
    for p in ports:
        parts.append(f"portrange {p[0]}-{p[1]}" if isinstance(p, tuple) else f"port {p}")
    return " or ".join(parts)


@contextlib.contextmanager
def capture(
    sip_ports: Sequence[int],
    *,
    media_ports: Sequence[int | tuple[int, int]] | None = (),
    interface: str = "lo",
    netns: str | None = None,
    marker_host: str = "127.0.0.1",
    directory: Path | None = None,
    rtpevent_pt: int | None = None,
    start_timeout: float = 15,
) -> Iterator[Capture]:
    """Capture UDP on ``sip_ports`` and ``media_ports`` (ints or (low, high) ranges; ``None``:
    all UDP) on ``interface`` (in namespace ``netns`` if given) until the block ends or
    :meth:`Capture.stop` is called; the decoded rows are available after that.

    ``marker_host`` must be an address whose traffic crosses ``interface`` (127.0.0.1 for
    ``lo``; a :class:`~tests.peers.netns.Netns`'s ``ns_addr`` for its ``host_if``). The
    pcapng file is written to ``directory`` and kept (e.g. pytest's ``tmp_path``), else to a
    temporary directory removed at the end.

    RTP payload types come from the SDP tshark sees in each direction; ``rtpevent_pt`` also
    decodes that payload type as telephone-event where the SDP does not say (SIPp's play_dtmf
    always sends 96, whatever the answer said)."""
    for tool in ("dumpcap", "tshark"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (apt-get install tshark)")
    workdir = directory or Path(tempfile.mkdtemp(prefix="voxflow-capture-"))
    path = workdir / "capture.pcapng"
    marker_port = free_udp_port()
    if media_ports is None:
        bpf = "udp"
    else:
        bpf = f"udp and ({_port_filter([*sip_ports, *media_ports, marker_port])})"
    # -w -: the pcapng stream on stdout, flushed per packet (a file would be block-buffered)
    args = ["dumpcap", "-q", "-i", interface, "-f", bpf, "-w", "-"]
    if netns:
        args = ["ip", "netns", "exec", netns, *args]
    with (workdir / "dumpcap.log").open("wb") as log:
        process = subprocess.Popen(
            args,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
    cap = Capture(
        process, path, interface, netns, tuple(sip_ports), (marker_host, marker_port), rtpevent_pt
    )
    reader = threading.Thread(target=cap._reader, daemon=True)
    reader.start()
    try:
        try:
            cap._send_marker(start_timeout)
        except (TimeoutError, RuntimeError) as exc:
            text = (workdir / "dumpcap.log").read_text(errors="replace")
            raise RuntimeError(f"capture did not start: {exc}\n{text[-2000:]}") from None
        yield cap
        cap.stop()
    finally:
        _stop_group(process)
        reader.join(5)
        if process.stdout is not None:
            process.stdout.close()
        if directory is None:
            shutil.rmtree(workdir, ignore_errors=True)
