"""Run baresip as an auto-answering SIP phone in a network namespace and read its events.

baresip (Debian's 1.0.0) binds nothing when the host has loopback alone, so it always runs in a
:mod:`tests.peers.netns` namespace, listening on the namespace's ``ns_addr``; the tests reach
it from their own namespace through the veth pair (bind to ``netns.host_addr``, not 127.0.0.1).

The generated config directory holds:

* ``config``: ``sip_listen`` on ``ns_addr`` and a port; ``rtp_ports`` (a known range, handy for
  capture filters); ``jitter_buffer_delay 0-0`` (no jitter buffer: with the default baresip
  reported each digit ~100 ms late, and never the END of the last digit of a stream that then
  fell silent); modules g711 (PCMU/PCMA) and ausine (a 440 Hz tone as the microphone; it only
  runs at 48 kHz stereo, hence ``ausrc_srate 48000`` / ``ausrc_channels 2``, baresip
  resamples); no audio player (received audio is dropped, or written to WAV files by the
  sndfile module with ``record_audio=True``); account and ctrl_tcp on ``ns_addr`` and a port.
* ``accounts``: one account ``sip:<user>@<ns_addr>`` with ``regint=0`` (no registration),
  ``answermode=auto`` and ``audio_codecs=PCMU``. baresip picks the account by the user part of
  the request URI: dial ``<user>``; any other user gets 404.

baresip answers with telephone-event on the payload type of the offer (96 from SIPp).
ctrl_tcp sends netstring-framed JSON (``<len>:<json>,``). A received digit (RFC 4733, or SIP
INFO application/dtmf-relay) comes as ``{"event":true,"type":"CALL_DTMF_START","param":"1",
"id":"<Call-ID>",...}`` then ``{"type":"CALL_DTMF_END",...}`` (no param). A call as
``CALL_REMOTE_SDP``, ``CALL_LOCAL_SDP``, ``CALL_ESTABLISHED``, ``CALL_RTPESTAB`` and
``CALL_CLOSED`` (param: the reason). Every event is stored with ``_time`` (time.time() when
the harness read it: comparable with a capture's frame.time_epoch; with no jitter buffer
within a millisecond of the packet on the wire here).

Example fixture::

    @pytest.fixture
    def phone() -> Iterator[Baresip]:
        try:
            with network_namespace() as ns, baresip_phone(ns) as phone:
                yield phone      # dial phone.uri from ns.host_addr; phone.wait_digits("123")
        except NetnsUnavailable as exc:
            pytest.skip(str(exc))
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.peers.kamailio import kill_group, sip_ping
from tests.peers.netns import Netns

MODULES = Path("/usr/lib/baresip/modules")

Event = dict[str, Any]


@dataclass(frozen=True)
class BaresipDtmf:
    digit: str
    start: float  # time.time() when CALL_DTMF_START was read
    end: float | None  # ... CALL_DTMF_END
    call_id: str


@dataclass
class Baresip:
    process: subprocess.Popen[bytes]
    netns: Netns
    host: str
    sip_port: int
    ctrl_port: int
    user: str
    rtp_ports: tuple[int, int]
    workdir: Path
    events: list[Event] = field(default_factory=list)
    _responses: dict[str, Event] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _sock: socket.socket | None = None
    _reader: threading.Thread | None = None

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@{self.host}:{self.sip_port}"

    @property
    def log(self) -> str:
        return (self.workdir / "baresip.log").read_text(errors="replace")

    @property
    def recordings(self) -> list[Path]:
        """WAV files of the sndfile module (``record_audio=True``), written per call."""
        return sorted(self.workdir.glob("dump-*.wav"))

    # -- ctrl_tcp

    def _connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.create_connection(
                    (self.host, self.ctrl_port),
                    timeout=0.5,
                    source_address=(self.netns.host_addr, 0),
                )
                break
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"baresip exited with {self.process.returncode}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        sock.settimeout(None)
        self._sock = sock
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._sock is not None
        buf = b""
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b":" in buf:
                size, _, rest = buf.partition(b":")
                if not size.isdigit() or len(rest) < int(size) + 1:
                    break
                n = int(size)
                payload, buf = rest[:n], rest[n + 1 :]
                self._dispatch(json.loads(payload))

    def _dispatch(self, msg: Event) -> None:
        msg["_time"] = time.time()
        with self._cond:
            if msg.get("response"):
                self._responses[str(msg.get("token"))] = msg
            else:
                self.events.append(msg)
            self._cond.notify_all()

    def command(self, command: str, params: str = "", timeout: float = 5) -> Event:
        """Run a baresip command (``hangup``, ``dial sip:..``, ``quit``...) through ctrl_tcp;
        returns the response (``ok``, ``data``)."""
        assert self._sock is not None
        token = uuid.uuid4().hex
        payload = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._sock.sendall(b"%d:%s," % (len(payload), payload))
        with self._cond:
            if not self._cond.wait_for(lambda: token in self._responses, timeout):
                raise TimeoutError(f"baresip did not answer {command!r} within {timeout} s")
            return self._responses.pop(token)

    # -- events

    def wait_for(self, predicate: Callable[[list[Event]], bool], timeout: float = 10) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.events), timeout):
                seen = [e.get("type") for e in self.events]
                raise TimeoutError(f"baresip events within {timeout} s: {seen}")

    def wait_event(self, type_: str, timeout: float = 10) -> Event:
        """The first event of ``type_`` (e.g. ``CALL_ESTABLISHED``), waiting for it."""
        self.wait_for(lambda evs: any(e.get("type") == type_ for e in evs), timeout)
        with self._cond:
            return next(e for e in self.events if e.get("type") == type_)

    def dtmf(self) -> list[BaresipDtmf]:
        """Received keypresses in order, from CALL_DTMF_START / CALL_DTMF_END pairs."""
        out: list[BaresipDtmf] = []
        with self._cond:
            events = list(self.events)
        for e in events:
            if e.get("type") == "CALL_DTMF_START":
                out.append(BaresipDtmf(str(e.get("param")), e["_time"], None, str(e.get("id"))))
            elif e.get("type") == "CALL_DTMF_END" and out and out[-1].end is None:
                last = out[-1]
                out[-1] = BaresipDtmf(last.digit, last.start, e["_time"], last.call_id)
        return out

    def digits(self) -> str:
        return "".join(d.digit for d in self.dtmf())

    def wait_digits(self, expected: str, timeout: float = 10) -> str:
        """Wait until ``len(expected)`` digits have started; returns the digits received."""
        self.wait_for(
            lambda evs: sum(e.get("type") == "CALL_DTMF_START" for e in evs) >= len(expected),
            timeout,
        )
        return self.digits()

    def stop(self) -> None:
        if self.process.returncode is None:
            kill_group(self.process)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        if self._reader is not None:
            self._reader.join(5)


def write_config(
    confdir: Path,
    *,
    host: str,
    sip_port: int,
    ctrl_port: int,
    user: str,
    rtp_ports: tuple[int, int],
    tone_hz: int,
    record_audio: bool,
) -> None:
    modules = ["g711.so", "ausine.so"] + (["sndfile.so"] if record_audio else [])
    lines = [
        "poll_method epoll",
        f"sip_listen {host}:{sip_port}",
        f"rtp_ports {rtp_ports[0]}-{rtp_ports[1]}",
        "rtcp_mux no",
        "jitter_buffer_delay 0-0",
        f"module_path {MODULES}",
        *(f"module {m}" for m in modules),
        "module_app account.so",
        "module_app ctrl_tcp.so",
        f"ctrl_tcp_listen {host}:{ctrl_port}",
        f"audio_source ausine,{tone_hz}",
        "ausrc_srate 48000",
        "ausrc_channels 2",
        f"snd_path {confdir}",
    ]
    (confdir / "config").write_text("\n".join(lines) + "\n")
    (confdir / "accounts").write_text(
        f"<sip:{user}@{host}>;regint=0;answermode=auto;audio_codecs=PCMU\n"
    )


@contextlib.contextmanager
def baresip_phone(
    netns: Netns,
    *,
    user: str = "baresip",
    sip_port: int = 5060,
    ctrl_port: int = 4444,
    rtp_ports: tuple[int, int] = (10000, 10099),
    tone_hz: int = 440,
    record_audio: bool = False,
    directory: Path | None = None,
    start_timeout: float = 10,
) -> Iterator[Baresip]:
    """baresip in ``netns`` on ``netns.ns_addr``: answers calls to ``user`` at once and reports
    digits. Ports are the namespace's own, so fixed defaults never collide; one baresip per
    namespace (or pass other ports). Config, log and recordings go to ``directory`` and stay
    (e.g. pytest's ``tmp_path``), else to a temporary directory removed at the end."""
    if shutil.which("baresip") is None or not MODULES.is_dir():
        raise RuntimeError("baresip is not installed (apt-get install baresip)")
    workdir = directory or Path(tempfile.mkdtemp(prefix="voxflow-baresip-"))
    host = netns.ns_addr
    write_config(
        workdir,
        host=host,
        sip_port=sip_port,
        ctrl_port=ctrl_port,
        user=user,
        rtp_ports=rtp_ports,
        tone_hz=tone_hz,
        record_audio=record_audio,
    )
    argv = ["baresip", "-v", "-f", str(workdir)]
    if shutil.which("stdbuf"):
        argv = ["stdbuf", "-oL", *argv]  # a live log
    with (workdir / "baresip.log").open("wb") as log:
        process = netns.popen(
            *argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    phone = Baresip(process, netns, host, sip_port, ctrl_port, user, rtp_ports, workdir)
    try:
        try:
            phone._connect(start_timeout)
            sip_ping(
                host, sip_port, timeout=start_timeout, local_host=netns.host_addr, process=process
            )
        except (OSError, RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"baresip did not start: {exc}\n{phone.log[-3000:]}") from None
        yield phone
    finally:
        phone.stop()
        if directory is None:
            shutil.rmtree(workdir, ignore_errors=True)
