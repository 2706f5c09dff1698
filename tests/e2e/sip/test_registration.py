from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.peers.sipp import sipp_uas
from voxflow.sip.useragent import UserAgent
from voxflow.telephony.registration import Registration
from voxflow.trunks import Trunk


@pytest.fixture
async def ua() -> AsyncIterator[UserAgent]:
    agent = UserAgent()
    await agent.start("127.0.0.1")
    yield agent
    await agent.close()


def trunk(port: int, password: str) -> Trunk:
    return Trunk(
        name="reg",
        host="127.0.0.1",
        port=port,
        caller_id="441234567890",
        username="dialer",
        password=password,
        register=True,
        register_expires_s=600,
    )


async def test_registers_with_digest_and_takes_the_granted_expiry(ua: UserAgent) -> None:
    with sipp_uas("uas_register_auth") as sipp:
        registration = Registration(ua, trunk(sipp.port, "s3cret"))
        assert await registration.register() == 120
        assert registration.registered.is_set()
        log = sipp.messages
    assert log.count("REGISTER sip:127.0.0.1") == 2
    assert "Expires: 600" in log and "Authorization: Digest" in log
    assert "CSeq: 2 REGISTER" in log  # the same binding counts its CSeq up (§10.2.4)


async def test_a_wrong_password_does_not_register(ua: UserAgent) -> None:
    with sipp_uas("uas_register_auth") as sipp:
        registration = Registration(ua, trunk(sipp.port, "wrong"))
        assert await registration.register() is None
        assert not registration.registered.is_set()
