"""SIP requests and responses (RFC 3261 §7, §8, §20): parse bytes, build, serialise.

Rules of this module:

- :func:`parse_message` (and ``SipRequest.parse`` / ``SipResponse.parse``) turn one datagram's
  bytes into a message or raise :class:`MessageError`; no other exception escapes for any input.
  The caller logs and drops. A missing Content-Length means "the rest of the datagram" (§18.3);
  octets past Content-Length are ignored (RFC 4475 §3.1.1.8); a Content-Length larger than
  what arrived, negative, or given twice is an error (RFC 4475 §3.1.2.2, §3.1.2.3, §3.3.9).
- Header names are case-insensitive and compact forms are expanded (§7.3.3): the message
  keeps the long canonical name of every header it knows. Headers whose grammar is a
  comma-separated list (Via, Contact, Route, Allow, ...) are split into one entry per value,
  on commas outside quotes and angle brackets (§7.3.1); other headers are kept whole.
- Folded lines are unfolded, the CRLF and leading whitespace becoming one space (§7.3.1).
- The typed accessors (``vias``, ``from_``, ``to``, ``cseq``, ...) parse on demand. ``parse``
  runs each of them once, so on a parsed message they raise nothing; a missing header raises
  :class:`MessageError`, which ``validate`` reports first.
- ``validate`` is the semantic check that comes after parsing (RFC 4475 §3.1.2 and §3.3): it
  returns the :class:`Rejection` (status and reason) a UA should answer with, or ``None``.
- ``bytes(message)`` always writes a Content-Length that matches the body.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from voxflow.sip.uri import (
    TOKEN_CHARS,
    NameAddress,
    Params,
    SipUri,
    Uri,
    UriError,
    parse_header_params,
    parse_name_addr,
    parse_uri,
)

T = TypeVar("T")

SIP_VERSION = "SIP/2.0"
BRANCH_MAGIC = "z9hG4bK"  # §8.1.1.7: RFC 3261 branch identifiers start with the magic cookie
DEFAULT_MAX_FORWARDS = 70  # §8.1.1.6
MAX_CSEQ = 2**32 - 1  # §8.1.1.5: a 32-bit unsigned integer
MAX_MAX_FORWARDS = 255  # §20.22: 0-255
_MAX_DIGITS = 30  # longer numbers are never meaningful, and Python's int() refuses huge ones

# §7.3.3 compact forms, plus those of RFC 3841 (a, d, j), 3892 (b), 4474 (n, y), 6665 (o, u),
# 3515 (r) and 4028 (x).
COMPACT_FORMS = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

# Headers whose value is a comma-separated list (§7.3.1 and each header's grammar).
LIST_HEADERS = frozenset(
    {
        "Accept",
        "Accept-Contact",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Call-Info",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "Error-Info",
        "History-Info",
        "In-Reply-To",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Path",
        "Proxy-Require",
        "Reason",
        "Record-Route",
        "Reject-Contact",
        "Request-Disposition",
        "Require",
        "Route",
        "Security-Client",
        "Security-Server",
        "Security-Verify",
        "Service-Route",
        "Supported",
        "Unsupported",
        "Via",
        "Warning",
    }
)

_OTHER_HEADERS = (
    "Authentication-Info Authorization CSeq Call-ID Content-Disposition Content-Length "
    "Content-Type Date Event Expires From Identity Identity-Info MIME-Version Max-Forwards "
    "Min-Expires Min-SE Organization Priority Privacy Proxy-Authenticate Proxy-Authorization "
    "RAck RSeq Refer-To Referred-By Replaces Reply-To Retry-After Server Session-Expires "
    "Subject Subscription-State Timestamp To User-Agent WWW-Authenticate"
)
CANONICAL_NAMES = {name.lower(): name for name in (*LIST_HEADERS, *_OTHER_HEADERS.split())}

# Headers a message may carry at most once (§20 and RFC 4475 §3.3.8).
SINGLE_HEADERS = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Type")

REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

_TOKEN_CLASS = "[" + re.escape("".join(sorted(TOKEN_CHARS))) + "]+"
_VERSION = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
_STATUS = re.compile(r"[1-6][0-9]{2}")
_DIGITS = re.compile(r"[0-9]+")
_VIA = re.compile(
    rf"[ \t]*(?P<name>{_TOKEN_CLASS})[ \t]*/[ \t]*(?P<version>{_TOKEN_CLASS})"
    rf"[ \t]*/[ \t]*(?P<transport>{_TOKEN_CLASS})[ \t]+"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?:[ \t]*:[ \t]*(?P<port>[0-9]{1,5}))?"
)
_CSEQ = re.compile(rf"[ \t]*(?P<number>[0-9]+)[ \t]+(?P<method>{_TOKEN_CLASS})[ \t]*")
_MEDIA_TYPE = re.compile(rf"[ \t]*({_TOKEN_CLASS})[ \t]*/[ \t]*({_TOKEN_CLASS})[ \t]*")
# §25.1 rfc1123-date; RFC 4475 §3.1.2.12: "GMT" is the only time zone.
_DATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)


class MessageError(ValueError):
    """Bytes that are not a well-formed SIP message; the caller logs and drops them."""


def canonical_name(name: str) -> str:
    """The long, canonical spelling of a header name; unknown names are kept as they are."""
    lower = name.lower()
    lower = COMPACT_FORMS.get(lower, lower)
    return CANONICAL_NAMES.get(lower, name)


def _checked(value: str) -> str:
    # A CR or LF in a value we build would end the header line: header injection.
    if "\r" in value or "\n" in value:
        raise ValueError("a header value cannot contain CR or LF")
    return value


def _lookup_key(name: str) -> str:
    return canonical_name(name).lower()


def split_commas(value: str) -> list[str]:
    """Split on commas outside quoted strings and angle brackets (§7.3.1)."""
    parts: list[str] = []
    start, pos = 0, 0
    quoted = bracketed = False
    while pos < len(value):
        char = value[pos]
        if quoted:
            if char == "\\":
                pos += 1
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char in "<>":
            bracketed = char == "<"
        elif char == "," and not bracketed:
            parts.append(value[start:pos].strip(" \t"))
            start = pos + 1
        pos += 1
    parts.append(value[start:].strip(" \t"))
    return parts


class Headers:
    """Ordered header fields with case-insensitive names, compact forms expanded."""

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        self.version = 0  # bumped by every change: typed views parsed earlier are stale
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        """Append one header field, kept whole."""
        self._items.append((canonical_name(name), _checked(value)))
        self.version += 1

    def add_parsed(self, name: str, value: str) -> None:
        """Append a received header field, one entry per value for list headers."""
        name = canonical_name(name)
        if name in LIST_HEADERS:
            self._items.extend((name, item) for item in split_commas(value))
        else:
            self._items.append((name, value))
        self.version += 1

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``."""
        return next(iter(self.get_all(name)), default)

    def get_all(self, name: str) -> list[str]:
        wanted = _lookup_key(name)
        return [value for key, value in self._items if key.lower() == wanted]

    def get_list(self, name: str) -> list[str]:
        """Every comma-separated element of every ``name`` field, empty ones left out."""
        return [item for value in self.get_all(name) for item in split_commas(value) if item]

    def count(self, name: str) -> int:
        return len(self.get_all(name))

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` field by one, where the first one was (else at the end)."""
        wanted = _lookup_key(name)
        index = next((i for i, (key, _) in enumerate(self._items) if key.lower() == wanted), None)
        self.remove(name)
        entry = (canonical_name(name), _checked(value))
        self._items.insert(len(self._items) if index is None else index, entry)
        self.version += 1

    def remove(self, name: str) -> None:
        wanted = _lookup_key(name)
        self._items = [(key, value) for key, value in self._items if key.lower() != wanted]
        self.version += 1

    def copy(self) -> Headers:
        clone = Headers()
        clone._items = list(self._items)
        return clone

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def _int(text: str, what: str) -> int:
    text = text.strip(" \t")
    if not _DIGITS.fullmatch(text) or len(text) > _MAX_DIGITS:
        raise MessageError(f"{what} is not a number")
    return int(text)


def _typed(what: str, parser: Callable[[str], T], value: str) -> T:
    """Run a value parser, reporting a URI error as a :class:`MessageError`."""
    try:
        return parser(value)
    except UriError as exc:
        raise MessageError(f"{what}: {exc}") from exc


@dataclass(kw_only=True)
class Via:
    """One Via header field value (§20.42)."""

    host: str
    port: int | None = None
    transport: str = "UDP"
    params: Params = field(default_factory=Params)
    protocol: str = SIP_VERSION

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{self.params.serialise()}"

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The ``rport`` value a server filled in (RFC 3581); ``None`` when absent or empty."""
        value = self.params.get("rport")
        return int(value) if value and _DIGITS.fullmatch(value) and len(value) <= 5 else None

    def copy(self) -> Via:
        return Via(
            host=self.host,
            port=self.port,
            transport=self.transport,
            params=self.params.copy(),
            protocol=self.protocol,
        )

    @classmethod
    def parse(cls, text: str) -> Via:
        match = _VIA.match(text)
        if match is None:
            raise MessageError(f"malformed Via: {text[:80]!r}")
        port = int(match["port"]) if match["port"] else None
        if port is not None and port > 65_535:
            raise MessageError("Via port out of range")
        params = _typed("Via", lambda rest: parse_header_params(rest, match.end()), text)
        return cls(
            host=match["host"],
            port=port,
            transport=match["transport"].upper(),
            params=params,
            protocol=f"{match['name'].upper()}/{match['version']}",
        )


@dataclass(frozen=True)
class CSeq:
    """The CSeq header field (§20.16)."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"

    @classmethod
    def parse(cls, text: str) -> CSeq:
        match = _CSEQ.fullmatch(text)
        if match is None or len(match["number"]) > _MAX_DIGITS:
            raise MessageError(f"malformed CSeq: {text[:80]!r}")
        return cls(int(match["number"]), match["method"])


@dataclass(frozen=True)
class Rejection:
    """Why a parsed message cannot be processed: the status a UAS answers with, and why."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


class SipMessage:
    """Typed views of the headers, shared by requests and responses.

    Each view is parsed once and kept until the headers change (``Headers.version``): a
    received message is read many times (its transaction key, its dialog, its outcome), and
    parsing is most of what it costs. List views are handed out as fresh lists.
    """

    headers: Headers
    body: bytes
    version: str

    def _view(self, name: str, parse: Callable[[], T]) -> T:
        headers = self.headers
        cache: tuple[Headers, int, dict[str, object]] | None = self.__dict__.get("_views")
        if cache is None or cache[0] is not headers or cache[1] != headers.version:
            cache = (headers, headers.version, {})
            self.__dict__["_views"] = cache
        views = cache[2]
        if name in views:
            return views[name]  # type: ignore[return-value]
        value = views[name] = parse()
        return value

    def _start_line(self) -> str:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        # Content-Length always tells the body's true length, where the header was or last.
        length = f"Content-Length: {len(self.body)}"
        lines = [self._start_line()]
        written = False
        for name, value in self.headers:
            if name != "Content-Length":
                lines.append(f"{name}: {value}")
            elif not written:
                lines.append(length)
                written = True
        if not written:
            lines.append(length)
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + self.body

    def require(self, name: str) -> str:
        """The first value of a mandatory header; :class:`MessageError` when it is absent."""
        value = self.headers.get(name)
        if value is None:
            raise MessageError(f"missing {name} header")
        return value

    def _name_addrs(self, name: str) -> list[NameAddress]:
        return list(self._view(name, lambda: self._parse_name_addrs(name)))

    def _parse_name_addrs(self, name: str) -> list[NameAddress]:
        return [_typed(name, parse_name_addr, value) for value in self.headers.get_all(name)]

    @property
    def vias(self) -> list[Via]:
        return list(self._view("vias", lambda: [Via.parse(v) for v in self.headers.get_all("Via")]))

    @property
    def via(self) -> Via:
        """The top Via."""
        return self._view("via", lambda: Via.parse(self.require("Via")))

    @property
    def from_(self) -> NameAddress:
        return self._view("from", lambda: _typed("From", parse_name_addr, self.require("From")))

    @property
    def to(self) -> NameAddress:
        return self._view("to", lambda: _typed("To", parse_name_addr, self.require("To")))

    @property
    def call_id(self) -> str:
        return self._view("call-id", self._parse_call_id)

    def _parse_call_id(self) -> str:
        value = self.require("Call-ID").strip(" \t")
        if not value or any(char in " \t" for char in value):
            raise MessageError("malformed Call-ID")
        return value

    @property
    def cseq(self) -> CSeq:
        return self._view("cseq", lambda: CSeq.parse(self.require("CSeq")))

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        return None if value is None else _int(value, "Max-Forwards")

    @property
    def contacts(self) -> list[NameAddress]:
        """The Contact values; the REGISTER wildcard ``*`` (§10.2.2) is left out."""
        return list(self._view("contacts", self._parse_contacts))

    def _parse_contacts(self) -> list[NameAddress]:
        values = [value for value in self.headers.get_all("Contact") if value.strip() != "*"]
        return [_typed("Contact", parse_name_addr, value) for value in values]

    @property
    def contact(self) -> NameAddress | None:
        contacts = self.contacts
        return contacts[0] if contacts else None

    @property
    def routes(self) -> list[NameAddress]:
        return self._name_addrs("Route")

    @property
    def record_routes(self) -> list[NameAddress]:
        return self._name_addrs("Record-Route")

    @property
    def content_type(self) -> str | None:
        """The media type, lower-cased and without parameters (``application/sdp``)."""
        value = self.headers.get("Content-Type")
        if value is None:
            return None
        match = _MEDIA_TYPE.match(value)
        if match is None or (match.end() < len(value) and value[match.end()] != ";"):
            raise MessageError("malformed Content-Type")
        return f"{match[1]}/{match[2]}".lower()

    def check_syntax(self) -> None:
        """Parse every header the typed accessors read (``parse`` calls this)."""
        _ = (self.vias, self.contacts, self.routes, self.record_routes, self.content_type)
        checks: list[tuple[str, Callable[[], object]]] = [
            ("From", lambda: self.from_),
            ("To", lambda: self.to),
            ("Call-ID", lambda: self.call_id),
            ("CSeq", lambda: self.cseq),
        ]
        for name, check in checks:
            if name in self.headers:
                check()

    def validate(self, *, supported: Collection[str] | None = None) -> Rejection | None:
        """The first reason this message must be refused (RFC 4475 §3.1.2, §3.3), or None.

        ``supported``: the option tags this UA supports; when given, a request whose Require
        names another one is refused with 420 (§8.2.2.3).
        """
        try:
            return self._first_problem(supported)
        except MessageError as exc:  # a message built by hand may still hold bad values
            return Rejection(400, str(exc))

    def _first_problem(self, supported: Collection[str] | None) -> Rejection | None:
        for check in self._checks(supported):
            problem = check()
            if problem is not None:
                return problem
        return None

    def _checks(self, supported: Collection[str] | None) -> list[Callable[[], Rejection | None]]:
        return [self._check_version, self._check_required, self._check_single, self._check_cseq]

    def _check_version(self) -> Rejection | None:
        if self.version.upper() != SIP_VERSION:
            return Rejection(505, f"SIP version {self.version} is not supported")
        return None

    def _check_required(self) -> Rejection | None:
        # §8.1.1: To, From, CSeq, Call-ID and Via are mandatory. Max-Forwards is too, but an
        # RFC 2543 peer leaves it out and must still be served (RFC 4475 §3.4.1).
        for name in ("To", "From", "Call-ID", "CSeq", "Via"):
            if name not in self.headers:
                return Rejection(400, f"Missing {name} header")
        return None

    def _check_single(self) -> Rejection | None:
        for name in SINGLE_HEADERS:
            if self.headers.count(name) > 1:
                return Rejection(400, f"Multiple {name} headers")
        return None

    def _check_cseq(self) -> Rejection | None:
        if self.cseq.number > MAX_CSEQ:
            return Rejection(400, "CSeq number out of range")
        return None

    def _check_date(self) -> Rejection | None:
        date = self.headers.get("Date")
        if date is not None and not _DATE.fullmatch(date.strip()):
            return Rejection(400, "Date is not an RFC 1123 date in GMT")
        return None


@dataclass
class SipRequest(SipMessage):
    """A SIP request (§7.1)."""

    method: str
    uri: Uri
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    @classmethod
    def parse(cls, data: bytes) -> SipRequest:
        message = parse_message(data)
        if not isinstance(message, SipRequest):
            raise MessageError("expected a request, got a response")
        return message

    def _checks(self, supported: Collection[str] | None) -> list[Callable[[], Rejection | None]]:
        return [
            *super()._checks(supported),
            self._check_method,
            self._check_max_forwards,
            self._check_branch,
            self._check_date,
            self._check_request_uri,
            lambda: self._check_require(supported),
        ]

    def _check_method(self) -> Rejection | None:
        if self.cseq.method != self.method:  # RFC 4475 §3.1.2.17, §3.1.2.18
            return Rejection(400, "CSeq method does not match the request method")
        return None

    def _check_max_forwards(self) -> Rejection | None:
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        text = value.strip(" \t")
        if not _DIGITS.fullmatch(text) or len(text) > _MAX_DIGITS or int(text) > MAX_MAX_FORWARDS:
            return Rejection(400, "Max-Forwards is not a number from 0 to 255")
        return None

    def _check_branch(self) -> Rejection | None:
        if self.via.branch == BRANCH_MAGIC:  # RFC 4475 §3.2.1: the cookie and nothing else
            return Rejection(400, "Via branch has no transaction identifier")
        return None

    def _check_request_uri(self) -> Rejection | None:
        if not isinstance(self.uri, SipUri):
            return Rejection(416, f"URI scheme {self.uri.scheme} is not supported")
        if self.uri.headers:  # §19.1.1 table: headers are not allowed in a Request-URI
            return Rejection(400, "Request-URI contains headers")
        return None

    def _check_require(self, supported: Collection[str] | None) -> Rejection | None:
        # §8.2.2.3: ACK and CANCEL never cause a 420.
        if supported is None or self.method in ("ACK", "CANCEL"):
            return None
        wanted = {tag.lower() for tag in supported}
        unknown = [tag for tag in self.headers.get_list("Require") if tag.lower() not in wanted]
        if unknown:
            return Rejection(420, "Bad Extension", (("Unsupported", ", ".join(unknown)),))
        return None


@dataclass
class SipResponse(SipMessage):
    """A SIP response (§7.2)."""

    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    def _start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    @classmethod
    def parse(cls, data: bytes) -> SipResponse:
        message = parse_message(data)
        if not isinstance(message, SipResponse):
            raise MessageError("expected a response, got a request")
        return message

    @property
    def provisional(self) -> bool:
        return self.status < 200

    @property
    def success(self) -> bool:
        return 200 <= self.status < 300

    def _checks(self, supported: Collection[str] | None) -> list[Callable[[], Rejection | None]]:
        return [*super()._checks(supported), self._check_date]


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_message(data: bytes) -> SipRequest | SipResponse:
    """Parse one datagram (or one framed stream message) into a request or a response."""
    start = _skip_leading_crlf(data)
    head_end, body_start = _head_end(data, start)
    text = data[start:head_end].decode("utf-8", "surrogateescape")
    start_line, *lines = _logical_lines(text)
    headers = Headers()
    for line in lines:
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not name or any(char not in TOKEN_CHARS for char in name):
            raise MessageError(f"malformed header line: {line[:80]!r}")
        headers.add_parsed(name, value.strip(" \t"))
    message = _start_line(start_line, headers, _body(data, body_start, headers))
    message.check_syntax()
    return message


def _skip_leading_crlf(data: bytes) -> int:
    # §7.5: CRLFs before the start-line are ignored (keep-alives on streams).
    pos = 0
    while pos < len(data) and data[pos] in b"\r\n":
        pos += 1
    return pos


def _head_end(data: bytes, start: int) -> tuple[int, int]:
    """Where the header section ends and the body starts (CRLF CRLF, or bare LF LF)."""
    found = [
        (index, index + len(separator))
        for separator in (b"\r\n\r\n", b"\n\n")
        if (index := data.find(separator, start)) >= 0
    ]
    if not found:
        raise MessageError("no empty line after the header fields")
    return min(found)


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    for raw in text.split("\n"):
        line = raw.removesuffix("\r")
        if line[:1] in (" ", "\t"):  # §7.3.1 line folding
            if len(lines) < 2:
                raise MessageError("the start line cannot be folded")
            lines[-1] += " " + line.strip(" \t")
        else:
            lines.append(line)
    if not lines or not lines[0]:
        raise MessageError("empty start line")
    return lines


def _body(data: bytes, start: int, headers: Headers) -> bytes:
    lengths = headers.get_all("Content-Length")
    if not lengths:
        return data[start:]  # §18.3: over UDP the body runs to the end of the datagram
    if len(lengths) > 1:
        raise MessageError("more than one Content-Length")
    length = _int(lengths[0], "Content-Length")
    if length > len(data) - start:
        raise MessageError("Content-Length is larger than the body")
    return data[start : start + length]


def _start_line(line: str, headers: Headers, body: bytes) -> SipRequest | SipResponse:
    if line[:4].upper() == "SIP/":
        return _status_line(line, headers, body)
    # §7.1: Method SP Request-URI SP SIP-Version, single spaces (RFC 4475 §3.1.2.8-10).
    parts = line.split(" ")
    if len(parts) != 3:
        raise MessageError("Request-Line is not Method SP Request-URI SP SIP-Version")
    method, uri_text, version = parts
    if not method or any(char not in TOKEN_CHARS for char in method):
        raise MessageError("malformed method")
    if not _VERSION.fullmatch(version):
        raise MessageError("malformed SIP-Version")
    uri = _typed("Request-URI", parse_uri, uri_text)
    return SipRequest(method, uri, headers, body, version.upper())


def _status_line(line: str, headers: Headers, body: bytes) -> SipResponse:
    # §7.2: SIP-Version SP Status-Code SP Reason-Phrase; the phrase may be empty.
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not _VERSION.fullmatch(version) or not _STATUS.fullmatch(code):
        raise MessageError(f"malformed Status-Line: {line[:80]!r}")
    return SipResponse(int(code), reason, headers, body, version.upper())


# ---------------------------------------------------------------------------------------------
# Building


def new_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie and random hex (§8.1.1.7)."""
    return BRANCH_MAGIC + secrets.token_hex(8)


def new_tag() -> str:
    """A fresh From/To tag: at least 32 bits of randomness (§19.3)."""
    return secrets.token_hex(6)


def new_call_id(host: str | None = None) -> str:
    """A fresh, globally unique Call-ID (§8.1.1.4)."""
    value = secrets.token_hex(12)
    return f"{value}@{host}" if host else value


def make_request(
    method: str,
    uri: Uri,
    *,
    from_: NameAddress,
    to: NameAddress,
    via: Via,
    call_id: str | None = None,
    cseq: int = 1,
    contact: NameAddress | None = None,
    routes: Iterable[NameAddress] = (),
    max_forwards: int = DEFAULT_MAX_FORWARDS,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> SipRequest:
    """A request outside a dialog (§8.1.1): a From tag and a Via branch are added if missing."""
    if from_.tag is None:
        from_ = from_.with_tag(new_tag())
    if via.branch is None:
        via = via.copy()
        via.params["branch"] = new_branch()
    fields = Headers([("Via", str(via)), ("Max-Forwards", str(max_forwards))])
    for route in routes:
        fields.add("Route", str(route))
    fields.add("From", str(from_))
    fields.add("To", str(to))
    fields.add("Call-ID", call_id or new_call_id())
    fields.add("CSeq", f"{cseq} {method}")
    if contact is not None:
        fields.add("Contact", str(contact))
    _add_extra(fields, headers, body, content_type)
    return SipRequest(method, uri, fields, body)


def _add_extra(
    fields: Headers, extra: Iterable[tuple[str, str]], body: bytes, content_type: str | None
) -> None:
    for name, value in extra:
        fields.add(name, value)
    if body and content_type is None and "Content-Type" not in fields:
        raise ValueError("a body needs a Content-Type")
    if content_type is not None:
        fields.set("Content-Type", content_type)
    fields.set("Content-Length", str(len(body)))


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    contact: NameAddress | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> SipResponse:
    """A response to ``request`` (§8.2.6.2).

    Via (all, in order), From, Call-ID and CSeq are copied; To is copied and gets ``to_tag``
    when it has none. A dialog-creating response (101-299 to an INVITE without a To tag) also
    copies Record-Route (§12.1.1); a 100 copies Timestamp (§8.2.6.1).
    """
    fields = Headers()
    for via in request.headers.get_all("Via"):
        fields.add("Via", via)
    to = request.to
    if to_tag is not None and to.tag is None:
        to = to.with_tag(to_tag)
    dialog_creating = request.method == "INVITE" and request.to.tag is None
    if dialog_creating and 100 < status < 300:
        for route in request.headers.get_all("Record-Route"):
            fields.add("Record-Route", route)
    fields.add("From", request.require("From"))
    fields.add("To", str(to))
    fields.add("Call-ID", request.require("Call-ID"))
    fields.add("CSeq", request.require("CSeq"))
    timestamp = request.headers.get("Timestamp")
    if status == 100 and timestamp is not None:
        fields.add("Timestamp", timestamp)
    if contact is not None:
        fields.add("Contact", str(contact))
    _add_extra(fields, headers, body, content_type)
    phrase = REASON_PHRASES.get(status, "") if reason is None else reason
    return SipResponse(status, phrase, fields, body)
