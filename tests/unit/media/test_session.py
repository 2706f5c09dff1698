from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from voxflow.media import g711
from voxflow.media.clock import TickSubscriber
from voxflow.media.dtmf import DtmfError, DtmfSender, TelephoneEvent
from voxflow.media.player import Player
from voxflow.media.recorder import Recorder
from voxflow.media.rtp import RtpPacket, RtpStream
from voxflow.media.session import RtpSession, RtpSessionState, _candidate_ports, _ip_literal
from voxflow.sip.sdp import Negotiated

SDP_REMOTE = ("203.0.113.5", 30000)
NAT_REMOTE = ("198.51.100.77", 41234)
PARAMS = Negotiated("PCMU", 0, 101, SDP_REMOTE, "sendrecv")


class FakeTicker:
    def __init__(self) -> None:
        self.subscribers: list[TickSubscriber] = []

    def subscribe(self, subscriber: TickSubscriber) -> None:
        if subscriber not in self.subscribers:
            self.subscribers.append(subscriber)

    def unsubscribe(self, subscriber: TickSubscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)


class FakeTransport(asyncio.DatagramTransport):
    def __init__(self, protocol: asyncio.DatagramProtocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.sent: list[tuple[RtpPacket, Any]] = []
        self.closing = False

    def sendto(self, data: Any, addr: Any = None) -> None:
        self.sent.append((RtpPacket.parse(bytes(data)), addr))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 4000) if name == "sockname" else default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.protocol.connection_lost(None)


class Harness:
    """A session on a fake socket and a hand-driven clock; time moves 20 ms per tick."""

    def __init__(self, params: Negotiated | None = PARAMS) -> None:
        self.now = 100.0
        self.tick_index = 0
        self.ticker = FakeTicker()
        self.session = RtpSession(
            self.ticker,
            time=lambda: self.now,
            stream=RtpStream(ssrc=5, sequence_number=65534, timestamp=1000),
            name="test",
        )
        self.transport = FakeTransport(self.session)
        self.session.connection_made(self.transport)
        if params is not None:
            self.session.start(params)

    def tick(self, count: int = 1) -> list[RtpPacket]:
        before = len(self.transport.sent)
        for _ in range(count):
            for subscriber in list(self.ticker.subscribers):
                subscriber.on_tick(self.tick_index, self.now)
            self.tick_index += 1
            self.now += 0.02
        return [packet for packet, _ in self.transport.sent[before:]]

    def receive(self, packet: RtpPacket | bytes, addr: tuple[str, int] = NAT_REMOTE) -> None:
        self.session.datagram_received(bytes(packet), addr)


def tone(samples: int, amplitude: int = 8000) -> np.ndarray[Any, np.dtype[np.int16]]:
    t = np.arange(samples)
    return (amplitude * np.sin(2 * np.pi * 440 * t / 8000)).astype(np.int16)


def test_silence_when_idle() -> None:
    h = Harness()
    packets = h.tick(3)
    assert [p.payload for p in packets] == [g711.silence("PCMU")] * 3
    assert [p.sequence_number for p in packets] == [65534, 65535, 0]
    assert [p.timestamp for p in packets] == [1000, 1160, 1320]
    assert [p.marker for p in packets] == [True, False, False]
    assert {addr for _, addr in h.transport.sent} == {SDP_REMOTE}
    assert h.session.stats.silence_frames_sent == 3
    assert h.session.state is RtpSessionState.ACTIVE
    assert h.session.local_address == ("127.0.0.1", 4000)


def test_not_started_sends_nothing() -> None:
    h = Harness(params=None)
    assert h.tick(2) == []
    assert h.session.state is RtpSessionState.OPEN


async def test_player_frames_then_completion_then_silence() -> None:
    h = Harness(Negotiated("PCMA", 8, 101, SDP_REMOTE, "sendrecv"))
    audio = tone(400)  # 2.5 frames
    player = h.session.play(Player(audio))  # returns its argument, typed as such
    packets = h.tick(4)
    assert [p.payload_type for p in packets] == [8] * 4
    sent = np.concatenate([g711.decode("PCMA", p.payload) for p in packets[:3]])
    expected = g711.decode("PCMA", g711.encode("PCMA", audio))
    assert np.array_equal(sent[:400], expected)
    assert set(sent[400:480].tolist()) == {8}  # padded with silence (A-law's zero is 8)
    assert packets[3].payload == g711.silence("PCMA")
    await asyncio.wait_for(player.wait(), 1)
    assert h.session.stats.audio_frames_sent == 3


async def test_keypress_pauses_audio_and_keeps_the_timeline() -> None:
    h = Harness()
    player = Player(tone(160 * 10))
    h.session.play(player)
    audio_before = h.tick(2)
    requested_at = h.now
    future = h.session.send_keypress("1", tone_ms=60)
    dtmf = h.tick(4)
    assert not future.done()  # the third end packet is still to go
    dtmf += h.tick(1)  # 3 updates, the last of them sent 3 times: 5 packets
    assert future.done()
    audio_after = h.tick(2)

    assert [p.payload_type for p in dtmf] == [101] * 5
    assert [p.marker for p in dtmf] == [True, False, False, False, False]
    assert {p.timestamp for p in dtmf} == {1000 + 2 * 160}
    durations = [TelephoneEvent.parse(p.payload) for p in dtmf]
    assert [(e.duration, e.end) for e in durations] == [
        (160, False),
        (320, False),
        (480, True),
        (480, True),
        (480, True),
    ]
    every = audio_before + dtmf + audio_after
    assert [p.sequence_number for p in every] == [(65534 + i) % 65536 for i in range(9)]
    assert audio_after[0].timestamp == 1000 + 7 * 160  # time ran on during the keypress
    # The message paused: the frame after the keypress is its 3rd frame.
    third = g711.encode("PCMU", tone(160 * 10)[320:480])
    assert audio_after[0].payload == third
    assert player.position_ms == 80

    result = await future
    assert result.completed
    assert (result.key, result.tone_ms, result.requested_at) == ("1", 60, requested_at)
    assert result.started_at == pytest.approx(requested_at)  # the next tick sent it
    assert result.finished_at == pytest.approx(requested_at + 4 * 0.02)


async def test_an_immediate_keypress_leaves_between_ticks() -> None:
    h = Harness()
    h.tick(1)
    h.now += 0.007  # 7 ms after the last tick: the keypress's planned time
    future = h.session.send_keypress("5", tone_ms=40, immediately=True)
    first = [p for p, _ in h.transport.sent][-1]
    assert first.payload_type == 101 and first.marker
    assert TelephoneEvent.parse(first.payload).event == 5
    rest = h.tick(3)
    assert [p.payload_type for p in rest] == [101, 101, 101]  # the end packets, on the ticks
    assert (await future).started_at == pytest.approx(100.027)
    # Not immediately while another keypress is being sent: it waits its turn.
    busy = h.session.send_keypress("1", tone_ms=40)
    queued = h.session.send_keypress("2", tone_ms=40, immediately=True)
    assert [p.marker for p in h.tick(1)] == [True]
    await asyncio.sleep(0)
    assert not busy.done() and not queued.done()


async def test_queued_keypresses_go_back_to_back() -> None:
    h = Harness()
    first = h.session.send_keypress("1", tone_ms=40)
    second = h.session.send_keypress("#", tone_ms=40)
    packets = h.tick(9)
    events = [TelephoneEvent.parse(p.payload) for p in packets[:8]]
    assert [e.event for e in events] == [1] * 4 + [11] * 4
    assert [p.marker for p in packets[:8]] == [True, False, False, False] * 2
    assert packets[8].payload == g711.silence("PCMU")
    assert (await first).finished_at == pytest.approx(100.06)
    assert (await second).started_at == pytest.approx(100.08)


async def test_keypress_refusals() -> None:
    h = Harness(Negotiated("PCMU", 0, None, SDP_REMOTE, "sendrecv"))
    with pytest.raises(DtmfError, match="telephone-event"):
        h.session.send_keypress("1")
    h = Harness(Negotiated("PCMU", 0, 101, SDP_REMOTE, "recvonly"))
    with pytest.raises(DtmfError, match="direction"):
        h.session.send_keypress("1")
    assert h.tick(2) == []  # recvonly: we send nothing
    h = Harness()
    with pytest.raises(DtmfError):
        h.session.send_keypress("X")


def test_symmetric_rtp_latches_to_the_source_of_their_media() -> None:
    h = Harness()
    h.tick()
    h.receive(b"\x00garbage")  # malformed: no latch
    h.receive(RtpPacket(13, 1, 1, 9, b"\x00"))  # comfort noise, not negotiated: no latch
    assert not h.session.latched
    h.tick()
    h.receive(RtpPacket(0, 1, 160, 9, g711.silence("PCMU")))
    assert h.session.latched
    assert h.session.remote_address == NAT_REMOTE
    h.receive(RtpPacket(0, 2, 320, 9, g711.silence("PCMU")), addr=("192.0.2.66", 9))
    h.tick()
    addrs = [addr for _, addr in h.transport.sent]
    assert addrs == [SDP_REMOTE, SDP_REMOTE, NAT_REMOTE]  # a stray source does not steal it
    stats = h.session.stats
    assert (stats.malformed_received, stats.ignored_received, stats.packets_received) == (1, 1, 3)
    # A re-INVITE to a new address drops the latch; the same address keeps it.
    h.session.start(PARAMS)
    assert h.session.remote_address == NAT_REMOTE
    h.session.start(Negotiated("PCMU", 0, 101, ("203.0.113.6", 30000), "sendrecv"))
    assert h.session.remote_address == ("203.0.113.6", 30000)


def test_received_audio_goes_to_sinks_decoded() -> None:
    h = Harness()
    recorder = Recorder()
    frames: list[np.ndarray[Any, np.dtype[np.int16]]] = []
    h.session.add_audio_sink(recorder.write)
    remove = h.session.add_audio_sink(frames.append)
    audio = tone(160)
    h.receive(RtpPacket(0, 1, 0, 9, g711.encode("PCMU", audio)))
    h.receive(RtpPacket(8, 2, 160, 9, g711.encode("PCMA", audio)))  # the static PT decides
    remove()
    h.receive(RtpPacket(0, 3, 320, 9, g711.encode("PCMU", audio)))
    assert len(frames) == 2
    assert np.array_equal(frames[0], g711.decode("PCMU", g711.encode("PCMU", audio)))
    assert np.array_equal(frames[1], g711.decode("PCMA", g711.encode("PCMA", audio)))
    assert recorder.duration_ms == 60


def test_a_failing_sink_is_removed() -> None:
    h = Harness()
    calls = []

    def broken(pcm: object) -> None:
        calls.append(pcm)
        raise RuntimeError("boom")

    h.session.add_audio_sink(broken)
    h.receive(RtpPacket(0, 1, 0, 9, g711.silence("PCMU")))
    h.receive(RtpPacket(0, 2, 160, 9, g711.silence("PCMU")))
    assert len(calls) == 1


async def test_received_keypresses() -> None:
    h = Harness()
    stream = RtpStream(ssrc=9, sequence_number=1, timestamp=5000)
    sender = DtmfSender("7", 101, tone_ms=100)
    while (packet := sender.next_packet(stream)) is not None:
        h.receive(packet)
        stream.advance(160)
        h.tick()
    keypress = await asyncio.wait_for(h.session.keypresses.get(), 1)
    assert (keypress.key, keypress.duration_ms, keypress.ended) == ("7", 100, True)
    assert keypress.start_time == 100.0
    # One whose end packets never come is closed on a later tick, by timeout.
    sender = DtmfSender("8", 101, tone_ms=100)
    stream.advance(800)
    for _ in range(3):
        packet = sender.next_packet(stream)
        assert packet is not None
        h.receive(packet)
        h.tick()
    h.tick(12)
    assert [k.key for k in h.session.received_keypresses] == ["7", "8"]
    assert not h.session.received_keypresses[1].ended


async def test_stop_and_resume_keeps_rtp_time_real() -> None:
    h = Harness()
    h.tick(2)
    h.session.stop()
    assert h.session.state is RtpSessionState.OPEN
    assert h.tick(5) == []  # unsubscribed: our hand clock does not call it
    h.session.start(PARAMS)
    [packet] = h.tick()
    assert packet.timestamp == 1000 + 7 * 160
    assert packet.sequence_number == 0


async def test_close_resolves_everything() -> None:
    h = Harness()
    player = Player(tone(8000))
    h.session.play(player)
    future = h.session.send_keypress("5")
    h.tick(2)
    h.session.close()
    await asyncio.wait_for(h.session.wait_closed(), 1)
    result = await future
    assert not result.completed
    assert result.started_at == 100.0
    assert result.finished_at is None
    assert player.finished
    assert h.session.state is RtpSessionState.CLOSED
    assert h.ticker.subscribers == []
    h.session.close()  # idempotent
    with pytest.raises(RuntimeError):
        h.session.start(PARAMS)
    with pytest.raises(RuntimeError):
        h.session.send_keypress("1")
    assert h.session.local_address == ("127.0.0.1", 4000)
    with pytest.raises(RuntimeError, match="not bound"):
        _ = RtpSession(h.ticker).local_address


def test_play_replaces_and_stops_the_previous_source() -> None:
    h = Harness()
    first, second = Player(tone(1600)), Player(tone(1600))
    h.session.play(first)
    h.session.play(second)
    assert first.finished
    assert h.session.source is second
    h.session.stop_playing()
    assert second.finished
    assert h.session.source is None


def test_port_candidates_and_addresses() -> None:
    assert list(_candidate_ports(0, None)) == [0]
    ports = list(_candidate_ports(0, (10001, 10010)))
    assert sorted(ports) == [10002, 10004, 10006, 10008, 10010]
    with pytest.raises(ValueError):
        list(_candidate_ports(0, (10001, 10001)))
    assert _ip_literal("[2001:db8::1]") == "2001:db8::1"
    with pytest.raises(ValueError, match="not an IP"):
        _ip_literal("media.example.com")


async def test_a_taken_port_is_skipped_also_as_uvloop_reports_it() -> None:
    import errno
    import socket

    from voxflow.media.session import _address_in_use

    wrapped = OSError("could not bind to local_addr")
    wrapped.__cause__ = OSError(errno.EADDRINUSE, "Address already in use")
    assert _address_in_use(wrapped) and _address_in_use(OSError(errno.EADDRINUSE, "x"))
    assert not _address_in_use(OSError(errno.EACCES, "x"))
    # A range of two ports, one taken: the session always lands on the other.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        low = port - (port & 1)
        other = low + 2 if port == low else low
        for _ in range(5):
            session = await RtpSession.open(FakeTicker(), "127.0.0.1", port_range=(low, low + 2))
            assert session.local_address[1] in {other, low + 2} - {port}
            session.close()
            await session.wait_closed()


def test_received_keypresses_are_bounded() -> None:
    h = Harness()
    end = bytes(TelephoneEvent(1, 160, 10, end=True))
    for i in range(300):  # a far end sending 300 keypresses nobody consumes
        h.receive(RtpPacket(101, i, 160 * i, 9, end, marker=True))
    assert len(h.session.received_keypresses) == 256
    assert h.session.keypresses.qsize() == 256
    assert h.session.received_keypresses[-1].timestamp == 160 * 299
