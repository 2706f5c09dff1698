"""SIP and SIPS URIs (RFC 3261 §19.1) and name-addr / addr-spec values (§20.10, §25.1).

Rules of this module:

- :func:`parse_uri` gives a :class:`SipUri` for ``sip:``/``sips:`` and an :class:`AbsoluteUri`
  (scheme + opaque text) for any other scheme, so that ``tel:`` or ``isbn:`` values still parse.
- Components are kept *unescaped* (``%75se%72`` is the user ``user``, §19.1.2 and RFC 4475
  §3.1.1.3) and escaped again, minimally, when serialised: ``str(parse_uri(s))`` may differ
  from ``s`` in escaping but always parses back to an equal value.
- Parameter names are case-insensitive (:class:`Params`); a parameter without a value is
  ``None``, which is not the same as an empty value.
- Header parameters (``;tag=x`` after a name-addr, Via parameters) are kept as on the wire:
  a quoted value keeps its quotes.
- Malformed input raises :class:`UriError`, never anything else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

# §25.1 character classes.
ALPHANUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
MARK = "-_.!~*'()"
UNRESERVED = ALPHANUM + MARK
TOKEN_CHARS = frozenset(ALPHANUM + "-.!%*_+`'~")
USER_SAFE = UNRESERVED + "&=+$,;?/"  # user-unreserved
PASSWORD_SAFE = UNRESERVED + "&=+$,"
PARAM_SAFE = UNRESERVED + "[]/:&+$"  # param-unreserved
HEADER_SAFE = UNRESERVED + "[]/?:+$"  # hnv-unreserved
WHITESPACE = " \t"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+")
_PORT = re.compile(r"[0-9]{1,5}")
_OPAQUE_FORBIDDEN = frozenset(' \t\r\n<>"\x00')
MAX_PORT = 65_535


class UriError(ValueError):
    """A URI, name-addr or parameter list that does not follow RFC 3261's grammar."""


def _component(safe: str) -> re.Pattern[str]:
    """A pattern for text made of ``safe`` characters and ``%HH`` escapes (§25.1 "escaped")."""
    return re.compile(r"(?:[" + re.escape(safe) + r"]|%[0-9A-Fa-f]{2})+")


_USER = _component(USER_SAFE)
_PASSWORD = re.compile(r"(?:[" + re.escape(PASSWORD_SAFE) + r"]|%[0-9A-Fa-f]{2})*")
_PARAM = _component(PARAM_SAFE)
_HEADER_NAME = _component(HEADER_SAFE)
_HEADER_VALUE = re.compile(r"(?:[" + re.escape(HEADER_SAFE) + r"]|%[0-9A-Fa-f]{2})*")


def escape(text: str, safe: str) -> str:
    """``%HH``-escape every character of ``text`` that is not in ``safe`` (UTF-8 octets)."""
    return quote(text, safe=safe, errors="surrogateescape")


def unescape(text: str) -> str:
    """Undo ``%HH`` escapes (once: RFC 3986 unescaping is never recursive)."""
    return unquote(text, errors="surrogateescape")


class Params(MutableMapping[str, str | None]):
    """Ordered parameters with case-insensitive names; ``None`` is a parameter with no value."""

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __init__(
        self, items: Mapping[str, str | None] | Iterable[tuple[str, str | None]] = ()
    ) -> None:
        self._items: dict[str, tuple[str, str | None]] = {}
        pairs = items.items() if isinstance(items, Mapping) else items
        for name, value in pairs:
            self[name] = value

    def __getitem__(self, name: str) -> str | None:
        return self._items[name.lower()][1]

    def __setitem__(self, name: str, value: str | None) -> None:
        self._items[name.lower()] = (name, value)

    def __delitem__(self, name: str) -> None:
        del self._items[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Params):
            return NotImplemented
        return {k: v for k, (_, v) in self._items.items()} == {
            k: v for k, (_, v) in other._items.items()
        }

    def __repr__(self) -> str:
        return f"Params({list(self.items())!r})"

    def copy(self) -> Params:
        return Params(self.items())

    def serialise(self, safe: str | None = None) -> str:
        """``;name=value`` for each parameter, escaping with ``safe`` when given (URI params)."""
        out = []
        for name, value in self.items():
            text = name if safe is None else escape(name, safe)
            if value is not None:
                text += "=" + (value if safe is None else escape(value, safe))
            out.append(";" + text)
        return "".join(out)


@dataclass(kw_only=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI (§19.1.1); user, password and parameters unescaped."""

    host: str
    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = field(default_factory=Params)
    headers: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        text = self.scheme + ":"
        if self.user is not None:
            text += escape(self.user, USER_SAFE)
            if self.password is not None:
                text += ":" + escape(self.password, PASSWORD_SAFE)
            text += "@"
        text += self.hostport + self.params.serialise(PARAM_SAFE)
        if self.headers:
            text += "?" + "&".join(
                escape(name, HEADER_SAFE) + "=" + escape(value, HEADER_SAFE)
                for name, value in self.headers
            )
        return text

    @property
    def hostport(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def lr(self) -> bool:
        """The loose-routing flag (§19.1.1, §16.12.1.1)."""
        return "lr" in self.params

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    def copy(self) -> SipUri:
        return SipUri(
            scheme=self.scheme,
            user=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            params=self.params.copy(),
            headers=list(self.headers),
        )


@dataclass(frozen=True)
class AbsoluteUri:
    """A URI of any scheme but SIP/SIPS, kept as scheme + opaque text (§19.1, RFC 4475 §3.3)."""

    scheme: str
    opaque: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"


Uri = SipUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parse an absolute URI: SIP and SIPS in full, any other scheme as opaque text."""
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme):
        raise UriError(f"not a URI: {text[:80]!r}")
    scheme = scheme.lower()
    if scheme in ("sip", "sips"):
        return _parse_sip(scheme, rest)
    if not rest or any(char in _OPAQUE_FORBIDDEN for char in rest):
        raise UriError(f"malformed {scheme} URI")
    return AbsoluteUri(scheme, rest)


def parse_sip_uri(text: str) -> SipUri:
    """Parse a URI that must be SIP or SIPS."""
    uri = parse_uri(text)
    if not isinstance(uri, SipUri):
        raise UriError(f"not a SIP URI: {uri.scheme}")
    return uri


def _parse_sip(scheme: str, rest: str) -> SipUri:
    # No '@' may appear unescaped in the user, password, host, parameters or headers, so the
    # first one ends the userinfo, while the user part itself may hold ';', '?' and '/'.
    userinfo, at, hostpart = rest.partition("@")
    if not at:
        userinfo, hostpart = "", rest
    user, password = _parse_userinfo(userinfo) if at else (None, None)
    hostpart, _, header_text = hostpart.partition("?")
    hostport, *param_texts = hostpart.split(";")
    host, port = parse_hostport(hostport)
    return SipUri(
        scheme=scheme,
        user=user,
        password=password,
        host=host,
        port=port,
        params=_parse_uri_params(param_texts),
        headers=_parse_uri_headers(header_text),
    )


def _parse_userinfo(userinfo: str) -> tuple[str, str | None]:
    user, colon, password = userinfo.partition(":")
    if not _USER.fullmatch(user):
        raise UriError("malformed user part")
    if colon and not _PASSWORD.fullmatch(password):
        raise UriError("malformed password")
    return unescape(user), (unescape(password) if colon else None)


def parse_hostport(text: str) -> tuple[str, int | None]:
    """``host [":" port]`` with IPv6 references in brackets (§25.1 hostport)."""
    match = _HOST.match(text)
    if match is None:
        raise UriError("malformed host")
    host, rest = match.group(), text[match.end() :]
    if not rest:
        return host, None
    if rest[0] != ":" or not _PORT.fullmatch(rest[1:]) or int(rest[1:]) > MAX_PORT:
        raise UriError("malformed port")
    return host, int(rest[1:])


def _parse_uri_params(texts: list[str]) -> Params:
    params = Params()
    for text in texts:
        name, equals, value = text.partition("=")
        if not _PARAM.fullmatch(name) or (equals and not _PARAM.fullmatch(value)):
            raise UriError("malformed URI parameter")
        params[unescape(name)] = unescape(value) if equals else None
    return params


def _parse_uri_headers(text: str) -> list[tuple[str, str]]:
    if not text:
        return []
    headers = []
    for item in text.split("&"):
        name, _, value = item.partition("=")
        if not _HEADER_NAME.fullmatch(name) or not _HEADER_VALUE.fullmatch(value):
            raise UriError("malformed URI header")
        headers.append((unescape(name), unescape(value)))
    return headers


# ---------------------------------------------------------------------------------------------
# name-addr / addr-spec with header parameters (§20.10 Contact, §20.20 From, §20.39 To, ...)


_WHITESPACE_RUN = re.compile(f"[{WHITESPACE}]*")
_TOKEN_RUNS: dict[str, re.Pattern[str]] = {}


def skip_whitespace(text: str, pos: int) -> int:
    match = _WHITESPACE_RUN.match(text, pos)
    return match.end() if match else pos


def read_token(text: str, pos: int, extra: str = "") -> tuple[str, int]:
    """The longest run of token characters (plus ``extra``) from ``pos``."""
    run = _TOKEN_RUNS.get(extra)
    if run is None:  # one pattern per set of extra characters (a handful in all)
        chars = "".join(sorted(TOKEN_CHARS | set(extra)))
        run = _TOKEN_RUNS[extra] = re.compile(f"[{re.escape(chars)}]*")
    match = run.match(text, pos)
    end = match.end() if match else pos
    return text[pos:end], end


def read_quoted(text: str, pos: int) -> tuple[str, int]:
    """A quoted-string at ``pos`` (which holds ``"``): its unescaped content and end (§25.1)."""
    out: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\":
            pos += 1
            if pos == len(text):
                break
            char = text[pos]
        out.append(char)
        pos += 1
    raise UriError("unterminated quoted string")


def quote_string(text: str) -> str:
    """``text`` as a quoted-string, escaping ``"`` and ``\\`` (§25.1 quoted-pair)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_header_params(text: str, pos: int = 0) -> Params:
    """``*( SEMI generic-param )`` from ``pos`` to the end of ``text`` (§25.1)."""
    params = Params()
    while True:
        pos = skip_whitespace(text, pos)
        if pos == len(text):
            return params
        if text[pos] != ";":
            raise UriError(f"unexpected {text[pos]!r} in parameters")
        name, pos = read_token(text, skip_whitespace(text, pos + 1))
        if not name:
            raise UriError("empty parameter name")
        value, pos = _read_param_value(text, skip_whitespace(text, pos))
        params[name] = value


def _read_param_value(text: str, pos: int) -> tuple[str | None, int]:
    if pos == len(text) or text[pos] != "=":
        return None, pos
    pos = skip_whitespace(text, pos + 1)
    if pos < len(text) and text[pos] == '"':
        _, end = read_quoted(text, pos)
        return text[pos:end], end
    value, end = read_token(text, pos, extra="[]:")  # token / host (IPv6 for received=)
    if not value:
        raise UriError("empty parameter value")
    return value, end


@dataclass
class NameAddress:
    """A name-addr or addr-spec with header parameters: From, To, Contact, Route, ..."""

    uri: Uri
    display_name: str | None = None
    params: Params = field(default_factory=Params)

    def __str__(self) -> str:
        # Always the name-addr form: it is valid wherever addr-spec is, and needs no care for
        # URIs holding ',', '?' or ';' (§20).
        name = quote_string(self.display_name) + " " if self.display_name is not None else ""
        return f"{name}<{self.uri}>{self.params.serialise()}"

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def sip_uri(self) -> SipUri:
        """The URI when it is SIP or SIPS; :class:`UriError` otherwise."""
        if not isinstance(self.uri, SipUri):
            raise UriError(f"not a SIP URI: {self.uri.scheme}")
        return self.uri

    def with_tag(self, tag: str) -> NameAddress:
        params = self.params.copy()
        params["tag"] = tag
        return NameAddress(_copy_uri(self.uri), self.display_name, params)

    def copy(self) -> NameAddress:
        return NameAddress(_copy_uri(self.uri), self.display_name, self.params.copy())

    @classmethod
    def parse(cls, text: str) -> NameAddress:
        return parse_name_addr(text)


def _copy_uri(uri: Uri) -> Uri:
    return uri.copy() if isinstance(uri, SipUri) else uri


def parse_name_addr(text: str) -> NameAddress:
    """``( name-addr / addr-spec ) *( SEMI generic-param )``."""
    pos = skip_whitespace(text, 0)
    if pos < len(text) and text[pos] == '"':
        display, pos = read_quoted(text, pos)
        pos = skip_whitespace(text, pos)
        if pos == len(text) or text[pos] != "<":
            raise UriError("display name without <URI>")
        return _bracketed(text, pos, display)
    lt, semi = text.find("<", pos), text.find(";", pos)
    if lt >= 0 and (semi < 0 or lt < semi):  # a display name holds no ';' (token chars)
        return _bracketed(text, lt, _token_display_name(text[pos:lt]))
    return _addr_spec(text[pos:])


def _token_display_name(text: str) -> str | None:
    # display-name = *(token LWS) / quoted-string. RFC 4475 §3.1.1.6: accept no LWS before '<'.
    words = text.split()
    for word in words:
        if not all(char in TOKEN_CHARS for char in word):
            raise UriError("display name must be tokens or a quoted string")
    return " ".join(words) if words else None


def _bracketed(text: str, lt: int, display: str | None) -> NameAddress:
    gt = text.find(">", lt)
    if gt < 0:
        raise UriError("unterminated <URI>")
    inner = text[lt + 1 : gt]
    if inner != inner.strip():  # RFC 4475 §3.1.2.14: no LWS inside the brackets
        raise UriError("whitespace inside <URI>")
    return NameAddress(parse_uri(inner), display, parse_header_params(text, gt + 1))


def _addr_spec(text: str) -> NameAddress:
    # In the addr-spec form a ';' starts the header parameters; a URI with '?' or ',' must be
    # enclosed in <> (§20, RFC 4475 §3.1.2.13).
    uri_text, semi, rest = text.partition(";")
    uri_text = uri_text.rstrip(WHITESPACE)
    if not uri_text or any(char in uri_text for char in "?, \t"):
        raise UriError("addr-spec must be a single URI without '?' or ','")
    params = parse_header_params(semi + rest)
    return NameAddress(parse_uri(uri_text), None, params)
