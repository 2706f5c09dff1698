"""SDP (RFC 4566) and the offer/answer model (RFC 3264) for one G.711 audio stream.

:class:`SessionDescription` parses and serialises whole descriptions (``parse`` / ``__str__`` /
``__bytes__``), keeping every line it does not interpret so a parsed description prints back
the same lines. Lines are written in the order RFC 4566 §5 fixes (v o s i u e p c b t r z k a,
then each m= section with its i c b k a).

The offer/answer functions speak only PCMU, PCMA and telephone-event at 8 kHz:

* :func:`make_offer` — our INVITE's offer;
* :func:`negotiate` — what to send after the far end's answer (the answer's codec order wins,
  RFC 3264 §6.1; the telephone-event payload type is the answer's, it may differ from ours);
* :func:`answer_for` — the UAS side (the softphone): an answer to an offer, and what it implies.

``Negotiated.direction`` is always *our* direction: what we may do, after reversing the far end's
attribute (its ``recvonly`` is our ``sendonly``) and intersecting with what we offered.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, get_args

from voxflow.digits import ascii_digits

Codec = Literal["PCMU", "PCMA"]
Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
DIRECTIONS: tuple[Direction, ...] = get_args(Direction)
STATIC_PAYLOAD_TYPES: dict[Codec, int] = {"PCMU": 0, "PCMA": 8}  # RFC 3551 §6, table 4
CLOCK_RATE_HZ = 8000
TELEPHONE_EVENT = "telephone-event"
DTMF_EVENTS = "0-16"  # the 16 DTMF keys and flash (RFC 4733 §3.2)
PTIME_MS = 20
RTP_AVP = "RTP/AVP"
CRLF = "\r\n"

_SESSION_ORDER = "vosiuepcbtrzkam"
_MEDIA_ORDER = "icbka"
_ANY_ADDRESS = ("0.0.0.0", "::")  # noqa: S104 - c= 0.0.0.0 means "do not send" (RFC 3264 §8.4)


class SdpError(ValueError):
    """The text is not an SDP session description we can read; the message says why."""


class NegotiationError(ValueError):
    """Offer and answer have no usable audio stream in common (a SIP 488 situation)."""


# ---------------------------------------------------------------- lines


@dataclass(frozen=True)
class Origin:
    """``o=`` (RFC 4566 §5.2). Identifiers stay strings: we never do arithmetic on theirs."""

    username: str
    session_id: str
    session_version: str
    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"

    @classmethod
    def parse(cls, value: str) -> Origin:
        parts = value.split()
        if len(parts) != 6:
            raise SdpError(f"malformed o= line: {value!r}")
        username, session_id, version, nettype, addrtype, address = parts
        return cls(username, session_id, version, address, addrtype, nettype)

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True)
class Connection:
    """``c=`` (RFC 4566 §5.7); ``address`` keeps any ``/ttl`` suffix, ``host`` drops it."""

    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"

    @classmethod
    def parse(cls, value: str) -> Connection:
        parts = value.split()
        if len(parts) != 3:
            raise SdpError(f"malformed c= line: {value!r}")
        nettype, addrtype, address = parts
        if addrtype.upper() not in ("IP4", "IP6"):
            raise SdpError(f"unknown address type in c= line: {addrtype!r}")
        return cls(address, addrtype, nettype)

    @property
    def host(self) -> str:
        return self.address.split("/", 1)[0]

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True)
class Attribute:
    """``a=name`` or ``a=name:value`` (RFC 4566 §5.13)."""

    name: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> Attribute:
        name, sep, value = text.partition(":")
        return cls(name, value if sep else None)

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True)
class RtpMap:
    """``a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`` (RFC 4566 §6)."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, value: str) -> RtpMap:
        try:
            pt, spec = value.split(None, 1)
            encoding, rate, *rest = spec.strip().split("/")
            return cls(int(pt), encoding, int(rate), int(rest[0]) if rest else None)
        except ValueError:
            raise SdpError(f"malformed rtpmap: {value!r}") from None

    def __str__(self) -> str:
        channels = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{channels}"


# ---------------------------------------------------------------- descriptions


@dataclass
class MediaDescription:
    """One ``m=`` section (RFC 4566 §5.14) with its own lines."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)  # i= and k= (and unknown types)

    @classmethod
    def parse_m_line(cls, value: str) -> MediaDescription:
        parts = value.split()
        if len(parts) < 3:
            raise SdpError(f"malformed m= line: {value!r}")
        port_text, _, count_text = parts[1].partition("/")
        if not ascii_digits(port_text) or int(port_text) > 0xFFFF:
            raise SdpError(f"invalid port in m= line: {value!r}")
        if count_text and not ascii_digits(count_text):
            raise SdpError(f"invalid port count in m= line: {value!r}")
        count = int(count_text) if count_text else None
        return cls(parts[0], int(port_text), parts[2], parts[3:], count)

    def add_line(self, kind: str, value: str) -> None:
        if kind == "c":
            self.connection = Connection.parse(value)
        elif kind == "b":
            self.bandwidths.append(value)
        elif kind == "a":
            self.attributes.append(Attribute.parse(value))
        else:
            self.other.append((kind, value))

    @property
    def payload_types(self) -> list[int]:
        """The formats that are RTP payload type numbers, in the m= line's order."""
        return [int(fmt) for fmt in self.formats if ascii_digits(fmt)]

    def attribute(self, name: str) -> str | None:
        """The value of the first ``a=name:value`` (None when absent)."""
        return next((a.value for a in self.attributes if a.name == name), None)

    def rtpmaps(self) -> dict[int, RtpMap]:
        maps: dict[int, RtpMap] = {}
        for attr in self.attributes:
            if attr.name == "rtpmap" and attr.value is not None:
                rtpmap = RtpMap.parse(attr.value)
                maps.setdefault(rtpmap.payload_type, rtpmap)
        return maps

    def fmtp(self, payload_type: int) -> str | None:
        for attr in self.attributes:
            if attr.name == "fmtp" and attr.value is not None:
                pt, _, params = attr.value.partition(" ")
                if pt == str(payload_type):
                    return params.strip()
        return None

    @property
    def direction(self) -> Direction | None:
        return _direction_of(self.attributes)

    @property
    def ptime_ms(self) -> int | None:
        value = self.attribute("ptime")
        return int(value) if value is not None and ascii_digits(value.strip()) else None

    def lines(self) -> Iterator[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        yield " ".join(["m=" + self.media, port, self.proto, *self.formats])
        extra = [*self.other, *(("b", b) for b in self.bandwidths)]
        if self.connection is not None:
            extra.append(("c", str(self.connection)))
        extra.extend(("a", str(a)) for a in self.attributes)
        yield from _ordered(extra, _MEDIA_ORDER)


@dataclass
class SessionDescription:
    """A whole SDP body: session-level lines, then the media sections."""

    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    times: list[str] = field(default_factory=lambda: ["0 0"])
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)  # i u e p b r z k lines
    version: int = 0

    @classmethod
    def parse(cls, data: str | bytes) -> SessionDescription:
        """Parse an SDP body; CRLF or bare LF line ends, blank lines ignored."""
        lines = list(_split_lines(data))
        if not lines or lines[0] != ("v", "0"):
            raise SdpError("SDP must start with v=0")
        builder = _Builder()
        for kind, value in lines[1:]:
            builder.add(kind, value)
        return builder.build()

    @property
    def direction(self) -> Direction | None:
        return _direction_of(self.attributes)

    def lines(self) -> Iterator[str]:
        yield f"v={self.version}"
        yield f"o={self.origin}"
        yield f"s={self.session_name}"
        extra = [*self.other, *(("t", t) for t in self.times)]
        if self.connection is not None:
            extra.append(("c", str(self.connection)))
        extra.extend(("a", str(a)) for a in self.attributes)
        yield from _ordered(extra, _SESSION_ORDER)
        for media in self.media:
            yield from media.lines()

    def __str__(self) -> str:
        return CRLF.join(self.lines()) + CRLF

    def __bytes__(self) -> bytes:
        return str(self).encode()


class _Builder:
    """Collects parsed lines into a :class:`SessionDescription`."""

    def __init__(self) -> None:
        self.origin: Origin | None = None
        self.session = SessionDescription(Origin("-", "0", "0", "0.0.0.0"), times=[])  # noqa: S104
        self.current: MediaDescription | None = None

    def add(self, kind: str, value: str) -> None:
        if kind == "m":
            self.current = MediaDescription.parse_m_line(value)
            self.session.media.append(self.current)
        elif self.current is not None:
            self.current.add_line(kind, value)
        else:
            self._add_session_line(kind, value)

    def _add_session_line(self, kind: str, value: str) -> None:
        session = self.session
        if kind == "o":
            self.origin = Origin.parse(value)
        elif kind == "s":
            session.session_name = value
        elif kind == "c":
            session.connection = Connection.parse(value)
        elif kind == "t":
            session.times.append(value)
        elif kind == "a":
            session.attributes.append(Attribute.parse(value))
        elif kind == "v":
            raise SdpError("more than one v= line")
        else:
            session.other.append((kind, value))

    def build(self) -> SessionDescription:
        if self.origin is None:
            raise SdpError("SDP has no o= line")
        self.session.origin = self.origin
        return self.session


def _split_lines(data: str | bytes) -> Iterator[tuple[str, str]]:
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SdpError("SDP is not UTF-8 text") from None
    for raw in data.split("\n"):
        line = raw.rstrip("\r").strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SdpError(f"malformed SDP line: {line[:60]!r}")
        yield line[0], line[2:]


def _ordered(lines: Iterable[tuple[str, str]], order: str) -> Iterator[str]:
    """``x=value`` lines sorted by RFC 4566's type order (stable: same types keep their order)."""
    rank = {kind: i for i, kind in enumerate(order)}
    for kind, value in sorted(lines, key=lambda line: rank.get(line[0], len(order))):
        yield f"{kind}={value}"


def _direction_of(attributes: Iterable[Attribute]) -> Direction | None:
    for attr in attributes:
        for direction in DIRECTIONS:
            if attr.name == direction:
                return direction
    return None


def parse(data: str | bytes) -> SessionDescription:
    """Shorthand for :meth:`SessionDescription.parse`."""
    return SessionDescription.parse(data)


# ---------------------------------------------------------------- offer / answer


@dataclass(frozen=True)
class Negotiated:
    """The media both sides agreed on: what :class:`voxflow.media.session.RtpSession` needs."""

    codec: Codec
    payload_type: int  # the PT to send audio with
    dtmf_payload_type: int | None  # the PT to send telephone-events with; None: not accepted
    remote: tuple[str, int]  # the far end's RTP address from its SDP (latching may refine it)
    direction: Direction  # ours
    ptime_ms: int = PTIME_MS  # the far end's preference; voxflow always sends 20 ms


def make_offer(
    address: str,
    port: int,
    codecs: Iterable[Codec] = ("PCMU", "PCMA"),
    dtmf_pt: int | None = 101,
    *,
    session_id: int | None = None,
    version: int = 0,
    direction: Direction = "sendrecv",
    username: str = "voxflow",
    session_name: str = "voxflow",
) -> SessionDescription:
    """Our offer: one audio stream, the given codecs in order, telephone-event at ``dtmf_pt``.

    ``session_id`` defaults to a random number; a re-offer keeps it and raises ``version``.
    """
    sid = str(session_id if session_id is not None else secrets.randbelow(1 << 62))
    addrtype = _addrtype(address)
    payload_types = [STATIC_PAYLOAD_TYPES[codec] for codec in codecs]
    if not payload_types:
        raise ValueError("an offer needs at least one codec")
    media = MediaDescription("audio", port, RTP_AVP, [str(pt) for pt in payload_types])
    for codec, pt in zip(codecs, payload_types, strict=True):
        media.attributes.append(Attribute("rtpmap", str(RtpMap(pt, codec, CLOCK_RATE_HZ))))
    if dtmf_pt is not None:
        media.formats.append(str(dtmf_pt))
        media.attributes += _telephone_event_attributes(dtmf_pt, DTMF_EVENTS)
    media.attributes += [Attribute("ptime", str(PTIME_MS)), Attribute(direction)]
    return SessionDescription(
        origin=Origin(username, sid, str(version), address, addrtype),
        session_name=session_name,
        connection=Connection(address, addrtype),
        media=[media],
    )


def negotiate(offer: SessionDescription, answer: SessionDescription) -> Negotiated:
    """What to send after our ``offer`` got ``answer``; raises :class:`NegotiationError`."""
    index, ours = _first_audio(offer)
    if index >= len(answer.media):
        raise NegotiationError("the answer has no audio stream")
    theirs = answer.media[index]  # RFC 3264 §6: the answer's m= lines mirror the offer's
    if theirs.media != "audio" or theirs.port == 0:
        raise NegotiationError("the audio stream was rejected")
    if theirs.proto.upper() != ours.proto.upper():
        raise NegotiationError(f"the answer changed the transport to {theirs.proto}")
    offered = {_encoding(ours, pt)[0] for pt in ours.payload_types}
    choice = _pick_codec(theirs, offered)
    if choice is None:
        raise NegotiationError("the answer has no codec we offered")
    host = _media_host(answer, theirs)
    their_view = theirs.direction or answer.direction or "sendrecv"
    direction = _intersect(ours.direction or offer.direction or "sendrecv", _reverse(their_view))
    return Negotiated(
        codec=choice[0],
        payload_type=choice[1],
        dtmf_payload_type=_telephone_event_pt(theirs),
        remote=(host, theirs.port),
        direction=_without_send(direction) if host in _ANY_ADDRESS else direction,
        ptime_ms=theirs.ptime_ms or PTIME_MS,
    )


def answer_for(
    offer: SessionDescription,
    address: str,
    port: int,
    codecs: Iterable[Codec] = ("PCMU", "PCMA"),
    *,
    dtmf: bool = True,
    session_id: int | None = None,
    version: int = 0,
    username: str = "voxflow",
    session_name: str = "voxflow",
) -> tuple[SessionDescription, Negotiated]:
    """Answer an offer (the UAS side): accept the first audio stream we can, reject the rest.

    The codec is the offer's first one among ``codecs`` (the offerer's preference); the
    telephone-event payload type is the offer's. Raises :class:`NegotiationError` when no
    stream is acceptable (answer 488 then).
    """
    accepted: set[str] = set(codecs)
    sid = str(session_id if session_id is not None else secrets.randbelow(1 << 62))
    addrtype = _addrtype(address)
    answer = SessionDescription(
        origin=Origin(username, sid, str(version), address, addrtype),
        session_name=session_name,
        connection=Connection(address, addrtype),
    )
    negotiated: Negotiated | None = None
    for offered in offer.media:
        result = None if negotiated else _accept(offer, offered, port, accepted, dtmf)
        if result is None:  # RFC 3264 §6: a rejected stream keeps its place, with port 0
            answer.media.append(MediaDescription(offered.media, 0, offered.proto, offered.formats))
            continue
        media, negotiated = result
        answer.media.append(media)
    if negotiated is None:
        raise NegotiationError("the offer has no audio stream we can accept")
    return answer, negotiated


def _accept(
    offer: SessionDescription,
    offered: MediaDescription,
    port: int,
    accepted: set[str],
    dtmf: bool,
) -> tuple[MediaDescription, Negotiated] | None:
    """Our answer's section for one offered stream and what it implies, or None to reject."""
    usable = offered.media == "audio" and offered.port != 0 and offered.proto.upper() == RTP_AVP
    choice = _pick_codec(offered, accepted) if usable else None
    if choice is None:
        return None
    codec, pt = choice
    event_pt = _telephone_event_pt(offered) if dtmf else None
    media = MediaDescription("audio", port, RTP_AVP, [str(pt)])
    media.attributes.append(Attribute("rtpmap", str(RtpMap(pt, codec, CLOCK_RATE_HZ))))
    if event_pt is not None:
        media.formats.append(str(event_pt))
        events = offered.fmtp(event_pt) or DTMF_EVENTS
        media.attributes += _telephone_event_attributes(event_pt, events)
    direction = _reverse(offered.direction or offer.direction or "sendrecv")
    media.attributes += [Attribute("ptime", str(PTIME_MS)), Attribute(direction)]
    host = _media_host(offer, offered)
    ours = _without_send(direction) if host in _ANY_ADDRESS else direction
    negotiated = Negotiated(
        codec, pt, event_pt, (host, offered.port), ours, offered.ptime_ms or PTIME_MS
    )
    return media, negotiated


def _first_audio(description: SessionDescription) -> tuple[int, MediaDescription]:
    for index, media in enumerate(description.media):
        if media.media == "audio":
            return index, media
    raise NegotiationError("the offer has no audio stream")


def _encoding(media: MediaDescription, payload_type: int) -> tuple[str, int]:
    """(encoding name upper-cased, clock rate) of a PT: its rtpmap, else the static table."""
    rtpmap = media.rtpmaps().get(payload_type)
    if rtpmap is not None:
        return rtpmap.encoding.upper(), rtpmap.clock_rate
    for codec, static_pt in STATIC_PAYLOAD_TYPES.items():
        if static_pt == payload_type:
            return codec, CLOCK_RATE_HZ
    return "", 0


def _pick_codec(media: MediaDescription, acceptable: set[str]) -> tuple[Codec, int] | None:
    """The first PT of ``media``'s m= line that is PCMU or PCMA at 8 kHz and acceptable."""
    for pt in media.payload_types:
        name, rate = _encoding(media, pt)
        if rate != CLOCK_RATE_HZ or name not in acceptable:
            continue
        for codec in STATIC_PAYLOAD_TYPES:
            if codec == name:
                return codec, pt
    return None


def _telephone_event_pt(media: MediaDescription) -> int | None:
    rtpmaps = media.rtpmaps()
    return next((pt for pt in media.payload_types if _is_dtmf(rtpmaps.get(pt))), None)


def _is_dtmf(rtpmap: RtpMap | None) -> bool:
    if rtpmap is None:
        return False
    return rtpmap.encoding.lower() == TELEPHONE_EVENT and rtpmap.clock_rate == CLOCK_RATE_HZ


def _telephone_event_attributes(payload_type: int, events: str) -> list[Attribute]:
    return [
        Attribute("rtpmap", str(RtpMap(payload_type, TELEPHONE_EVENT, CLOCK_RATE_HZ))),
        Attribute("fmtp", f"{payload_type} {events}"),
    ]


def _media_host(description: SessionDescription, media: MediaDescription) -> str:
    connection = media.connection or description.connection
    if connection is None:
        raise NegotiationError("no c= line for the audio stream")
    return connection.host


def _addrtype(address: str) -> str:
    try:
        return "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"
    except ValueError:
        return "IP4"  # a domain name (RFC 4566 §5.7 allows one)


def _flags(direction: Direction) -> tuple[bool, bool]:
    """(send, receive) of a direction."""
    return direction in ("sendrecv", "sendonly"), direction in ("sendrecv", "recvonly")


def _direction(send: bool, receive: bool) -> Direction:
    if send:
        return "sendrecv" if receive else "sendonly"
    return "recvonly" if receive else "inactive"


def _reverse(direction: Direction) -> Direction:
    """The same stream seen from the other end."""
    send, receive = _flags(direction)
    return _direction(receive, send)


def _intersect(a: Direction, b: Direction) -> Direction:
    send_a, receive_a = _flags(a)
    send_b, receive_b = _flags(b)
    return _direction(send_a and send_b, receive_a and receive_b)


def _without_send(direction: Direction) -> Direction:
    return _direction(False, _flags(direction)[1])
