"""Keeping a trunk registration (RFC 3261 §10) for trunks with ``register = true``.

One binding per trunk: the same Call-ID for every REGISTER, CSeq counting up (§10.2.4), digest
answers for 401/407, and a refresh before the granted expiry runs out; failures are retried
with a growing back-off so that a registrar that is down is not hammered.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from voxflow.digits import ascii_digits
from voxflow.sip.auth import DigestClient
from voxflow.sip.message import SipRequest, SipResponse, Via, make_request, new_call_id, new_tag
from voxflow.sip.resolve import ResolveError, resolve
from voxflow.sip.transport import Address
from voxflow.sip.uri import NameAddress, Params, SipUri
from voxflow.sip.useragent import UserAgent
from voxflow.trunks import Trunk

log = logging.getLogger("voxflow.sip.register")

REFRESH_FRACTION = 0.8
RETRY_S = (5.0, 15.0, 60.0, 300.0)
MAX_AUTH_ROUNDS = 2


@dataclass
class Registration:
    ua: UserAgent
    trunk: Trunk
    call_id: str = field(default_factory=new_call_id)
    from_tag: str = field(default_factory=new_tag)
    cseq: int = 0
    expires_s: int | None = None  # what the registrar granted, None until it has
    registered: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Register, then refresh before expiry, for as long as the task runs."""
        failures = 0
        while True:
            granted = await self.register()
            if granted is not None:
                failures = 0
                await asyncio.sleep(max(granted * REFRESH_FRACTION, 1.0))
            else:
                delay = RETRY_S[min(failures, len(RETRY_S) - 1)]
                failures += 1
                await asyncio.sleep(delay)

    async def register(self, expires: int | None = None) -> int | None:
        """One registration (with digest rounds); the granted expiry in seconds, or None."""
        try:
            destination = await self._destination()
        except (ResolveError, ValueError) as exc:
            log.warning("trunk %s: cannot resolve the registrar: %s", self.trunk.name, exc)
            return None
        digest = DigestClient(self.trunk.username, self.trunk.password)
        wanted = self.trunk.register_expires_s if expires is None else expires
        auth: list[tuple[str, str]] = []
        for _ in range(MAX_AUTH_ROUNDS + 1):
            request = self._request(wanted, auth)
            final = await self.ua.request(request, destination)
            response = final.response
            if response is None or response.status not in (401, 407):
                return self._result(response, wanted)
            header = "Proxy-Authenticate" if response.status == 407 else "WWW-Authenticate"
            proxy = response.status == 407
            if not digest.on_challenge(response.headers.get_all(header), proxy=proxy):
                return self._result(response, wanted)
            auth = digest.headers("REGISTER", str(request.uri))
        return None

    async def unregister(self) -> None:
        await self.register(expires=0)

    async def _destination(self) -> Address:
        host, port = self.trunk.proxy_address or (self.trunk.host, self.trunk.port)
        first = (await resolve(host, port, self.trunk.transport))[0]
        return Address(first.ip, first.port, first.transport)

    def _request(self, expires: int, auth: list[tuple[str, str]]) -> SipRequest:
        trunk = self.trunk
        self.cseq += 1
        aor = NameAddress(SipUri(host=trunk.host, user=trunk.username or trunk.caller_id))
        contact = NameAddress(
            SipUri(host=self.ua.host, port=self.ua.port, user=trunk.username or trunk.caller_id)
        )
        via = Via(
            host=self.ua.host,
            port=self.ua.port,
            transport=trunk.transport.upper(),
            params=Params([("rport", None)]),
        )
        return make_request(
            "REGISTER",
            SipUri(host=trunk.host, port=trunk.port),
            from_=aor.with_tag(self.from_tag),
            to=aor,
            via=via,
            call_id=self.call_id,
            cseq=self.cseq,
            contact=contact,
            headers=[("Expires", str(expires)), ("User-Agent", "voxflow"), *auth],
        )

    def _result(self, response: SipResponse | None, wanted: int) -> int | None:
        if response is None or not response.success:
            reason = f"{response.status} {response.reason}" if response else "no answer"
            log.warning("trunk %s: registration failed: %s", self.trunk.name, reason)
            self.registered.clear()
            return None
        granted = _granted(response, wanted)
        self.expires_s = granted
        if granted:
            self.registered.set()
            log.info("trunk %s: registered for %d s", self.trunk.name, granted)
        else:
            self.registered.clear()
        return granted


def _granted(response: SipResponse, wanted: int) -> int:
    """The expiry the registrar granted: our Contact's expires param, else Expires (§10.2.4)."""
    for contact in response.contacts:
        value = contact.params.get("expires")
        if value and ascii_digits(value):
            return int(value)
    header = response.headers.get("Expires")
    return int(header) if header and ascii_digits(header.strip()) else wanted
