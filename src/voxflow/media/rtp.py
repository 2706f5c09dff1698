"""RTP packets (RFC 3550 §5.1) and the sending side of one RTP stream.

:class:`RtpPacket` is a wire format in the aiortc style: a dataclass with :meth:`RtpPacket.parse`
and ``__bytes__``, round-trip tested. Everything that comes off the network is hostile: any
malformed datagram raises :class:`RtpError` and nothing else.

Sequence numbers wrap at 2^16 and timestamps at 2^32 (RFC 3550 §5.1); the helpers below do that
arithmetic so no caller writes ``& 0xFFFF`` by hand.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass, field

RTP_VERSION = 2
HEADER_SIZE = 12
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
MAX_CSRC = 15
MAX_PAYLOAD_TYPE = 127

_HEADER = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")


class RtpError(ValueError):
    """The datagram is not a valid RTP packet; the message says why."""


@dataclass(frozen=True)
class RtpExtension:
    """A header extension (RFC 3550 §5.3.1): a 16-bit profile word and whole 32-bit words."""

    profile: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.profile <= 0xFFFF:
            raise RtpError(f"extension profile out of range: {self.profile}")
        if len(self.data) % 4 or len(self.data) > 4 * 0xFFFF:
            raise RtpError("extension data must be whole 32-bit words")


@dataclass(frozen=True)
class RtpPacket:
    """One RTP packet. ``padding_size`` counts the padding octets including the count octet."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding_size: int = 0

    def __post_init__(self) -> None:
        _check_range("payload type", self.payload_type, MAX_PAYLOAD_TYPE)
        _check_range("sequence number", self.sequence_number, SEQ_MOD - 1)
        _check_range("timestamp", self.timestamp, TS_MOD - 1)
        _check_range("SSRC", self.ssrc, TS_MOD - 1)
        _check_range("padding size", self.padding_size, 255)
        if len(self.csrc) > MAX_CSRC:
            raise RtpError(f"too many CSRCs: {len(self.csrc)}")
        for source in self.csrc:
            _check_range("CSRC", source, TS_MOD - 1)

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Decode one datagram; raises :class:`RtpError` for anything malformed."""
        if len(data) < HEADER_SIZE:
            raise RtpError(f"packet too short: {len(data)} bytes")
        first, second, seq, timestamp, ssrc = _HEADER.unpack_from(data)
        if first >> 6 != RTP_VERSION:
            raise RtpError(f"unsupported RTP version {first >> 6}")
        csrc_count = first & 0x0F
        pos = HEADER_SIZE + 4 * csrc_count
        if len(data) < pos:
            raise RtpError("CSRC list is truncated")
        csrc = struct.unpack_from(f"!{csrc_count}I", data, HEADER_SIZE)
        extension = None
        if first & 0x10:
            extension, pos = _parse_extension(data, pos)
        end, padding_size = _payload_end(data, pos, has_padding=bool(first & 0x20))
        return cls(
            payload_type=second & 0x7F,
            sequence_number=seq,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[pos:end]),
            marker=bool(second & 0x80),
            csrc=tuple(csrc),
            extension=extension,
            padding_size=padding_size,
        )

    def __bytes__(self) -> bytes:
        first = RTP_VERSION << 6 | len(self.csrc)
        if self.padding_size:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        second = self.payload_type | (0x80 if self.marker else 0)
        parts = [
            _HEADER.pack(first, second, self.sequence_number, self.timestamp, self.ssrc),
            struct.pack(f"!{len(self.csrc)}I", *self.csrc),
        ]
        if self.extension is not None:
            ext = self.extension
            parts.append(_EXTENSION_HEADER.pack(ext.profile, len(ext.data) // 4) + ext.data)
        parts.append(self.payload)
        if self.padding_size:
            parts.append(bytes(self.padding_size - 1) + bytes([self.padding_size]))
        return b"".join(parts)


def _check_range(name: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise RtpError(f"{name} out of range: {value}")


def _parse_extension(data: bytes, pos: int) -> tuple[RtpExtension, int]:
    if len(data) < pos + _EXTENSION_HEADER.size:
        raise RtpError("extension header is truncated")
    profile, words = _EXTENSION_HEADER.unpack_from(data, pos)
    start = pos + _EXTENSION_HEADER.size
    end = start + 4 * words
    if len(data) < end:
        raise RtpError("extension data is truncated")
    return RtpExtension(profile, bytes(data[start:end])), end


def _payload_end(data: bytes, pos: int, *, has_padding: bool) -> tuple[int, int]:
    """Where the payload ends and how many padding octets follow it (RFC 3550 §5.1, P bit)."""
    if not has_padding:
        return len(data), 0
    if len(data) == pos:
        raise RtpError("padding bit set but no padding")
    count = data[-1]
    if count == 0 or count > len(data) - pos:
        raise RtpError(f"invalid padding length {count}")
    return len(data) - count, count


# ---------------------------------------------------------------- modular arithmetic


def seq_add(seq: int, delta: int) -> int:
    """``seq + delta`` modulo 2^16."""
    return (seq + delta) % SEQ_MOD


def seq_diff(a: int, b: int) -> int:
    """The signed distance ``a - b`` between two sequence numbers, in [-2^15, 2^15)."""
    return (a - b + SEQ_MOD // 2) % SEQ_MOD - SEQ_MOD // 2


def ts_add(timestamp: int, delta: int) -> int:
    """``timestamp + delta`` modulo 2^32."""
    return (timestamp + delta) % TS_MOD


def ts_diff(a: int, b: int) -> int:
    """The signed distance ``a - b`` between two timestamps, in [-2^31, 2^31)."""
    return (a - b + TS_MOD // 2) % TS_MOD - TS_MOD // 2


# ---------------------------------------------------------------- one outgoing stream


@dataclass
class RtpStream:
    """The sending state of one SSRC: the next sequence number and the current media timestamp.

    ``timestamp`` is the sampling instant of the frame being sent now; the owner advances it by
    the frame length on every clock tick, whatever is sent, so the timeline stays continuous
    across audio, telephone-events and silence. Initial values are random (RFC 3550 §5.1).
    """

    ssrc: int = field(default_factory=lambda: secrets.randbits(32))
    sequence_number: int = field(default_factory=lambda: secrets.randbits(16))
    timestamp: int = field(default_factory=lambda: secrets.randbits(32))

    def next_packet(
        self,
        payload_type: int,
        payload: bytes,
        *,
        marker: bool = False,
        timestamp: int | None = None,
    ) -> RtpPacket:
        """A packet with the next sequence number (and by default the current timestamp)."""
        packet = RtpPacket(
            payload_type=payload_type,
            sequence_number=self.sequence_number,
            timestamp=self.timestamp if timestamp is None else timestamp,
            ssrc=self.ssrc,
            payload=payload,
            marker=marker,
        )
        self.sequence_number = seq_add(self.sequence_number, 1)
        return packet

    def advance(self, samples: int) -> None:
        """Move the media timestamp on by ``samples`` sampling periods."""
        self.timestamp = ts_add(self.timestamp, samples)
