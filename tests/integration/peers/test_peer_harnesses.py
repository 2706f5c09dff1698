"""The peer harnesses themselves: kamailio, baresip in a namespace, packet capture.

SIPp plays the calling side everywhere (``uac_auth_call.xml``, ``uac_dtmf.xml``,
``uac_info.xml``; ``run_uac`` below runs one call and waits for it), so each harness is proven
against an independent SIP implementation before voxflow's tests rely on it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.peers.baresip import Baresip, baresip_phone
from tests.peers.capture import capture
from tests.peers.kamailio import Kamailio, free_udp_port, kamailio_proxy
from tests.peers.netns import Netns, NetnsUnavailable, network_namespace
from tests.peers.sipp import PEERS, Sipp, sipp_uas

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")

TONE_MS = 100  # play_dtmf: ~0.4 s + TONE_MS of filler, then one event every 2 * TONE_MS


def _needs(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")


# ------------------------------------------------------------------ SIPp as the caller


@dataclass
class UacRun:
    returncode: int
    workdir: Path

    @property
    def messages(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.workdir.glob("*_messages.log"))

    @property
    def errors(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.workdir.glob("*_errors.log"))


def _media_port(host: str) -> int:
    """A free port whose +2 is free too (SIPp binds both)."""
    while True:
        port = free_udp_port(host)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((host, port + 2))
            except OSError:
                continue
        return port


def run_uac(
    workdir: Path,
    scenario: str,
    target: tuple[str, int],
    *extra: str,
    host: str = "127.0.0.1",
    service: str = "1000",
    inf: str | None = None,
    hold_ms: int = 200,
    timeout: float = 15,
) -> UacRun:
    """One call of SIPp UAC ``tests/peers/<scenario>.xml`` to ``target``, from ``host``;
    ``inf`` is the scenario's injection row (``[field0]``...), e.g. ``dtmf_row("12#")``."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = ["sipp", "-sf", str(PEERS / f"{scenario}.xml"), "-s", service, "-m", "1"]
    args += ["-i", host, "-p", str(free_udp_port(host)), "-cp", str(free_udp_port())]
    args += ["-mi", host, "-mp", str(_media_port(host)), "-set", "hold_ms", str(hold_ms)]
    args += ["-nostdin", "-trace_msg", "-trace_err", "-timeout", f"{int(timeout)}s"]
    args += ["-timeout_error", *extra]
    if inf is not None:
        (workdir / "fields.csv").write_text(f"SEQUENTIAL\n{inf};\n")
        args += ["-inf", str(workdir / "fields.csv")]
    args.append(f"{target[0]}:{target[1]}")
    done = subprocess.run(
        args,
        check=False,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout + 5,
    )
    return UacRun(done.returncode, workdir)


def dtmf_row(digits: str) -> str:
    """uac_dtmf.xml's field 0: the digits and the length of each event."""
    return f"{digits},{TONE_MS}"


def dtmf_hold_ms(digits: str) -> int:
    """How long uac_dtmf.xml must hold the call for all digits to end, with a margin."""
    return 400 + TONE_MS + 2 * TONE_MS * len(digits) + 400


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def netns() -> Iterator[Netns]:
    try:
        with network_namespace() as ns:
            yield ns
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def proxy() -> Iterator[tuple[Kamailio, Sipp]]:
    _needs("kamailio")
    with sipp_uas("uas_answer_dtmf") as uas, kamailio_proxy((uas.host, uas.port)) as k:
        yield k, uas


@pytest.fixture
def phone(netns: Netns) -> Iterator[Baresip]:
    _needs("baresip")
    with baresip_phone(netns) as phone:
        yield phone


# ------------------------------------------------------------------ kamailio


def test_kamailio_relays_an_authenticated_call_with_record_route(
    proxy: tuple[Kamailio, Sipp], tmp_path: Path
) -> None:
    k, uas = proxy
    run = run_uac(tmp_path, "uac_auth_call", (k.host, k.port), "-au", k.user, "-ap", k.password)
    assert run.returncode == 0, run.errors + run.messages
    assert "SIP/2.0 407 Proxy Authentication Required" in run.messages
    assert f'Proxy-Authorization: Digest username="{k.user}"' in run.messages
    # the UAS got the authenticated INVITE through the proxy, with the proxy's Record-Route,
    # and the ACK and BYE came along the route set
    record_route = f"Record-Route: <sip:{k.host}:{k.port};lr"
    assert record_route in uas.messages
    for request in ("INVITE sip:1000@", "ACK sip:", "BYE sip:"):
        assert request in uas.messages
    assert "relaying INVITE 1000" in k.log


def test_kamailio_forbids_another_user_and_stops_cleanly(tmp_path: Path) -> None:
    _needs("kamailio")
    with (
        sipp_uas("uas_answer_dtmf") as uas,
        kamailio_proxy((uas.host, uas.port), user="dialer", password="pw") as k,
    ):
        run = run_uac(tmp_path, "uac_auth_call", (k.host, k.port), "-au", "mallory", "-ap", "pw")
        assert run.returncode != 0
        assert "SIP/2.0 403 Forbidden" in run.messages
        assert "INVITE" not in uas.messages
        group = k.process.pid
    with pytest.raises(ProcessLookupError):  # the whole process group is gone
        os.killpg(group, 0)


def _register(k: Kamailio, auth: str = "") -> tuple[str, str]:
    """One REGISTER (with an Authorization header if given): (first line, whole answer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((k.host, 0))
        s.settimeout(5)
        port = s.getsockname()[1]
        msg = (
            f"REGISTER sip:{k.host}:{k.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {k.host}:{port};branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{k.user}@{k.host}>;tag=1\r\nTo: <sip:{k.user}@{k.host}>\r\n"
            f"Call-ID: reg-{port}@{k.host}\r\nCSeq: {2 if auth else 1} REGISTER\r\n"
            f"Contact: <sip:{k.user}@{k.host}:{port}>\r\nExpires: 60\r\n{auth}"
            "Content-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), (k.host, k.port))
        answer = s.recv(65535).decode()
        return answer.split("\r\n", 1)[0], answer


def test_kamailio_registrar_challenges_with_401_then_stores_the_contact(
    proxy: tuple[Kamailio, Sipp],
) -> None:
    k, _ = proxy
    first, answer = _register(k)
    assert first == "SIP/2.0 401 Unauthorized"
    found = re.search(r'WWW-Authenticate: Digest realm="([^"]+)", nonce="([^"]+)"', answer)
    assert found, answer
    realm, nonce = found.groups()
    uri = f"sip:{k.host}:{k.port}"

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    response = md5(f"{md5(f'{k.user}:{realm}:{k.password}')}:{nonce}:{md5(f'REGISTER:{uri}')}")
    auth = (
        f'Authorization: Digest username="{k.user}", realm="{realm}", nonce="{nonce}", '
        f'uri="{uri}", response="{response}", algorithm=MD5\r\n'
    )
    first, answer = _register(k, auth)
    assert first == "SIP/2.0 200 OK", answer
    assert f"Contact: <sip:{k.user}@{k.host}:" in answer


# ------------------------------------------------------------------ network namespace


def _udp_echo_reply(ns: Netns, port: int) -> bytes:
    """Ask the echo server in ``ns`` until it answers (it may still be starting)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ns.host_addr, 0))
        s.settimeout(0.1)
        for _ in range(50):
            s.sendto(b"ping", (ns.ns_addr, port))
            try:
                return s.recv(100)
            except TimeoutError:
                continue
    raise TimeoutError("no echo from the namespace")


def test_network_namespace_is_reachable_and_removed_even_on_failure() -> None:
    echo = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.bind((sys.argv[1], 9999))\n"
        "while True:\n"
        "    data, peer = s.recvfrom(100)\n"
        "    s.sendto(data + repr(peer).encode(), peer)\n"
    )
    try:
        with pytest.raises(RuntimeError, match="boom"), network_namespace() as ns:
            server = ns.popen(sys.executable, "-c", echo, ns.ns_addr)
            answer = ns.run("ip", "-br", "addr", "show", ns.ns_if).stdout
            assert f"{ns.ns_addr}/32" in answer
            # the namespace sees the test's namespace at host_addr, and answers there
            assert _udp_echo_reply(ns, 9999).startswith(f"ping('{ns.host_addr}'".encode())
            raise RuntimeError("boom")
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))
    assert server.wait(5) == -signal.SIGKILL  # killed by the cleanup
    names = subprocess.run(
        ["ip", "netns", "list"], check=False, capture_output=True, text=True
    ).stdout
    assert ns.name not in names
    links = subprocess.run(
        ["ip", "-br", "link"], check=False, capture_output=True, text=True
    ).stdout
    assert ns.host_if not in links
    routes = subprocess.run(["ip", "route"], check=False, capture_output=True, text=True).stdout
    assert ns.ns_addr not in routes


# ------------------------------------------------------------------ baresip


def test_baresip_reports_rfc4733_digits_sent_by_sipp(
    phone: Baresip, netns: Netns, tmp_path: Path
) -> None:
    digits = "12#"
    with capture(
        [phone.sip_port],
        media_ports=[phone.rtp_ports],
        interface=netns.host_if,
        marker_host=netns.ns_addr,
    ) as cap:
        run = run_uac(
            tmp_path,
            "uac_dtmf",
            (phone.host, phone.sip_port),
            host=netns.host_addr,
            service=phone.user,
            inf=dtmf_row(digits),
            hold_ms=dtmf_hold_ms(digits),
        )
        assert run.returncode == 0, run.errors + run.messages
        phone.wait_event("CALL_CLOSED", timeout=5)
        cap.stop()
    assert phone.digits() == digits
    heard = phone.dtmf()
    assert all(d.end is not None for d in heard), heard
    # independent check on the wire: the same events, and baresip saw each one at once
    # (jitter buffer off)
    wire = cap.keypresses()
    assert "".join(k.digit for k in wire) == digits
    for on_wire, at_phone in zip(wire, heard, strict=True):
        assert abs(at_phone.start - on_wire.start) < 0.2
    assert [r.label for r in cap.sip] == [
        "INVITE",
        "180 INVITE",
        "200 INVITE",
        "ACK",
        "BYE",
        "200 BYE",
    ]


def test_baresip_reports_a_sip_info_keypress(phone: Baresip, netns: Netns, tmp_path: Path) -> None:
    run = run_uac(
        tmp_path,
        "uac_info",
        (phone.host, phone.sip_port),
        host=netns.host_addr,
        service=phone.user,
        inf="5",
        hold_ms=300,
    )
    assert run.returncode == 0, run.errors + run.messages
    phone.wait_event("CALL_CLOSED", timeout=5)
    [press] = phone.dtmf()
    assert press.digit == "5" and press.end is not None
    assert 0.1 < press.end - press.start < 0.3  # baresip ends it after the INFO's Duration=160


def test_kamailio_on_the_veth_relays_to_baresip_in_the_namespace(
    netns: Netns, tmp_path: Path
) -> None:
    _needs("kamailio")
    _needs("baresip")
    with (
        baresip_phone(netns, user="1000") as phone,
        kamailio_proxy((phone.host, phone.sip_port), host=netns.host_addr) as k,
    ):
        run = run_uac(
            tmp_path,
            "uac_auth_call",
            (k.host, k.port),
            "-au",
            k.user,
            "-ap",
            k.password,
            host=netns.host_addr,
        )
        assert run.returncode == 0, run.errors + run.messages
        phone.wait_event("CALL_CLOSED", timeout=5)
        assert phone.wait_event("CALL_ESTABLISHED")["id"] in run.messages


# ------------------------------------------------------------------ capture


def test_capture_decodes_a_sipp_call_on_loopback(tmp_path: Path) -> None:
    _needs("dumpcap")
    digits = "1#"
    with sipp_uas("uas_answer_dtmf") as uas:
        with capture(
            [uas.port], media_ports=[uas.media_port], directory=tmp_path, rtpevent_pt=96
        ) as cap:
            run = run_uac(
                tmp_path / "uac",
                "uac_dtmf",
                (uas.host, uas.port),
                inf=dtmf_row(digits),
                hold_ms=dtmf_hold_ms(digits),
            )
            assert run.returncode == 0, run.errors + run.messages
        assert (tmp_path / "capture.pcapng").stat().st_size > 0
    call_ids = {r.call_id for r in cap.sip}
    assert len(call_ids) == 1
    labels = [r.label for r in cap.sip]
    assert labels == ["INVITE", "100 INVITE", "180 INVITE", "200 INVITE", "ACK", "BYE", "200 BYE"]
    times = [r.time for r in cap.sip]
    assert times == sorted(times)
    assert cap.sip[3].first_line == "SIP/2.0 200 OK" and cap.sip[3].sport == uas.port
    assert cap.sip[0].cseq == "1 INVITE" and cap.sip[5].cseq == "2 BYE"
    # RFC 4733 towards the UAS's media port: marker on the first packet, E bit at the end
    to_uas = [e for e in cap.rtp_events if e.dport == uas.media_port]
    assert to_uas[0].marker and to_uas[0].event_id == 1 and not to_uas[0].end_of_event
    assert [k.digit for k in cap.keypresses(dport=uas.media_port)] == list(digits)
    for k in cap.keypresses(dport=uas.media_port):
        assert k.end is not None and 0.05 < k.end - k.start < 0.2
        assert k.duration == TONE_MS * 8
