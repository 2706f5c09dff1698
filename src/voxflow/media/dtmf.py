"""RFC 4733 telephone-events: DTMF keypresses carried as RTP packets, no I/O.

Sender rules (RFC 4733 §2.5.1), one packet per 20 ms packetisation interval:

* every packet of one event carries the RTP timestamp of the event's start, and the first one
  has the marker bit (§2.5.1.2, transmission of event packets);
* each update reports the duration so far, growing by one packet (160 samples) each time, the
  last one the full tone length (§2.5.1.2);
* the final packet has the E bit and is sent three times in a row with the final duration, one
  per interval (§2.5.1.4);
* every packet, the end retransmissions too, takes the next RTP sequence number (§2.5.1: the
  sequence number moves on for each packet sent, so receivers can count losses).

Receiver (§2.5.2): packets are grouped by RTP timestamp, so the three end packets and any
late updates of an event already reported are ignored; an event whose first packet was lost
starts at the first packet seen; an event whose end packets were all lost is closed when no
packet has come for ``timeout_s`` (or when the next event starts).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from voxflow.media.rtp import RtpPacket, RtpStream

KEYS = "0123456789*#ABCD"  # event codes 0-15, RFC 4733 §3.2 table 7
EVENT_CODES = {key: code for code, key in enumerate(KEYS)}
DEFAULT_VOLUME = 10  # -10 dBm0
DEFAULT_TONE_MS = 200
END_PACKET_COUNT = 3  # RFC 4733 §2.5.1.4
MAX_DURATION_SAMPLES = 0xFFFF  # beyond this an event needs segments (§2.5.1.3); we never send one
RECEIVE_TIMEOUT_S = 0.2
_REPORTED_MEMORY = 32  # timestamps of reported events kept to drop their late packets

_PAYLOAD = struct.Struct("!BBH")


class DtmfError(ValueError):
    """A keypress that cannot be sent, or a telephone-event payload that cannot be read."""


@dataclass(frozen=True)
class TelephoneEvent:
    """The 4-octet telephone-event payload (RFC 4733 §2.3)."""

    event: int
    duration: int  # in RTP timestamp units (samples at 8 kHz)
    volume: int = DEFAULT_VOLUME  # 0-63, the power level in -dBm0
    end: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255:
            raise DtmfError(f"event code out of range: {self.event}")
        if not 0 <= self.volume <= 63:
            raise DtmfError(f"volume out of range: {self.volume}")
        if not 0 <= self.duration <= MAX_DURATION_SAMPLES:
            raise DtmfError(f"duration out of range: {self.duration}")

    @classmethod
    def parse(cls, data: bytes) -> TelephoneEvent:
        # §2.3: one event per packet; a longer payload (RFC 2198 redundancy) is not negotiated.
        if len(data) < _PAYLOAD.size:
            raise DtmfError(f"telephone-event payload too short: {len(data)} bytes")
        event, flags, duration = _PAYLOAD.unpack_from(data)
        return cls(event, duration, flags & 0x3F, bool(flags & 0x80))

    def __bytes__(self) -> bytes:
        # The R bit (0x40) is reserved: sent as zero, ignored on receipt.
        return _PAYLOAD.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


def event_code(key: str) -> int:
    """The RFC 4733 event code of a DTMF key (``0``-``9``, ``*``, ``#``, ``A``-``D``)."""
    code = EVENT_CODES.get(key.upper()) if len(key) == 1 else None
    if code is None:
        raise DtmfError(f"not a DTMF key: {key!r}")
    return code


def key_of(code: int) -> str | None:
    """The DTMF key of an event code, or None for non-DTMF events (flash, tones)."""
    return KEYS[code] if 0 <= code < len(KEYS) else None


class DtmfSender:
    """Sends one keypress: call :meth:`next_packet` once per packetisation interval until None.

    Pure: it holds no clock and no socket. The caller owns the :class:`RtpStream` (so sequence
    numbers stay continuous with audio) and advances its timestamp by one frame every tick.
    """

    def __init__(
        self,
        key: str,
        payload_type: int,
        *,
        tone_ms: int = DEFAULT_TONE_MS,
        volume: int = DEFAULT_VOLUME,
        frame_samples: int = 160,
        clock_rate: int = 8000,
    ) -> None:
        self.key = key
        self.payload_type = payload_type
        self.code = event_code(key)
        self.volume = volume
        self.frame_samples = frame_samples
        self.total_samples = tone_ms * clock_rate // 1000
        if not frame_samples <= self.total_samples <= MAX_DURATION_SAMPLES:
            raise DtmfError(f"tone length out of range: {tone_ms} ms")
        TelephoneEvent(self.code, 0, volume)  # validates the volume now, not at the first tick
        self._sent = 0
        self._end_sent = 0
        self._timestamp: int | None = None

    @property
    def started(self) -> bool:
        return self._sent > 0

    @property
    def done(self) -> bool:
        return self._end_sent >= END_PACKET_COUNT

    @property
    def packets_total(self) -> int:
        """How many packets (ticks) the keypress takes, the end retransmissions included."""
        updates = -(-self.total_samples // self.frame_samples)
        return updates + END_PACKET_COUNT - 1

    def next_packet(self, stream: RtpStream) -> RtpPacket | None:
        """The packet for this tick, or None when the keypress is over."""
        if self.done:
            return None
        if self._timestamp is None:
            self._timestamp = stream.timestamp  # the event starts at this tick's sampling instant
        duration = min((self._sent + 1) * self.frame_samples, self.total_samples)
        end = duration == self.total_samples
        payload = TelephoneEvent(self.code, duration, self.volume, end)
        packet = stream.next_packet(
            self.payload_type, bytes(payload), marker=self._sent == 0, timestamp=self._timestamp
        )
        self._sent += 1
        self._end_sent += int(end)
        return packet


@dataclass(frozen=True)
class ReceivedKeypress:
    """A keypress heard from the far end.

    ``start_time`` is the local time the first packet of the event arrived (the marker packet,
    unless it was lost: ``marker_seen`` says which); ``duration_ms`` is the last duration the
    sender reported; ``ended`` is False when the event was closed by timeout, not an E bit.
    """

    key: str
    start_time: float
    duration_ms: int
    timestamp: int
    marker_seen: bool
    ended: bool


@dataclass
class _Pending:
    code: int
    timestamp: int
    start_time: float
    last_time: float
    duration: int
    marker_seen: bool


class DtmfReceiver:
    """Reassembles keypresses from telephone-event packets of one SSRC."""

    def __init__(self, *, clock_rate: int = 8000, timeout_s: float = RECEIVE_TIMEOUT_S) -> None:
        self.clock_rate = clock_rate
        self.timeout_s = timeout_s
        self._pending: _Pending | None = None
        self._reported: deque[int] = deque(maxlen=_REPORTED_MEMORY)

    def feed(self, packet: RtpPacket, now: float) -> list[ReceivedKeypress]:
        """Take one telephone-event packet; returns the keypresses it completes (0, 1 or 2)."""
        try:
            event = TelephoneEvent.parse(packet.payload)
        except DtmfError:
            return []
        if packet.timestamp in self._reported:
            return []  # a retransmitted end packet or a late update of a reported event
        done: list[ReceivedKeypress | None] = []
        pending = self._pending
        if pending is not None and pending.timestamp != packet.timestamp:
            done.append(self._close(pending, ended=False))  # its end packets were lost
            pending = None
        if pending is None:
            pending = _Pending(event.event, packet.timestamp, now, now, 0, packet.marker)
            self._pending = pending
        pending.duration = max(pending.duration, event.duration)  # updates may arrive reordered
        pending.last_time = now
        pending.marker_seen |= packet.marker
        if event.end:
            done.append(self._close(pending, ended=True))
        return [keypress for keypress in done if keypress is not None]

    def poll(self, now: float) -> list[ReceivedKeypress]:
        """Close an event whose packets stopped coming without an end packet."""
        pending = self._pending
        if pending is None or now - pending.last_time < self.timeout_s:
            return []
        keypress = self._close(pending, ended=False)
        return [keypress] if keypress is not None else []

    def _close(self, pending: _Pending, *, ended: bool) -> ReceivedKeypress | None:
        """Forget the pending event; its keypress, or None for a non-DTMF event (flash...)."""
        self._pending = None
        self._reported.append(pending.timestamp)
        key = key_of(pending.code)
        if key is None:
            return None
        return ReceivedKeypress(
            key=key,
            start_time=pending.start_time,
            duration_ms=pending.duration * 1000 // self.clock_rate,
            timestamp=pending.timestamp,
            marker_seen=pending.marker_seen,
            ended=ended,
        )
