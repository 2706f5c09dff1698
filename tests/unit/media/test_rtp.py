from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxflow.media.rtp import (
    RtpError,
    RtpExtension,
    RtpPacket,
    RtpStream,
    seq_add,
    seq_diff,
    ts_add,
    ts_diff,
)

# A PCMU packet as captured from the wire: V=2, M=1, PT=0, seq 0x1234, ts 0x000000A0, SSRC
# 0xDEADBEEF, then 4 payload octets.
CAPTURED = bytes.fromhex("80801234000000a0deadbeef") + b"\xff\xfe\x7f\x00"
# RFC 4733 telephone-event: PT 101, seq 7, ts 8000, SSRC 1, event 5, E bit, volume 10, 1600.
CAPTURED_EVENT = bytes.fromhex("806500070000 1f40 00000001".replace(" ", "")) + bytes.fromhex(
    "058a0640"
)


def test_parse_captured_packet() -> None:
    packet = RtpPacket.parse(CAPTURED)
    assert packet == RtpPacket(
        payload_type=0,
        sequence_number=0x1234,
        timestamp=160,
        ssrc=0xDEADBEEF,
        payload=b"\xff\xfe\x7f\x00",
        marker=True,
    )
    assert bytes(packet) == CAPTURED


def test_parse_captured_event_packet() -> None:
    packet = RtpPacket.parse(CAPTURED_EVENT)
    assert (packet.payload_type, packet.sequence_number, packet.timestamp) == (101, 7, 8000)
    assert not packet.marker
    assert packet.payload == bytes.fromhex("058a0640")
    assert bytes(packet) == CAPTURED_EVENT


def test_csrc_extension_and_padding_round_trip() -> None:
    packet = RtpPacket(
        payload_type=8,
        sequence_number=65535,
        timestamp=2**32 - 1,
        ssrc=42,
        payload=b"abc",
        marker=False,
        csrc=(1, 2, 3),
        extension=RtpExtension(0xBEDE, b"\x10\xaa\x00\x00"),
        padding_size=5,
    )
    data = bytes(packet)
    assert data[0] == 0x80 | 0x20 | 0x10 | 3  # V=2, P, X, CC=3
    assert len(data) == 12 + 12 + 4 + 4 + 3 + 5
    assert data[-1] == 5
    assert RtpPacket.parse(data) == packet


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (b"\x80\x00" + bytes(9), "too short"),
        (bytes.fromhex("40000000000000000000000000"), "version"),
        (bytes.fromhex("83000000000000000000000000"), "CSRC"),  # CC=3, no list
        (bytes.fromhex("90000000000000000000000000"), "extension header"),
        (bytes.fromhex("9000000000000000000000000000000100"), "extension data"),
        (bytes.fromhex("a0000000000000000000000000"), "padding"),  # count 0
        (bytes.fromhex("a0000000000000000000000000ff"), "padding"),  # more than there is
        (bytes.fromhex("a0000000000000000000000000"[:24]), "padding"),  # P bit, nothing after
    ],
)
def test_malformed_packets_raise_rtp_error(data: bytes, reason: str) -> None:
    with pytest.raises(RtpError, match=reason):
        RtpPacket.parse(data)


def test_out_of_range_fields_are_refused() -> None:
    with pytest.raises(RtpError):
        RtpPacket(payload_type=128, sequence_number=0, timestamp=0, ssrc=0)
    with pytest.raises(RtpError):
        RtpPacket(payload_type=0, sequence_number=1 << 16, timestamp=0, ssrc=0)
    with pytest.raises(RtpError):
        RtpPacket(payload_type=0, sequence_number=0, timestamp=0, ssrc=0, csrc=tuple(range(16)))
    with pytest.raises(RtpError):
        RtpExtension(1, b"abc")


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_rtp_error_only(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpError:
        return
    assert RtpPacket.parse(bytes(packet)) == packet


@given(
    st.builds(
        RtpPacket,
        payload_type=st.integers(0, 127),
        sequence_number=st.integers(0, 0xFFFF),
        timestamp=st.integers(0, 2**32 - 1),
        ssrc=st.integers(0, 2**32 - 1),
        payload=st.binary(max_size=64),
        marker=st.booleans(),
        csrc=st.lists(st.integers(0, 2**32 - 1), max_size=15).map(tuple),
        extension=st.none()
        | st.builds(
            RtpExtension,
            profile=st.integers(0, 0xFFFF),
            data=st.integers(0, 4).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
        ),
        padding_size=st.integers(0, 255),
    )
)
def test_round_trip(packet: RtpPacket) -> None:
    assert RtpPacket.parse(bytes(packet)) == packet


def test_sequence_and_timestamp_wrap() -> None:
    assert seq_add(65535, 1) == 0
    assert seq_add(0, -1) == 65535
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(100, 100) == 0
    assert seq_diff(32767, 0) == 32767
    assert seq_diff(32768, 0) == -32768
    assert ts_add(2**32 - 80, 160) == 80
    assert ts_diff(80, 2**32 - 80) == 160
    assert ts_diff(2**32 - 80, 80) == -160


def test_stream_numbers_packets_and_wraps() -> None:
    stream = RtpStream(ssrc=7, sequence_number=65535, timestamp=2**32 - 160)
    first = stream.next_packet(0, b"x", marker=True)
    stream.advance(160)
    second = stream.next_packet(0, b"y")
    event = stream.next_packet(101, b"e", timestamp=1234)
    assert (first.sequence_number, first.timestamp, first.marker) == (65535, 2**32 - 160, True)
    assert (second.sequence_number, second.timestamp, second.marker) == (0, 0, False)
    assert (event.sequence_number, event.timestamp, event.ssrc) == (1, 1234, 7)
    assert stream.timestamp == 0


def test_stream_starts_at_random_values() -> None:
    streams = [RtpStream() for _ in range(8)]
    assert len({s.ssrc for s in streams}) > 1
    assert len({s.sequence_number for s in streams}) > 1
