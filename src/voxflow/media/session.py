"""The RTP session of one call leg: a UDP socket that sends one 20 ms frame per media-clock tick.

What goes out on each tick, in priority order:

1. the next packet of a keypress being sent (RFC 4733, :class:`~voxflow.media.dtmf.DtmfSender`);
   the audio source is not read meanwhile, so a message pauses and resumes around a keypress;
2. the next frame of the current audio source (:class:`~voxflow.media.player.Player`, a bridge);
3. encoded silence, so that the far end and carriers' media timeouts always see packets.

One :class:`~voxflow.media.rtp.RtpStream` numbers all three, and its timestamp moves on by one
frame per tick whatever was sent, so sequence numbers and timestamps stay continuous (a clock
stall moves the timestamp by the ticks skipped: RTP time follows real time).

Symmetric RTP (RFC 4961): packets go to the address of the SDP answer until the far end's RTP
arrives, then to the address it comes from (latching), which is what gets media through NATs.

Received audio is decoded to PCM and handed to the audio sinks (a recorder, a bridge);
telephone-events go to the :class:`~voxflow.media.dtmf.DtmfReceiver`, whose keypresses land in
:attr:`RtpSession.keypresses`.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import secrets
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, TypeVar, cast

from voxflow.media import g711
from voxflow.media.clock import TickSubscriber
from voxflow.media.dtmf import (
    DEFAULT_TONE_MS,
    DEFAULT_VOLUME,
    DtmfError,
    DtmfReceiver,
    DtmfSender,
    ReceivedKeypress,
)
from voxflow.media.g711 import FRAME_SAMPLES, Codec, Pcm
from voxflow.media.rtp import RtpError, RtpPacket, RtpStream

log = logging.getLogger("voxflow.media.session")

Address = tuple[str, int]
AudioSink = Callable[[Pcm], None]
_CODEC_OF_PT: dict[int, Codec] = {pt: codec for codec, pt in g711.STATIC_PAYLOAD_TYPES.items()}
_SENDING = ("sendrecv", "sendonly")
MAX_KEYPRESSES = 256  # received keypresses kept (history) and queued (unconsumed)


class MediaParams(Protocol):
    """What the offer/answer settled; :class:`voxflow.sip.sdp.Negotiated` has this shape."""

    @property
    def codec(self) -> Codec: ...
    @property
    def payload_type(self) -> int: ...
    @property
    def dtmf_payload_type(self) -> int | None: ...
    @property
    def remote(self) -> Address: ...
    @property
    def direction(self) -> str:
        """Our direction: sendrecv, sendonly, recvonly or inactive."""
        ...


class AudioSource(Protocol):
    def read_frame(self) -> Pcm | None:
        """The next 160-sample frame, or None for "nothing now" (silence is sent)."""
        ...

    def stop(self) -> None: ...


SourceT = TypeVar("SourceT", bound=AudioSource)


class Ticker(Protocol):
    """The shared media clock (:class:`voxflow.media.clock.MediaClock`)."""

    def subscribe(self, subscriber: TickSubscriber) -> None: ...
    def unsubscribe(self, subscriber: TickSubscriber) -> None: ...


class RtpSessionState(Enum):
    OPEN = "open"  # bound, receiving; not sending (no answer yet, or stopped)
    ACTIVE = "active"  # sending one frame per tick
    CLOSED = "closed"


@dataclass(frozen=True)
class SentKeypress:
    """How one keypress went out. Times are the event loop's (``loop.time()``).

    ``started_at`` is when the first packet (marker bit) left; ``finished_at`` when the third end
    packet left. ``completed`` is False when the session closed first (then times may be None).
    """

    key: str
    tone_ms: int
    requested_at: float
    started_at: float | None
    finished_at: float | None
    completed: bool


@dataclass
class SessionStats:
    packets_sent: int = 0
    audio_frames_sent: int = 0
    silence_frames_sent: int = 0
    dtmf_packets_sent: int = 0
    packets_received: int = 0
    malformed_received: int = 0
    ignored_received: int = 0  # unknown payload type
    send_errors: int = 0


@dataclass
class _Keypress:
    sender: DtmfSender
    requested_at: float
    future: asyncio.Future[SentKeypress]
    started_at: float | None = None

    def result(self, finished_at: float | None, *, completed: bool) -> SentKeypress:
        sender = self.sender
        tone_ms = sender.total_samples * 1000 // g711.SAMPLE_RATE_HZ
        return SentKeypress(
            sender.key, tone_ms, self.requested_at, self.started_at, finished_at, completed
        )


@dataclass
class _Remote:
    """Where packets go: the SDP address until latching replaces it (RFC 4961)."""

    sdp: Address | None = None
    latched: Address | None = None

    @property
    def target(self) -> Address | None:
        return self.latched or self.sdp


@dataclass
class _Keys:
    """Keypresses heard from the far end (bounded: the far end cannot grow our memory)."""

    receiver: DtmfReceiver = field(default_factory=DtmfReceiver)
    history: deque[ReceivedKeypress] = field(default_factory=lambda: deque(maxlen=MAX_KEYPRESSES))
    queue: asyncio.Queue[ReceivedKeypress] = field(
        default_factory=lambda: asyncio.Queue(MAX_KEYPRESSES)
    )


class RtpSession(asyncio.DatagramProtocol):
    """One call leg's RTP. Create with :meth:`open`, then :meth:`start` once the answer is in."""

    def __init__(
        self,
        clock: Ticker,
        *,
        time: Callable[[], float] | None = None,
        stream: RtpStream | None = None,
        name: str = "",
    ) -> None:
        self.name = name
        self.state = RtpSessionState.OPEN
        self.stats = SessionStats()
        self._clock = clock
        self._time = time
        self._stream = stream or RtpStream()
        self._transport: asyncio.DatagramTransport | None = None
        self._local: Address | None = None
        self._params: MediaParams | None = None
        self._remote = _Remote()
        self._source: AudioSource | None = None
        self._sinks: list[AudioSink] = []
        self._keypresses: deque[_Keypress] = deque()
        self._keys = _Keys()
        self._last_tick: int | None = None
        self._first_packet = True
        self._closed = asyncio.Event()

    # ------------------------------------------------------------ lifecycle

    @classmethod
    async def open(
        cls,
        clock: Ticker,
        host: str = "0.0.0.0",  # noqa: S104 - media must be reachable from the far end
        port: int = 0,
        *,
        port_range: tuple[int, int] | None = None,
        time: Callable[[], float] | None = None,
        name: str = "",
    ) -> RtpSession:
        """Bind a UDP socket on ``host``: ``port`` (0 = any), or an even port of ``port_range``
        (inclusive bounds, tried from a random place so concurrent calls rarely collide)."""
        session = cls(clock, time=time, name=name)
        loop = asyncio.get_running_loop()
        for candidate in _candidate_ports(port, port_range):
            try:
                await loop.create_datagram_endpoint(lambda: session, local_addr=(host, candidate))
            except OSError as exc:
                if _address_in_use(exc) and port_range is not None:
                    continue
                raise
            return session
        raise OSError(errno.EADDRINUSE, f"no free RTP port in {port_range}")

    @property
    def local_address(self) -> Address:
        """The bound (host, port), for the SDP offer or answer (still known after close)."""
        if self._local is None:
            raise RuntimeError("RTP session is not bound")
        return self._local

    def start(self, params: MediaParams) -> None:
        """Apply the negotiated media and start sending on every tick (again after a re-INVITE)."""
        if self.state is RtpSessionState.CLOSED:
            raise RuntimeError("RTP session is closed")
        remote = (_ip_literal(params.remote[0]), params.remote[1])
        if remote != self._remote.sdp:
            self._remote = _Remote(sdp=remote)  # a new SDP address (re-INVITE) drops the latch
        self._params = params
        self._set_state(RtpSessionState.ACTIVE)
        self._clock.subscribe(self)

    def stop(self) -> None:
        """Stop sending (keep receiving); :meth:`start` resumes."""
        self._clock.unsubscribe(self)
        if self.state is RtpSessionState.ACTIVE:
            self._set_state(RtpSessionState.OPEN)

    def close(self) -> None:
        """Stop everything: the source stops, pending keypresses resolve as not completed."""
        if self.state is RtpSessionState.CLOSED:
            return
        self._shut_down()
        if self._transport is not None:
            self._transport.close()  # connection_lost() follows and sets wait_closed()
        else:
            self._closed.set()

    def _shut_down(self) -> None:
        self.stop()
        self._set_state(RtpSessionState.CLOSED)
        self.stop_playing()
        while self._keypresses:
            pending = self._keypresses.popleft()
            if not pending.future.done():
                pending.future.set_result(pending.result(None, completed=False))

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def now(self) -> float:
        return self._time() if self._time is not None else asyncio.get_running_loop().time()

    def _set_state(self, state: RtpSessionState) -> None:
        if state is self.state:
            return
        log.info(
            "rtp session %s: %s -> %s",
            self.name,
            self.state.value,
            state.value,
            extra={"action": "rtp_state"},
        )
        self.state = state

    # ------------------------------------------------------------ what we send

    @property
    def remote_address(self) -> Address | None:
        """Where packets go now (the latched address once the far end's RTP has arrived)."""
        return self._remote.target

    @property
    def latched(self) -> bool:
        return self._remote.latched is not None

    @property
    def source(self) -> AudioSource | None:
        return self._source

    def play(self, source: SourceT) -> SourceT:
        """Send audio from ``source`` (replacing and stopping the previous one)."""
        if self._source is not None and self._source is not source:
            self._source.stop()
        self._source = source
        return source

    def stop_playing(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            source.stop()

    def send_keypress(
        self,
        key: str,
        tone_ms: int = DEFAULT_TONE_MS,
        *,
        volume: int = DEFAULT_VOLUME,
        immediately: bool = False,
    ) -> asyncio.Future[SentKeypress]:
        """Queue one RFC 4733 keypress; the future completes once its end packets are out.

        Keypresses queued together go out back to back, each starting on its own tick. With
        ``immediately`` and nothing else queued, the first packet leaves now rather than on the
        next tick: the dialer calls this at the keypress's planned time, and a keypress plan
        must not be off by up to a tick (20 ms). The rest of the event follows on the ticks.
        Raises :class:`~voxflow.media.dtmf.DtmfError` for a bad key or tone, or when the far
        end did not accept telephone-event.
        """
        if self.state is RtpSessionState.CLOSED:
            raise RuntimeError("RTP session is closed")
        if self._params is None or self._params.dtmf_payload_type is None:
            raise DtmfError("the far end did not negotiate telephone-event (RFC 4733)")
        if self._params.direction not in _SENDING:
            raise DtmfError(f"media direction {self._params.direction} does not allow sending")
        sender = DtmfSender(key, self._params.dtmf_payload_type, tone_ms=tone_ms, volume=volume)
        future: asyncio.Future[SentKeypress] = asyncio.get_running_loop().create_future()
        self._keypresses.append(_Keypress(sender, self.now(), future))
        target = self._remote.target
        if immediately and len(self._keypresses) == 1 and target is not None:
            self._send_keypress_packet(target)
        return future

    def on_tick(self, tick_index: int, now: float) -> None:
        """One media-clock tick: expire stale received events, then send one frame."""
        self._deliver_keys(self._keys.receiver.poll(now))
        if self._last_tick is not None:
            self._stream.advance(FRAME_SAMPLES * (tick_index - self._last_tick))
        self._last_tick = tick_index
        params, target = self._params, self._remote.target
        if params is None or target is None or params.direction not in _SENDING:
            return
        if self._keypresses:
            self._send_keypress_packet(target)
        else:
            self._send_audio(params, target)

    def _send_audio(self, params: MediaParams, target: Address) -> None:
        frame = self._source.read_frame() if self._source is not None else None
        if frame is None:
            payload = g711.silence(params.codec)
            self.stats.silence_frames_sent += 1
        else:
            payload = g711.encode(params.codec, frame)
            self.stats.audio_frames_sent += 1
        # RFC 3551 §4.1: the marker bit flags the first packet of a talkspurt; ours is one
        # continuous talkspurt, so only the very first packet carries it.
        marker, self._first_packet = self._first_packet, False
        self._send(self._stream.next_packet(params.payload_type, payload, marker=marker), target)

    def _send_keypress_packet(self, target: Address) -> None:
        pending = self._keypresses[0]
        packet = pending.sender.next_packet(self._stream)
        if packet is None:  # cannot happen: a finished keypress leaves the queue at once
            self._keypresses.popleft()
            return
        self._send(packet, target)
        self._first_packet = False
        self.stats.dtmf_packets_sent += 1
        sent_at = self.now()
        if pending.started_at is None:
            pending.started_at = sent_at
        if pending.sender.done:
            self._keypresses.popleft()
            if not pending.future.done():
                pending.future.set_result(pending.result(sent_at, completed=True))

    def _send(self, packet: RtpPacket, target: Address) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.sendto(bytes(packet), target)
        self.stats.packets_sent += 1

    # ------------------------------------------------------------ what we receive

    @property
    def keypresses(self) -> asyncio.Queue[ReceivedKeypress]:
        """Keypresses from the far end, in order, for a consumer that awaits them."""
        return self._keys.queue

    @property
    def received_keypresses(self) -> list[ReceivedKeypress]:
        """Every keypress received so far (a consumer draining the queue does not empty this)."""
        return list(self._keys.history)

    def add_audio_sink(self, sink: AudioSink) -> Callable[[], None]:
        """Hand every received audio frame (decoded PCM) to ``sink``; returns the remover."""
        self._sinks.append(sink)

        def remove() -> None:
            if sink in self._sinks:
                self._sinks.remove(sink)

        return remove

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            self.stats.malformed_received += 1
            return
        self.stats.packets_received += 1
        now = self.now()
        dtmf_pt = self._params.dtmf_payload_type if self._params is not None else None
        if packet.payload_type == dtmf_pt:
            self._latch(addr)
            self._deliver_keys(self._keys.receiver.feed(packet, now))
        elif packet.payload_type in _CODEC_OF_PT:
            self._latch(addr)
            self._deliver_audio(_CODEC_OF_PT[packet.payload_type], packet.payload)
        else:
            self.stats.ignored_received += 1

    def _latch(self, addr: tuple[str | Any, int]) -> None:
        # Latch once, on the first packet of a payload type we negotiated (RFC 4961 §4); a
        # stream that later moves needs a new SDP (re-INVITE), so a stray packet cannot
        # steal the media.
        if self._remote.latched is None and self._remote.sdp is not None:
            source = (str(addr[0]), int(addr[1]))
            self._remote.latched = source
            if source != self._remote.sdp:
                log.info(
                    "rtp session %s latched to %s:%d (SDP said %s:%d)",
                    self.name,
                    *source,
                    *self._remote.sdp,
                    extra={"action": "rtp_latch"},
                )

    def _deliver_audio(self, codec: Codec, payload: bytes) -> None:
        if not self._sinks:
            return
        pcm = g711.decode(codec, payload)
        for sink in tuple(self._sinks):
            try:
                sink(pcm)
            except Exception:
                log.exception("audio sink failed; removed", extra={"action": "rtp_sink"})
                self._sinks.remove(sink)

    def _deliver_keys(self, keys: list[ReceivedKeypress]) -> None:
        for keypress in keys:
            self._keys.history.append(keypress)
            if self._keys.queue.full():
                log.warning("rtp session %s: keypress queue full", self.name)
                continue
            self._keys.queue.put_nowait(keypress)
            log.info(
                "rtp session %s received keypress %s (%d ms)",
                self.name,
                keypress.key,
                keypress.duration_ms,
                extra={"action": "dtmf_received"},
            )

    # ------------------------------------------------------------ asyncio plumbing

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector transport does not subclass DatagramTransport, but is one.
        self._transport = cast(asyncio.DatagramTransport, transport)
        host, port = transport.get_extra_info("sockname")[:2]
        self._local = (str(host), int(port))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the far end may not be listening yet. Keep going.
        self.stats.send_errors += 1
        log.debug("rtp session %s: %s", self.name, exc, extra={"action": "rtp_error"})

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self.state is not RtpSessionState.CLOSED:
            self._shut_down()
        self._closed.set()


def _address_in_use(exc: OSError) -> bool:
    """EADDRINUSE, also as uvloop reports it (errno None, the real error as the cause)."""
    cause = exc.__cause__
    return exc.errno == errno.EADDRINUSE or (
        isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE
    )


def _candidate_ports(port: int, port_range: tuple[int, int] | None) -> Iterator[int]:
    """The ports to try: ``port`` alone, or every even port of the range from a random one."""
    if port_range is None:
        yield port
        return
    low, high = port_range
    first_even = low + (low & 1)
    count = (high - first_even) // 2 + 1 if high >= first_even else 0  # RFC 3550 §11: even
    if count <= 0:
        raise ValueError(f"no even port in {port_range}")
    offset = secrets.randbelow(count)
    for i in range(count):
        yield first_even + 2 * ((offset + i) % count)


def _ip_literal(host: str) -> str:
    """The remote must be an IP address: a name would make ``sendto`` block on DNS."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        raise ValueError(f"RTP remote is not an IP address: {host!r}") from None
