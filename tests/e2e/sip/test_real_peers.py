"""voxflow's SIP leg against independent SIP implementations: kamailio as authenticating
proxy with Record-Route and as registrar, and baresip (in a network namespace the test makes)
as a second receiver that reports the digits it heard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.peers.baresip import Baresip, baresip_phone
from tests.peers.kamailio import Kamailio, kamailio_proxy
from tests.peers.netns import Netns, NetnsUnavailable, network_namespace
from tests.peers.sipp import Sipp, sipp_uas
from voxflow.domain.calls import CallStatus
from voxflow.media.clock import MediaClock
from voxflow.sip.useragent import UserAgent
from voxflow.telephony.registration import Registration
from voxflow.telephony.sip_leg import SipLeg
from voxflow.trunks import Trunk


@pytest.fixture
async def clock() -> AsyncIterator[MediaClock]:
    media = MediaClock()
    media.start()
    yield media
    await media.stop()


@pytest.fixture
async def ua() -> AsyncIterator[UserAgent]:
    agent = UserAgent()
    await agent.start("127.0.0.1")
    yield agent
    await agent.close()


def via_kamailio(kamailio: Kamailio, password: str, **extra: object) -> Trunk:
    return Trunk(
        name="k",
        host=kamailio.host,
        port=kamailio.port,
        caller_id="441234567890",
        username="dialer",
        password=password,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def proxy() -> Iterator[tuple[Kamailio, Sipp]]:
    with (
        sipp_uas("uas_answer_dtmf") as uas,
        kamailio_proxy((uas.host, uas.port), user="dialer", password="s3cret") as kamailio,
    ):
        yield kamailio, uas


async def test_call_through_kamailio_with_407_and_record_route(
    proxy: tuple[Kamailio, Sipp], ua: UserAgent, clock: MediaClock
) -> None:
    kamailio, uas = proxy
    leg = SipLeg(ua, clock, via_kamailio(kamailio, "s3cret"), "1000")
    result = await leg.dial(lambda c, r: None)
    assert result.status is CallStatus.ANSWERED, result
    assert leg.dialog is not None and leg.dialog.route_set  # kamailio recorded its route
    await asyncio.wait_for(leg.hangup(), 5)
    await asyncio.sleep(0.3)
    bye = uas.messages.split("BYE sip:")[1]
    assert f"{kamailio.host}:{kamailio.port}" in bye.split("\n\n")[0]  # it came through the proxy


async def test_kamailio_refuses_a_wrong_password(
    proxy: tuple[Kamailio, Sipp], ua: UserAgent, clock: MediaClock
) -> None:
    kamailio, uas = proxy
    result = await SipLeg(ua, clock, via_kamailio(kamailio, "wrong"), "1000").dial(
        lambda c, r: None
    )
    assert result.status is CallStatus.REJECTED and result.sip_code in (403, 407)
    assert "INVITE sip:" not in uas.messages  # nothing got past the proxy


async def test_register_with_kamailio(proxy: tuple[Kamailio, Sipp], ua: UserAgent) -> None:
    kamailio, _ = proxy
    trunk = via_kamailio(kamailio, "s3cret", register=True, register_expires_s=300)
    registration = Registration(ua, trunk)
    granted = await registration.register()
    assert granted is not None and 0 < granted <= 300
    await registration.unregister()
    assert not registration.registered.is_set()


@pytest.fixture
def ns() -> Iterator[Netns]:
    try:
        with network_namespace() as namespace:
            yield namespace
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def phone(ns: Netns) -> Iterator[Baresip]:
    with baresip_phone(ns, user="baresip") as baresip:
        yield baresip


@pytest.mark.parametrize("dtmf", ["rfc4733", "info"])
async def test_baresip_hears_our_keypresses(
    ns: Netns, phone: Baresip, clock: MediaClock, dtmf: str
) -> None:
    ua = UserAgent()
    await ua.start(ns.host_addr)
    try:
        trunk = Trunk(
            name="b",
            host=ns.ns_addr,
            port=5060,
            caller_id="441234567890",
            local_host=ns.host_addr,
            dtmf=dtmf,
        )
        leg = SipLeg(ua, clock, trunk, "baresip")
        result = await leg.dial(lambda c, r: None)
        assert result.status is CallStatus.ANSWERED and result.answered_at is not None
        for i, key in enumerate("12#"):
            await leg.send_keypress(key, result.answered_at + 0.5 + 0.25 * i, 200)
        digits = await asyncio.to_thread(phone.wait_digits, "12#", 10)
        assert digits == "12#"
        await asyncio.wait_for(leg.hangup(), 5)
    finally:
        await ua.close()
