"""Digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760), sans-IO.

The client side parses ``WWW-Authenticate`` / ``Proxy-Authenticate`` header values into
:class:`Challenge` objects, picks the strongest one we support and builds the matching
``Authorization`` / ``Proxy-Authorization`` value. :class:`DigestClient` remembers the last
challenge per realm, counts nonce uses and says when a repeated challenge means the credentials
are wrong. The server side (:func:`make_challenge`, :func:`check`) lets voxflow's softphone and
tests challenge callers.

Everything here takes and returns header *values* (the text after ``Name:``); callers own the
header names, see :data:`AUTHORIZATION_FOR`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "ALGORITHMS",
    "AUTHORIZATION_FOR",
    "AuthResult",
    "Challenge",
    "DigestClient",
    "authorization",
    "check",
    "digest_response",
    "make_challenge",
    "new_nonce",
    "parse_auth_header",
    "parse_challenges",
    "strongest",
]

#: The request header that answers each challenge header.
AUTHORIZATION_FOR = {
    "WWW-Authenticate": "Authorization",
    "Proxy-Authenticate": "Proxy-Authorization",
}

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
    "SHA-512-256": lambda data: hashlib.new("sha512_256", data).hexdigest(),
}

#: Supported algorithms, weakest first; the index is the strength used to rank challenges.
ALGORITHMS: tuple[str, ...] = (
    "MD5",
    "MD5-sess",
    "SHA-256",
    "SHA-256-sess",
    "SHA-512-256",
    "SHA-512-256-sess",
)
_CANONICAL = {name.lower(): name for name in ALGORITHMS}
_STRENGTH = {"MD5": 0, "SHA-256": 1, "SHA-512-256": 2}
_WS = " \t\r\n"


def _canonical_algorithm(value: str | None) -> str:
    if not value:
        return "MD5"  # RFC 2617 §3.2.1: absent means MD5
    return _CANONICAL.get(value.strip().lower(), value.strip())


def _base(algorithm: str) -> str:
    return algorithm.removesuffix("-sess")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- parsing ------------------------------------------------------------------------------------


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _read_token(text: str, pos: int) -> tuple[str, int]:
    start = pos
    while pos < len(text) and text[pos] not in _WS + ',="':
        pos += 1
    return text[start:pos], pos


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read a quoted-string starting at the opening quote; an unclosed one runs to the end."""
    out: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text):
            out.append(text[pos + 1])
            pos += 2
            continue
        if char == '"':
            return "".join(out), pos + 1
        out.append(char)
        pos += 1
    return "".join(out), pos


def _read_value(text: str, pos: int) -> tuple[str, int]:
    pos = _skip(text, pos, _WS)
    if pos < len(text) and text[pos] == '"':
        return _read_quoted(text, pos)
    start = pos
    while pos < len(text) and text[pos] not in _WS + ",":
        pos += 1
    return text[start:pos], pos


def parse_auth_header(value: str) -> list[tuple[str, dict[str, str]]]:
    """Split an auth header value into ``(scheme, params)`` pairs.

    Handles several challenges in one value (``Digest a=1, Digest a=2``), quoted strings with
    commas and backslash escapes, spaces around ``=`` and any case of parameter names (the
    names come back lower-cased, the scheme as written). token68 credentials (``Basic xyz==``)
    are skipped; parameters before any scheme are dropped.
    """
    result: list[tuple[str, dict[str, str]]] = []
    pos = 0
    while pos < len(value):
        pos = _skip(value, pos, _WS + ",")
        token, pos = _read_token(value, pos)
        if not token:
            pos += 1  # a stray '=' or '"': step over it
            continue
        after = _skip(value, pos, _WS)
        if after < len(value) and value[after] == "=" and value[after + 1 : after + 2] != "=":
            param, pos = _read_value(value, after + 1)
            if result:
                result[-1][1][token.lower()] = param
        elif after < len(value) and value[after] == "=":
            pos = _skip(value, after, "=")  # token68 padding
        else:
            result.append((token, {}))
            pos = after
    return result


@dataclass(frozen=True)
class Challenge:
    """One Digest challenge from a ``WWW-Authenticate`` or ``Proxy-Authenticate`` value."""

    realm: str
    nonce: str
    opaque: str | None = None
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    stale: bool = False
    userhash: bool = False

    @property
    def supported(self) -> bool:
        """True when we can answer it: a known algorithm, a nonce, and a usable qop.

        A ``-sess`` algorithm without qop is refused: RFC 2617 puts the cnonce in A1 but forbids
        sending it without qop, so no server could check the answer.
        """
        if self.algorithm not in _CANONICAL.values() or not self.nonce:
            return False
        if self.qop and not {"auth", "auth-int"} & set(self.qop):
            return False
        return bool(self.qop) or not self.algorithm.endswith("-sess")

    @property
    def strength(self) -> int:
        return _STRENGTH.get(_base(self.algorithm), -1)

    @property
    def chosen_qop(self) -> str | None:
        """``auth`` when offered, else ``auth-int``; None (RFC 2069 form) without qop."""
        if "auth" in self.qop:
            return "auth"
        return "auth-int" if "auth-int" in self.qop else None

    def header_value(self) -> str:
        """Render the challenge as a ``WWW-Authenticate`` / ``Proxy-Authenticate`` value."""
        parts = [f"realm={_quote(self.realm)}", f"nonce={_quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        if self.stale:
            parts.append("stale=true")
        if self.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)


def _challenge_from(params: dict[str, str]) -> Challenge:
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(
        realm=params.get("realm", ""),
        nonce=params.get("nonce", ""),
        opaque=params.get("opaque"),
        algorithm=_canonical_algorithm(params.get("algorithm")),
        qop=qop,
        stale=params.get("stale", "").strip().lower() == "true",
        userhash=params.get("userhash", "").strip().lower() == "true",
    )


def parse_challenges(values: str | Iterable[str]) -> list[Challenge]:
    """Every Digest challenge in one header value or in several values, in order."""
    if isinstance(values, str):
        values = [values]
    return [
        _challenge_from(params)
        for value in values
        for scheme, params in parse_auth_header(value)
        if _is_digest(scheme)
    ]


def strongest(challenges: Iterable[Challenge]) -> Challenge | None:
    """The supported challenge with the strongest hash; the first one wins a tie."""
    best: Challenge | None = None
    for challenge in challenges:
        if challenge.supported and (best is None or challenge.strength > best.strength):
            best = challenge
    return best


def _by_realm(challenges: Iterable[Challenge]) -> dict[str, Challenge]:
    realms: dict[str, list[Challenge]] = {}
    for challenge in challenges:
        realms.setdefault(challenge.realm, []).append(challenge)
    picked = {realm: strongest(group) for realm, group in realms.items()}
    return {realm: c for realm, c in picked.items() if c is not None}


# --- the digest computation ---------------------------------------------------------------------


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str = "",
    cnonce: str = "",
    body: bytes = b"",
) -> str:
    """The ``response`` value (RFC 7616 §3.4.1-3.4.3; RFC 2069 form when ``qop`` is None)."""
    hash_ = _HASHES[_base(algorithm)]

    def h(text: str) -> str:
        return hash_(text.encode("utf-8"))

    ha1 = h(f"{username}:{realm}:{password}")
    if algorithm.endswith("-sess"):
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 += ":" + hash_(body)
    ha2 = h(a2)
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}")
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def _new_cnonce() -> str:
    return secrets.token_hex(16)


def authorization(
    challenge: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    body: bytes = b"",
    cnonce: str | None = None,
    nc: int = 1,
) -> str:
    """The ``Authorization`` / ``Proxy-Authorization`` value answering ``challenge``.

    ``uri`` is the Request-URI as sent. ``qop=auth`` is used when offered, ``auth-int`` (over
    ``body``, the message body as sent) only when it is all the challenge offers. ``nc`` is the
    use count of this nonce, sent as 8 hex digits.
    """
    if not challenge.supported:
        raise ValueError(f"unsupported digest challenge (algorithm {challenge.algorithm})")
    qop = challenge.chosen_qop
    cnonce = cnonce if cnonce is not None else _new_cnonce()
    nc_text = f"{nc:08x}"
    response = digest_response(
        algorithm=challenge.algorithm,
        username=username,
        realm=challenge.realm,
        password=password,
        nonce=challenge.nonce,
        method=method,
        uri=uri,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce,
        body=body,
    )
    if challenge.userhash:
        username = _HASHES[_base(challenge.algorithm)](f"{username}:{challenge.realm}".encode())
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(challenge.realm)}",
        f"nonce={_quote(challenge.nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
        f"algorithm={challenge.algorithm}",
    ]
    if qop is not None:
        parts += [f"cnonce={_quote(cnonce)}", f"qop={qop}", f"nc={nc_text}"]
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    if challenge.userhash:
        parts.append("userhash=true")
    return "Digest " + ", ".join(parts)


# --- the client -------------------------------------------------------------------------------


@dataclass
class _RealmState:
    challenge: Challenge
    proxy: bool
    nc: int = 0  # uses of this nonce so far


@dataclass
class DigestClient:
    """Digest credentials for one account, with the last challenge per realm.

    Typical use by a UAC transaction::

        if response.status in (401, 407):
            if not client.on_challenge(values, proxy=response.status == 407):
                fail("wrong credentials")  # or no challenge we can answer
            resend(request, extra_headers=client.headers(method, uri))

    :meth:`headers` also pre-authorises later requests (a BYE through the same proxy) with the
    remembered challenges, counting ``nc`` up per nonce.
    """

    username: str
    password: str = field(repr=False)
    cnonce_factory: Callable[[], str] = field(default=_new_cnonce, repr=False)
    _realms: dict[str, _RealmState] = field(default_factory=dict, init=False, repr=False)

    def on_challenge(self, values: str | Iterable[str], *, proxy: bool = False) -> bool:
        """Take a 401 (``proxy=False``) or 407 (``proxy=True``) challenge; True means retry.

        False when no challenge can be answered, or when a realm challenges again with the
        nonce we already answered and without ``stale=true``: the credentials are wrong and
        retrying would only repeat the failure.
        """
        picked = _by_realm(parse_challenges(values))
        if not picked:
            return False
        for realm, challenge in picked.items():
            old = self._realms.get(realm)
            if old and old.nc and old.challenge.nonce == challenge.nonce and not challenge.stale:
                return False
        for realm, challenge in picked.items():
            old = self._realms.get(realm)
            # A stale challenge may repeat the nonce: keep counting so that no nc is reused.
            nc = old.nc if old is not None and old.challenge.nonce == challenge.nonce else 0
            self._realms[realm] = _RealmState(challenge, proxy, nc)
        return True

    def challenge_for(self, realm: str) -> Challenge | None:
        state = self._realms.get(realm)
        return state.challenge if state else None

    def forget(self, realm: str | None = None) -> None:
        """Drop one realm's challenge (or all of them), e.g. after a registrar moved."""
        if realm is None:
            self._realms.clear()
        else:
            self._realms.pop(realm, None)

    def headers(self, method: str, uri: str, body: bytes = b"") -> list[tuple[str, str]]:
        """``(header name, value)`` pairs authorising a request to ``uri`` for every realm.

        Pass the message body: it is signed when a realm offers only ``qop=auth-int``.
        """
        result: list[tuple[str, str]] = []
        for state in self._realms.values():
            state.nc += 1
            value = authorization(
                state.challenge,
                method=method,
                uri=uri,
                username=self.username,
                password=self.password,
                body=body,
                cnonce=self.cnonce_factory(),
                nc=state.nc,
            )
            result.append(("Proxy-Authorization" if state.proxy else "Authorization", value))
        return result


# --- the server side --------------------------------------------------------------------------


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def make_challenge(
    realm: str,
    *,
    algorithm: str = "SHA-256",
    qop: Sequence[str] = ("auth",),
    nonce: str | None = None,
    opaque: str | None = None,
    stale: bool = False,
) -> Challenge:
    """A fresh challenge to send in a 401/407 (render it with :meth:`Challenge.header_value`)."""
    canonical = _canonical_algorithm(algorithm)
    if canonical not in ALGORITHMS:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return Challenge(
        realm=realm,
        nonce=nonce if nonce is not None else new_nonce(),
        opaque=opaque,
        algorithm=canonical,
        qop=tuple(qop),
        stale=stale,
    )


@dataclass(frozen=True)
class AuthResult:
    """The verdict of :func:`check`; truthy when the caller is authenticated.

    ``stale`` means the response was right but the nonce is no longer valid: challenge again
    with a new nonce and ``stale=True``. ``nc`` is the nonce count sent (0 without qop), for a
    server that refuses replays.
    """

    ok: bool
    reason: str = ""
    username: str = ""
    realm: str = ""
    nonce: str = ""
    nc: int = 0
    stale: bool = False

    def __bool__(self) -> bool:
        return self.ok


_REQUIRED = ("username", "realm", "nonce", "uri", "response")


def _problem(params: dict[str, str], realm: str | None, uri: str | None) -> str:
    missing = [name for name in _REQUIRED if name not in params]
    if missing:
        return f"missing {missing[0]}"
    if _canonical_algorithm(params.get("algorithm")) not in ALGORITHMS:
        return "unsupported algorithm"
    if params.get("userhash", "").lower() == "true":
        return "userhash not supported"
    if realm is not None and params["realm"] != realm:
        return "wrong realm"
    if uri is not None and params["uri"] != uri:
        return "uri does not match the request"
    return _qop_problem(params)


def _qop_problem(params: dict[str, str]) -> str:
    qop = params.get("qop")
    if qop is None:
        return ""
    if qop not in ("auth", "auth-int"):
        return "unsupported qop"
    if "cnonce" not in params or "nc" not in params:
        return "qop without cnonce or nc"
    return "" if _is_hex8(params["nc"]) else "bad nc"


def _is_hex8(text: str) -> bool:
    return len(text) == 8 and all(c in "0123456789abcdefABCDEF" for c in text)


def check(
    authorization_header_value: str,
    method: str,
    password_lookup: Callable[[str, str], str | None],
    *,
    body: bytes = b"",
    realm: str | None = None,
    uri: str | None = None,
    nonce_valid: Callable[[str], bool] | None = None,
) -> AuthResult:
    """Check an ``Authorization`` / ``Proxy-Authorization`` value against a password.

    ``password_lookup(username, realm)`` gives the password or None for an unknown user.
    ``realm`` and ``uri`` (the request's Request-URI), when given, must match what the caller
    signed; ``nonce_valid(nonce)`` says whether the nonce is one we issued and still accept.
    """
    params = next(
        (p for scheme, p in parse_auth_header(authorization_header_value) if _is_digest(scheme)),
        None,
    )
    if params is None:
        return AuthResult(False, "not a Digest authorization")
    problem = _problem(params, realm, uri)
    if problem:
        return AuthResult(False, problem)
    base = AuthResult(
        False,
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        nc=int(params["nc"], 16) if "qop" in params else 0,
    )
    password = password_lookup(params["username"], params["realm"])
    if password is None:
        return _with(base, reason="unknown user")
    expected = digest_response(
        algorithm=_canonical_algorithm(params.get("algorithm")),
        username=params["username"],
        realm=params["realm"],
        password=password,
        nonce=params["nonce"],
        method=method,
        uri=params["uri"],
        qop=params.get("qop"),
        nc=params.get("nc", ""),
        cnonce=params.get("cnonce", ""),
        body=body,
    )
    if not hmac.compare_digest(expected, params["response"].lower()):
        return _with(base, reason="wrong response")
    if nonce_valid is not None and not nonce_valid(params["nonce"]):
        return _with(base, reason="stale nonce", stale=True)
    return _with(base, ok=True)


def _with(result: AuthResult, **changes: Any) -> AuthResult:
    return replace(result, **changes)


def _is_digest(scheme: str) -> bool:
    return scheme.lower() == "digest"
