"""RFC 3263 target resolution: unit tests on a fake resolver, then a real resolver against a tiny
authoritative DNS server on 127.0.0.1 (no traffic leaves loopback)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import Any, cast

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset
import pytest

from voxflow.sip.resolve import ResolveError, SrvRecord, Target, order_srv, resolve

# --- a fake resolver ----------------------------------------------------------------------------

Records = dict[tuple[str, str], list[str] | type[BaseException]]


def rdata(rdtype: str, text: str) -> Any:
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), text)


class FakeResolver:
    """Answers from a table of (absolute name, type) → rdata texts or an exception to raise."""

    def __init__(self, records: Records, delay: float = 0.0) -> None:
        self.records = records
        self.delay = delay
        self.queries: list[tuple[str, str]] = []

    async def resolve(
        self, qname: str, rdtype: str, *, lifetime: float | None = None
    ) -> Iterable[Any]:
        self.queries.append((qname, rdtype))
        if self.delay:
            await asyncio.sleep(self.delay)
        entry = self.records.get((qname, rdtype))
        if entry is None:
            raise dns.resolver.NXDOMAIN
        if not isinstance(entry, list):
            raise entry
        return [rdata(rdtype, text) for text in entry]


class NoDns(FakeResolver):
    def __init__(self) -> None:
        super().__init__({})

    async def resolve(
        self, qname: str, rdtype: str, *, lifetime: float | None = None
    ) -> Iterable[Any]:
        raise AssertionError(f"unexpected DNS query {qname} {rdtype}")


SRV_ZONE: Records = {
    ("_sip._udp.trunk.example.", "SRV"): [
        "20 0 5080 backup.trunk.example.",
        "10 50 5060 a.trunk.example.",
        "10 50 5062 b.trunk.example.",
    ],
    ("a.trunk.example.", "A"): ["192.0.2.1"],
    ("b.trunk.example.", "A"): ["192.0.2.2"],
    ("b.trunk.example.", "AAAA"): ["2001:db8::2"],
    ("backup.trunk.example.", "A"): ["192.0.2.9"],
}


# --- literals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("192.0.2.7", None, Target("192.0.2.7", 5060, "udp")),
        ("192.0.2.7", 5070, Target("192.0.2.7", 5070, "udp")),
        ("2001:db8::1", None, Target("2001:db8::1", 5060, "udp")),
        ("[2001:DB8::1]", 5061, Target("2001:db8::1", 5061, "udp")),
    ],
)
async def test_literal_addresses_need_no_dns(host: str, port: int | None, expected: Target) -> None:
    assert await resolve(host, port, resolver=NoDns()) == [expected]


async def test_target_is_a_plain_tuple() -> None:
    [target] = await resolve("127.0.0.1", 5070, "tcp", resolver=NoDns())
    ip, port, transport = target
    assert (ip, port, transport) == ("127.0.0.1", 5070, "tcp")


async def test_localhost_needs_no_dns() -> None:
    assert await resolve("localhost", 5070, resolver=NoDns()) == [Target("127.0.0.1", 5070, "udp")]


# --- explicit port: A/AAAA only ----------------------------------------------------------------


async def test_name_with_port_looks_up_a_and_aaaa_only() -> None:
    fake = FakeResolver(SRV_ZONE)
    targets = await resolve("b.trunk.example", 5070, resolver=fake)
    assert targets == [Target("192.0.2.2", 5070, "udp"), Target("2001:db8::2", 5070, "udp")]
    assert sorted(fake.queries) == [("b.trunk.example.", "A"), ("b.trunk.example.", "AAAA")]


async def test_ipv6_false_skips_aaaa() -> None:
    fake = FakeResolver(SRV_ZONE)
    assert await resolve("b.trunk.example", 5070, resolver=fake, ipv6=False) == [
        Target("192.0.2.2", 5070, "udp")
    ]
    assert fake.queries == [("b.trunk.example.", "A")]


async def test_trailing_dot_is_accepted() -> None:
    assert await resolve("a.trunk.example.", 1, resolver=FakeResolver(SRV_ZONE)) == [
        Target("192.0.2.1", 1, "udp")
    ]


# --- SRV ----------------------------------------------------------------------------------------


async def test_srv_orders_by_priority_then_resolves_each_target() -> None:
    targets = await resolve("trunk.example", resolver=FakeResolver(SRV_ZONE), rng=random.Random(1))
    assert set(targets[:3]) == {
        Target("192.0.2.1", 5060, "udp"),
        Target("192.0.2.2", 5062, "udp"),
        Target("2001:db8::2", 5062, "udp"),
    }
    assert targets[3:] == [Target("192.0.2.9", 5080, "udp")]


async def test_srv_addresses_of_one_target_stay_together() -> None:
    for seed in range(20):
        targets = await resolve(
            "trunk.example", resolver=FakeResolver(SRV_ZONE), rng=random.Random(seed)
        )
        ports = [t.port for t in targets]
        assert ports in ([5060, 5062, 5062, 5080], [5062, 5062, 5060, 5080])


async def test_tcp_queries_the_tcp_service() -> None:
    fake = FakeResolver(
        {
            ("_sip._tcp.trunk.example.", "SRV"): ["0 0 5090 a.trunk.example."],
            ("a.trunk.example.", "A"): ["192.0.2.1"],
        }
    )
    assert await resolve("trunk.example", transport="TCP", resolver=fake) == [
        Target("192.0.2.1", 5090, "tcp")
    ]
    assert fake.queries[0] == ("_sip._tcp.trunk.example.", "SRV")


@pytest.mark.parametrize("no_srv", [dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, None])
async def test_without_srv_falls_back_to_a_on_5060(no_srv: type[BaseException] | None) -> None:
    records: Records = {("plain.example.", "A"): ["192.0.2.5"]}
    if no_srv is not None:
        records[("_sip._udp.plain.example.", "SRV")] = no_srv
    assert await resolve("plain.example", resolver=FakeResolver(records)) == [
        Target("192.0.2.5", 5060, "udp")
    ]


async def test_srv_target_dot_means_no_service() -> None:
    fake = FakeResolver({("_sip._udp.nosip.example.", "SRV"): ["0 0 0 ."]})
    with pytest.raises(ResolveError, match="not available"):
        await resolve("nosip.example", resolver=fake)


async def test_srv_targets_without_addresses_are_skipped() -> None:
    fake = FakeResolver(
        {
            ("_sip._udp.t.example.", "SRV"): ["1 0 5060 gone.example.", "2 0 5061 ok.example."],
            ("gone.example.", "A"): dns.resolver.NoAnswer,
            ("ok.example.", "A"): ["192.0.2.3"],
        }
    )
    assert await resolve("t.example", resolver=fake) == [Target("192.0.2.3", 5061, "udp")]


async def test_a_failing_srv_target_is_skipped_when_another_works() -> None:
    fake = FakeResolver(
        {
            ("_sip._udp.t.example.", "SRV"): ["1 0 5060 bad.example.", "2 0 5061 ok.example."],
            ("bad.example.", "A"): dns.resolver.NoNameservers,
            ("ok.example.", "A"): ["192.0.2.3"],
        }
    )
    assert await resolve("t.example", resolver=fake) == [Target("192.0.2.3", 5061, "udp")]


async def test_every_srv_target_failing_is_an_error() -> None:
    fake = FakeResolver(
        {
            ("_sip._udp.t.example.", "SRV"): ["1 0 5060 bad.example."],
            ("bad.example.", "A"): dns.exception.Timeout,
        }
    )
    with pytest.raises(ResolveError, match="timeout"):
        await resolve("t.example", resolver=fake)


async def test_duplicate_targets_are_dropped() -> None:
    fake = FakeResolver(
        {
            ("_sip._udp.t.example.", "SRV"): ["1 0 5060 a.example.", "2 0 5060 b.example."],
            ("a.example.", "A"): ["192.0.2.1"],
            ("b.example.", "A"): ["192.0.2.1", "192.0.2.2"],
        }
    )
    assert [t.ip for t in await resolve("t.example", resolver=fake)] == ["192.0.2.1", "192.0.2.2"]


# --- errors -------------------------------------------------------------------------------------


async def test_unknown_name_is_an_error() -> None:
    with pytest.raises(ResolveError, match=r"no address found for nowhere\.example"):
        await resolve("nowhere.example", resolver=FakeResolver({}))


async def test_servfail_on_srv_is_an_error() -> None:
    fake = FakeResolver({("_sip._udp.t.example.", "SRV"): dns.resolver.NoNameservers})
    with pytest.raises(ResolveError, match=r"DNS error looking up SRV _sip\._udp\.t\.example\."):
        await resolve("t.example", resolver=fake)


async def test_resolver_timeout_is_an_error() -> None:
    fake = FakeResolver({("_sip._udp.t.example.", "SRV"): dns.resolver.LifetimeTimeout})
    with pytest.raises(ResolveError, match="DNS timeout"):
        await resolve("t.example", resolver=fake)


async def test_overall_timeout_bounds_a_slow_resolver() -> None:
    fake = FakeResolver(SRV_ZONE, delay=5.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(ResolveError, match=r"DNS timeout resolving trunk\.example"):
        await resolve("trunk.example", resolver=fake, timeout=0.05)
    assert loop.time() - start < 1.0


async def test_a_answer_wins_over_an_aaaa_failure() -> None:
    fake = FakeResolver(
        {("h.example.", "A"): ["192.0.2.1"], ("h.example.", "AAAA"): dns.exception.Timeout}
    )
    assert await resolve("h.example", 5060, resolver=fake) == [Target("192.0.2.1", 5060, "udp")]


async def test_both_address_lookups_failing_is_an_error() -> None:
    fake = FakeResolver(
        {
            ("h.example.", "A"): dns.resolver.NoNameservers,
            ("h.example.", "AAAA"): dns.resolver.NoNameservers,
        }
    )
    with pytest.raises(ResolveError, match=r"DNS error looking up A h\.example\."):
        await resolve("h.example", 5060, resolver=fake)


@pytest.mark.parametrize(("transport", "port"), [("sctp", None), ("udp", 0), ("tcp", 65536)])
async def test_bad_arguments(transport: str, port: int | None) -> None:
    with pytest.raises(ValueError):
        await resolve("127.0.0.1", port, transport, resolver=NoDns())


# --- RFC 2782 ordering --------------------------------------------------------------------------


def srv(priority: int, weight: int, name: str) -> SrvRecord:
    return SrvRecord(priority, weight, 5060, name)


def test_order_keeps_every_record_once_and_priorities_ascending() -> None:
    records = [srv(2, 5, "c"), srv(1, 0, "a"), srv(1, 10, "b"), srv(3, 0, "d"), srv(2, 0, "e")]
    for seed in range(50):
        ordered = order_srv(records, random.Random(seed))
        assert sorted(ordered, key=lambda r: r.target) == sorted(records, key=lambda r: r.target)
        assert [r.priority for r in ordered] == sorted(r.priority for r in records)


def test_weights_share_first_place_in_proportion() -> None:
    records = [srv(1, 60, "a"), srv(1, 30, "b"), srv(1, 10, "c")]
    rng = random.Random(42)
    firsts = Counter(order_srv(records, rng)[0].target for _ in range(6000))
    assert 3300 < firsts["a"] < 3900
    assert 1500 < firsts["b"] < 2100
    assert 400 < firsts["c"] < 800


def test_weight_zero_is_rarely_first_when_others_have_weight() -> None:
    records = [srv(1, 0, "zero"), srv(1, 100, "heavy")]
    rng = random.Random(7)
    firsts = Counter(order_srv(records, rng)[0].target for _ in range(3000))
    assert firsts["zero"] < 60  # about 1 in 101


def test_all_zero_weights_are_all_possible() -> None:
    records = [srv(1, 0, "a"), srv(1, 0, "b")]
    rng = random.Random(3)
    firsts = Counter(order_srv(records, rng)[0].target for _ in range(200))
    assert firsts["a"] > 0 and firsts["b"] > 0


def test_order_of_nothing_is_nothing() -> None:
    assert order_srv([]) == []


# --- the real thing: dnspython against an authoritative server on loopback ----------------------

ZONE_TEXT = {
    ("_sip._udp.trunk.test.", "SRV"): ["10 60 5070 a.trunk.test.", "10 40 5071 b.trunk.test."],
    ("_sip._udp.trunk.test.", "TXT"): ['"decoy"'],
    ("_sip._tcp.trunk.test.", "SRV"): ["5 0 5080 c.trunk.test."],
    ("a.trunk.test.", "A"): ["127.0.0.2"],
    ("b.trunk.test.", "A"): ["127.0.0.3"],
    ("c.trunk.test.", "A"): ["127.0.0.4"],
    ("c.trunk.test.", "AAAA"): ["::1"],
    ("plain.test.", "A"): ["127.0.0.5"],
    ("_sip._udp.nosip.test.", "SRV"): ["0 0 0 ."],
}


class AuthoritativeServer(asyncio.DatagramProtocol):
    """Answers queries for the test zone from ZONE_TEXT: AA set, NXDOMAIN for unknown names."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.names = {name for name, _ in ZONE_TEXT}
        self.queries: list[tuple[str, str]] = []
        self.silent = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (3.11's selector datagram transport does not subclass DatagramTransport)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name, rdtype = question.name.to_text(), dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if self.silent:
            return
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name.lower() not in self.names:
            response.set_rcode(dns.rcode.NXDOMAIN)
        texts = ZONE_TEXT.get((name.lower(), rdtype), [])
        if texts:
            response.answer.append(dns.rrset.from_text_list(question.name, 60, "IN", rdtype, texts))
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def dns_server() -> AsyncIterator[tuple[AuthoritativeServer, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        AuthoritativeServer, local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    try:
        yield protocol, port
    finally:
        transport.close()


def real_resolver(port: int) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.port = port  # before nameservers: it applies to the names given after
    resolver.nameservers = ["127.0.0.1"]
    return resolver


async def test_real_srv_resolution(dns_server: tuple[AuthoritativeServer, int]) -> None:
    server, port = dns_server
    resolver = real_resolver(port)
    targets = await resolve("trunk.test", resolver=resolver, timeout=2.0)
    assert sorted(targets) == [
        Target("127.0.0.2", 5070, "udp"),
        Target("127.0.0.3", 5071, "udp"),
    ]
    assert ("_sip._udp.trunk.test.", "SRV") in server.queries
    assert ("a.trunk.test.", "A") in server.queries


async def test_real_srv_weights(dns_server: tuple[AuthoritativeServer, int]) -> None:
    _, port = dns_server
    resolver = real_resolver(port)
    rng = random.Random(5)
    firsts: Counter[str] = Counter()
    for _ in range(40):
        targets = await resolve("trunk.test", resolver=resolver, rng=rng, timeout=2.0)
        firsts[targets[0].ip] += 1
    assert firsts["127.0.0.2"] > firsts["127.0.0.3"] > 0


async def test_real_tcp_srv_with_aaaa(dns_server: tuple[AuthoritativeServer, int]) -> None:
    _, port = dns_server
    targets = await resolve("trunk.test", transport="tcp", resolver=real_resolver(port))
    assert targets == [Target("127.0.0.4", 5080, "tcp"), Target("::1", 5080, "tcp")]


async def test_real_fallback_to_a(dns_server: tuple[AuthoritativeServer, int]) -> None:
    _, port = dns_server
    assert await resolve("plain.test", resolver=real_resolver(port)) == [
        Target("127.0.0.5", 5060, "udp")
    ]


async def test_real_explicit_port(dns_server: tuple[AuthoritativeServer, int]) -> None:
    server, port = dns_server
    assert await resolve("a.trunk.test", 5099, resolver=real_resolver(port)) == [
        Target("127.0.0.2", 5099, "udp")
    ]
    assert not [q for q in server.queries if q[1] == "SRV"]


async def test_real_nxdomain(dns_server: tuple[AuthoritativeServer, int]) -> None:
    _, port = dns_server
    with pytest.raises(ResolveError, match="no address found"):
        await resolve("missing.test", resolver=real_resolver(port))


async def test_real_no_service(dns_server: tuple[AuthoritativeServer, int]) -> None:
    _, port = dns_server
    with pytest.raises(ResolveError, match="not available"):
        await resolve("nosip.test", resolver=real_resolver(port))


async def test_real_silent_server_times_out(dns_server: tuple[AuthoritativeServer, int]) -> None:
    server, port = dns_server
    server.silent = True
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(ResolveError, match="timeout"):
        await resolve("trunk.test", resolver=real_resolver(port), timeout=0.3)
    assert loop.time() - start < 2.0
