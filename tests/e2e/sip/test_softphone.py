"""Our SIP leg calling our softphone: two independent uses of the stack meet on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voxflow.domain.calls import CallStatus
from voxflow.media.clock import MediaClock
from voxflow.media.wav import convert
from voxflow.sip.useragent import UserAgent
from voxflow.telephony.sip_leg import SipLeg
from voxflow.telephony.softphone import Softphone
from voxflow.trunks import Trunk


@pytest.fixture
async def clock() -> AsyncIterator[MediaClock]:
    media = MediaClock()
    media.start()
    yield media
    await media.stop()


@pytest.fixture
async def phone(clock: MediaClock, tmp_path: Path) -> AsyncIterator[Softphone]:
    softphone = Softphone(clock, answer_after_s=0.1, record_dir=tmp_path)
    await softphone.start("127.0.0.1", 0)
    yield softphone
    await softphone.close()


@pytest.fixture
async def ua() -> AsyncIterator[UserAgent]:
    agent = UserAgent()
    await agent.start("127.0.0.1")
    yield agent
    await agent.close()


@pytest.mark.parametrize("dtmf", ["rfc4733", "info"])
async def test_keypresses_arrive_on_time(
    ua: UserAgent, clock: MediaClock, phone: Softphone, tmp_path: Path, dtmf: str
) -> None:
    trunk = Trunk(name="p", host="127.0.0.1", port=phone.ua.port, caller_id="4411", dtmf=dtmf)
    leg = SipLeg(ua, clock, trunk, "449789123123")
    result = await leg.dial(lambda c, r: None)
    assert result.status is CallStatus.ANSWERED and result.answered_at is not None
    for key, offset in (("1", 0.3), ("2", 0.55)):
        await leg.send_keypress(key, result.answered_at + offset, 200)
    await asyncio.sleep(0.3)
    await leg.hangup()
    [call] = phone.calls.values()
    await asyncio.wait_for(call.ended.wait(), 5)
    assert [k for k, _ in call.keypresses] == ["1", "2"]
    # The softphone's clock starts when it sends its 200 OK, ours when that 200 OK arrives.
    gap = call.keypresses[1][1] - call.keypresses[0][1]
    assert abs(gap - 0.25) < 0.03
    wav = tmp_path.joinpath(f"{call.call_id.replace('@', '_')}.wav").read_bytes()
    assert convert(wav).duration_ms > 500  # it recorded what it heard (silence, tones)
