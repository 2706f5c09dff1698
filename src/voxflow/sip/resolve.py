"""Where to send a SIP request: RFC 3263 target resolution over dnspython's asyncio resolver.

The transport is fixed by the trunk's configuration, so NAPTR is not consulted (RFC 3263 §4.1
lets a configured transport skip it):

- a literal IPv4/IPv6 address is used as it is (port 5060 when none is given);
- a name with an explicit port is looked up with A then AAAA;
- a name without a port is looked up with SRV ``_sip._udp.<name>`` / ``_sip._tcp.<name>``,
  the records ordered by priority and weighted at random within a priority (RFC 2782), each
  target then looked up with A/AAAA; without SRV records, A/AAAA of the name on port 5060.

Names are always queried as absolute names (no resolv.conf search list), and ``localhost``
is the loopback address without asking DNS (RFC 6761).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import dns.asyncresolver
import dns.exception
import dns.resolver

__all__ = [
    "DEFAULT_PORT",
    "DnsResolver",
    "ResolveError",
    "SrvRecord",
    "Target",
    "order_srv",
    "resolve",
]

DEFAULT_PORT = 5060
DEFAULT_TIMEOUT = 5.0
TRANSPORTS = ("udp", "tcp")


class ResolveError(Exception):
    """The host could not be turned into any address; the message is one line."""


class Target(NamedTuple):
    ip: str
    port: int
    transport: str


class DnsResolver(Protocol):
    """The part of ``dns.asyncresolver.Resolver`` we use (tests inject a fake)."""

    def resolve(
        self, qname: str, rdtype: str, *, lifetime: float | None = None
    ) -> Awaitable[Iterable[Any]]: ...


@dataclass(frozen=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


# Answers that mean "no such records": go on (or fall back), do not fail.
_NO_DATA = (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer)


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.removeprefix("[").removesuffix("]")))
    except ValueError:
        return None


def _absolute(name: str) -> str:
    return name.rstrip(".") + "."


def order_srv(records: Sequence[SrvRecord], rng: random.Random | None = None) -> list[SrvRecord]:
    """RFC 2782 order: ascending priority; within one, a weighted random draw without repeats.

    Records of weight 0 go first in the running sum, so they are picked only rarely when
    records with weight exist, as the RFC asks.
    """
    rng = rng or random.Random()
    result: list[SrvRecord] = []
    for priority in sorted({r.priority for r in records}):
        # Sorted first so that a seeded draw does not depend on the order DNS answered in.
        group = sorted(
            (r for r in records if r.priority == priority), key=lambda r: (r.target, r.port)
        )
        rng.shuffle(group)  # "any order", so that equal weights share first place fairly
        group.sort(key=lambda r: r.weight != 0)
        while group:
            chosen = _draw(group, rng)
            result.append(chosen)
            group.remove(chosen)
    return result


def _draw(group: list[SrvRecord], rng: random.Random) -> SrvRecord:
    pick = rng.randint(0, sum(r.weight for r in group))
    running = 0
    for record in group:
        running += record.weight
        if running >= pick:
            return record
    return group[-1]  # unreachable: the running sum ends at the total


def _first_error(results: Iterable[object]) -> None:
    for result in results:
        if isinstance(result, BaseException):
            raise result


@dataclass(frozen=True)
class _Lookup:
    resolver: DnsResolver
    transport: str
    timeout: float
    ipv6: bool

    async def query(self, name: str, rdtype: str) -> list[Any]:
        try:
            return list(await self.resolver.resolve(name, rdtype, lifetime=self.timeout))
        except _NO_DATA:
            return []
        except dns.exception.Timeout:
            raise ResolveError(f"DNS timeout looking up {rdtype} {name}") from None
        except dns.exception.DNSException as exc:
            raise ResolveError(f"DNS error looking up {rdtype} {name}: {exc}") from None

    async def addresses(self, name: str) -> list[str]:
        if name.rstrip(".").lower() == "localhost":
            return ["127.0.0.1"]
        kinds = ("A", "AAAA") if self.ipv6 else ("A",)
        results = await asyncio.gather(
            *(self.query(_absolute(name), kind) for kind in kinds), return_exceptions=True
        )
        found = [str(r.address) for result in results if isinstance(result, list) for r in result]
        if not found:
            _first_error(results)
        return list(dict.fromkeys(found))

    async def srv(self, name: str) -> list[SrvRecord]:
        answer = await self.query(f"_sip._{self.transport}.{_absolute(name)}", "SRV")
        records = [
            SrvRecord(int(r.priority), int(r.weight), int(r.port), str(r.target).rstrip("."))
            for r in answer
        ]
        if len(records) == 1 and records[0].target == "":
            raise ResolveError(
                f"{name} says SIP over {self.transport} is not available (SRV target '.')"
            )
        return records

    def targets(self, ips: list[str], port: int) -> list[Target]:
        return [Target(ip, port, self.transport) for ip in ips]

    async def run(self, host: str, port: int | None, rng: random.Random | None) -> list[Target]:
        if port is not None:
            return self.targets(await self.addresses(host), port)
        records = order_srv(await self.srv(host), rng)
        if not records:
            return self.targets(await self.addresses(host), DEFAULT_PORT)
        per_record = await asyncio.gather(
            *(self.addresses(r.target) for r in records), return_exceptions=True
        )
        found: list[Target] = []
        for record, ips in zip(records, per_record, strict=True):
            if isinstance(ips, list):
                found += self.targets(ips, record.port)
        if not found:
            _first_error(per_record)
        return list(dict.fromkeys(found))


async def resolve(
    host: str,
    port: int | None = None,
    transport: str = "udp",
    *,
    resolver: DnsResolver | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    rng: random.Random | None = None,
    ipv6: bool = True,
) -> list[Target]:
    """The ordered ``(ip, port, transport)`` targets for ``host``; try them in order.

    ``resolver`` defaults to dnspython's default asyncio resolver (``/etc/resolv.conf``);
    ``timeout`` bounds the whole resolution; ``ipv6=False`` skips AAAA lookups (for a socket
    bound to an IPv4 address). Raises :class:`ResolveError` when nothing usable is found.
    """
    transport = transport.lower()
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be 'udp' or 'tcp', not {transport!r}")
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"port must be from 1 to 65535, not {port}")
    literal = _literal(host)
    if literal is not None:
        return [Target(literal, port or DEFAULT_PORT, transport)]
    if resolver is None:
        resolver = _default_resolver()
    try:
        async with asyncio.timeout(timeout):
            targets = await _Lookup(resolver, transport, timeout, ipv6).run(host, port, rng)
    except TimeoutError:
        raise ResolveError(f"DNS timeout resolving {host}") from None
    if not targets:
        raise ResolveError(f"no address found for {host}")
    return targets


def _default_resolver() -> DnsResolver:
    try:
        return dns.asyncresolver.get_default_resolver()
    except dns.exception.DNSException as exc:
        raise ResolveError(f"no DNS resolver configured: {exc}") from None
