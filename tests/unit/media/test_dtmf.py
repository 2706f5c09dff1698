from __future__ import annotations

import pytest

from voxflow.media.dtmf import (
    DtmfError,
    DtmfReceiver,
    DtmfSender,
    TelephoneEvent,
    event_code,
    key_of,
)
from voxflow.media.rtp import RtpPacket, RtpStream

PT = 101


def send_all(sender: DtmfSender, stream: RtpStream) -> list[RtpPacket]:
    """Drive the sender as the session does: one call per tick, timestamp advancing."""
    packets = []
    while (packet := sender.next_packet(stream)) is not None:
        packets.append(packet)
        stream.advance(160)
    return packets


def events(packets: list[RtpPacket]) -> list[TelephoneEvent]:
    return [TelephoneEvent.parse(p.payload) for p in packets]


def test_payload_round_trip_and_wire_layout() -> None:
    event = TelephoneEvent(event=5, duration=1600, volume=10, end=True)
    assert bytes(event) == bytes.fromhex("058a0640")
    assert TelephoneEvent.parse(bytes(event)) == event
    assert TelephoneEvent.parse(bytes.fromhex("0b0a00a0")) == TelephoneEvent(11, 160, 10, False)
    # The reserved R bit is ignored on receipt.
    assert TelephoneEvent.parse(bytes.fromhex("01ca0140")) == TelephoneEvent(1, 320, 10, True)


def test_payload_errors() -> None:
    with pytest.raises(DtmfError):
        TelephoneEvent.parse(b"\x01\x0a")
    with pytest.raises(DtmfError):
        TelephoneEvent(1, 0, volume=64)
    with pytest.raises(DtmfError):
        TelephoneEvent(1, 0x10000)


def test_key_codes() -> None:
    assert [event_code(k) for k in "0123456789*#ABCD"] == list(range(16))
    assert event_code("a") == 12
    assert key_of(11) == "#"
    assert key_of(16) is None  # flash
    for bad in ("", "12", "E", "x"):
        with pytest.raises(DtmfError):
            event_code(bad)


def test_sender_follows_rfc4733() -> None:
    stream = RtpStream(ssrc=9, sequence_number=65530, timestamp=1000)
    sender = DtmfSender("1", PT, tone_ms=200)
    packets = send_all(sender, stream)
    payloads = events(packets)

    assert len(packets) == 12 == sender.packets_total  # 10 updates, the last sent 3 times
    assert [p.marker for p in packets] == [True] + [False] * 11
    assert {p.timestamp for p in packets} == {1000}  # the event's start, every packet
    assert {p.payload_type for p in packets} == {PT}
    assert [p.sequence_number for p in packets] == [
        (65530 + i) % 65536 for i in range(12)
    ]  # every packet a new number, across the wrap
    assert [e.duration for e in payloads] == [160 * i for i in range(1, 11)] + [1600, 1600]
    assert [e.end for e in payloads] == [False] * 9 + [True] * 3
    assert {(e.event, e.volume) for e in payloads} == {(1, 10)}
    assert sender.done
    assert sender.next_packet(stream) is None
    assert stream.timestamp == 1000 + 12 * 160  # the caller's timeline moved on meanwhile


def test_sender_tone_not_a_multiple_of_the_packet() -> None:
    sender = DtmfSender("#", PT, tone_ms=250, volume=7)
    payloads = events(send_all(sender, RtpStream()))
    assert [e.duration for e in payloads] == [160 * i for i in range(1, 13)] + [2000] * 3
    assert {(e.event, e.volume) for e in payloads} == {(11, 7)}


def test_shortest_tone_is_one_packet_sent_three_times() -> None:
    packets = send_all(DtmfSender("D", PT, tone_ms=20), RtpStream())
    assert [p.marker for p in packets] == [True, False, False]
    assert [(e.duration, e.end) for e in events(packets)] == [(160, True)] * 3


@pytest.mark.parametrize(
    ("key", "tone_ms", "volume"), [("E", 200, 10), ("1", 10, 10), ("1", 9000, 10), ("1", 200, 64)]
)
def test_sender_refuses_bad_requests(key: str, tone_ms: int, volume: int) -> None:
    with pytest.raises(DtmfError):
        DtmfSender(key, PT, tone_ms=tone_ms, volume=volume)


# ---------------------------------------------------------------- receiver


def keypress_packets(
    key: str, timestamp: int, first_seq: int, tone_ms: int = 200
) -> list[RtpPacket]:
    return send_all(
        DtmfSender(key, PT, tone_ms=tone_ms),
        RtpStream(ssrc=1, sequence_number=first_seq, timestamp=timestamp),
    )


def feed(
    receiver: DtmfReceiver, packets: list[RtpPacket], start: float = 0.0
) -> list[tuple[str, float, int, bool]]:
    got = []
    for i, packet in enumerate(packets):
        for k in receiver.feed(packet, start + 0.02 * i):
            got.append((k.key, k.start_time, k.duration_ms, k.ended))
    return got


def test_receiver_reports_each_keypress_once() -> None:
    receiver = DtmfReceiver()
    packets = keypress_packets("1", 8000, 10) + keypress_packets("1", 16000, 22, tone_ms=100)
    got = feed(receiver, packets, start=5.0)
    assert got == [("1", 5.0, 200, True), ("1", pytest.approx(5.24), 100, True)]
    assert receiver.poll(100.0) == []


def test_receiver_lost_first_packet() -> None:
    receiver = DtmfReceiver()
    packets = keypress_packets("5", 8000, 10)[1:]
    keys = [k for i, p in enumerate(packets) for k in receiver.feed(p, 1.0 + 0.02 * i)]
    assert len(keys) == 1
    assert (keys[0].key, keys[0].duration_ms, keys[0].marker_seen) == ("5", 200, False)
    assert keys[0].start_time == 1.0


def test_receiver_lost_end_packets_times_out() -> None:
    receiver = DtmfReceiver(timeout_s=0.2)
    packets = keypress_packets("9", 8000, 10)[:9]  # no end packet at all
    assert feed(receiver, packets, start=0.0) == []
    assert receiver.poll(0.16 + 0.19) == []
    [keypress] = receiver.poll(0.16 + 0.21)
    assert (keypress.key, keypress.duration_ms, keypress.ended) == ("9", 180, False)
    # Straggling packets of that event (the end packets, late) are not a second keypress.
    assert feed(receiver, keypress_packets("9", 8000, 10)[9:], start=1.0) == []


def test_receiver_new_event_closes_one_without_end() -> None:
    receiver = DtmfReceiver()
    first = keypress_packets("1", 8000, 10)[:5]
    second = keypress_packets("2", 9600, 15)
    got = feed(receiver, first + second)
    assert [(key, ms, ended) for key, _, ms, ended in got] == [("1", 100, False), ("2", 200, True)]


def test_receiver_handles_reordering_and_duplicates() -> None:
    receiver = DtmfReceiver()
    packets = keypress_packets("*", 8000, 10)
    shuffled = [
        packets[0],
        packets[2],
        packets[1],
        packets[2],
        *packets[3:9],
        packets[10],
        packets[9],
    ]
    keys = [k for p in shuffled for k in receiver.feed(p, 0.0)]
    assert [(k.key, k.duration_ms) for k in keys] == [("*", 200)]


def test_receiver_ignores_garbage_and_non_dtmf_events() -> None:
    receiver = DtmfReceiver()
    assert receiver.feed(RtpPacket(PT, 1, 1, 1, payload=b"\x01"), 0.0) == []
    flash = RtpPacket(PT, 2, 800, 1, payload=bytes(TelephoneEvent(16, 800, 10, True)), marker=True)
    assert receiver.feed(flash, 0.0) == []
    assert receiver.poll(10.0) == []
