"""A real SIP leg (our UA, transactions, dialogs, RTP) against SIPp peers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.peers.sipp import sipp_uas
from voxflow.domain.calls import CallStatus
from voxflow.media.clock import MediaClock
from voxflow.sip.useragent import UserAgent
from voxflow.telephony.sip_leg import SipLeg
from voxflow.trunks import Trunk


@pytest.fixture
async def ua() -> AsyncIterator[UserAgent]:
    agent = UserAgent()
    await agent.start("127.0.0.1")
    yield agent
    await agent.close()


@pytest.fixture
async def clock() -> AsyncIterator[MediaClock]:
    media = MediaClock()
    media.start()
    yield media
    await media.stop()


def trunk(port: int, **extra: object) -> Trunk:
    return Trunk(name="t", host="127.0.0.1", port=port, caller_id="441234567890", **extra)  # type: ignore[arg-type]


async def test_answered_call_with_keypress_and_bye(ua: UserAgent, clock: MediaClock) -> None:
    with sipp_uas("uas_answer_dtmf") as sipp:
        leg = SipLeg(ua, clock, trunk(sipp.port), "1000")
        ringing: list[int] = []
        result = await leg.dial(lambda code, _reason: ringing.append(code))
        assert result.status is CallStatus.ANSWERED and result.sip_code == 200
        assert ringing == [180]
        loop = asyncio.get_running_loop()
        sent = await leg.send_keypress("1", loop.time() + 0.1, 200)
        assert abs(sent.actual_at - sent.planned_at) < 0.02
        await leg.hangup()
        await asyncio.sleep(0.3)
        log = sipp.messages
    assert "BYE sip:" in log and "SIP/2.0 200 OK" in log


async def test_busy(ua: UserAgent, clock: MediaClock) -> None:
    with sipp_uas("uas_busy") as sipp:
        result = await SipLeg(ua, clock, trunk(sipp.port), "1000").dial(lambda c, r: None)
    assert (result.status, result.sip_code) == (CallStatus.BUSY, 486)


async def test_ring_timeout_cancels(ua: UserAgent, clock: MediaClock) -> None:
    with sipp_uas("uas_noanswer") as sipp:
        leg = SipLeg(ua, clock, trunk(sipp.port, ring_timeout_s=1), "1000")
        result = await leg.dial(lambda c, r: None)
        log = sipp.messages
    assert (result.status, result.sip_code) == (CallStatus.NO_ANSWER, 487)
    assert "CANCEL sip:" in log


async def test_digest_challenge_is_answered(ua: UserAgent, clock: MediaClock) -> None:
    with sipp_uas("uas_auth_answer") as sipp:
        leg = SipLeg(ua, clock, trunk(sipp.port, username="dialer", password="s3cret"), "1000")
        result = await leg.dial(lambda c, r: None)
        assert result.status is CallStatus.ANSWERED
        await leg.hangup()


async def test_wrong_password_is_rejected(ua: UserAgent, clock: MediaClock) -> None:
    with sipp_uas("uas_auth_answer") as sipp:
        leg = SipLeg(ua, clock, trunk(sipp.port, username="dialer", password="nope"), "1000")
        result = await leg.dial(lambda c, r: None)
    assert (result.status, result.sip_code) == (CallStatus.REJECTED, 403)


async def test_nobody_there_fails(ua: UserAgent, clock: MediaClock) -> None:
    from tests.support import free_port

    # Over TCP a closed port is a transport error at once (over UDP timer B would take 32 s).
    leg = SipLeg(ua, clock, trunk(free_port(), transport="tcp"), "1000")
    result = await leg.dial(lambda c, r: None)
    assert (result.status, result.sip_code) == (CallStatus.FAILED, 503)


async def test_far_end_hangs_up(ua: UserAgent, clock: MediaClock) -> None:
    with sipp_uas("uas_answer_then_bye") as sipp:
        leg = SipLeg(ua, clock, trunk(sipp.port), "1000")
        assert (await leg.dial(lambda c, r: None)).status is CallStatus.ANSWERED
        await asyncio.wait_for(leg.wait_remote_hangup(), 5)
        await leg.hangup()  # nothing more to send: the dialog is over
        await asyncio.sleep(0.2)
        log = sipp.messages
    assert log.count("BYE sip:") == 1  # theirs only
    assert "SIP/2.0 200 OK" in log.split("BYE sip:")[1]


async def test_service_unavailable_fails(ua: UserAgent, clock: MediaClock) -> None:
    with sipp_uas("uas_503") as sipp:
        result = await SipLeg(ua, clock, trunk(sipp.port), "1000").dial(lambda c, r: None)
    assert (result.status, result.sip_code, result.sip_reason) == (
        CallStatus.FAILED,
        503,
        "Service Unavailable",
    )


async def test_early_media_then_answer(ua: UserAgent, clock: MediaClock) -> None:
    with sipp_uas("uas_early_media") as sipp:
        leg = SipLeg(ua, clock, trunk(sipp.port), "1000")
        progress: list[int] = []
        result = await leg.dial(lambda code, _reason: progress.append(code))
        assert result.status is CallStatus.ANSWERED and progress == [183]
        assert leg.session is not None
        # Media started on the 183 already: the far end's echo has been arriving since.
        await asyncio.sleep(0.3)
        assert leg.session.stats.packets_received > 0
        await leg.hangup()


async def test_reinvite_from_the_far_end_is_answered(ua: UserAgent, clock: MediaClock) -> None:
    with sipp_uas("uas_reinvite") as sipp:
        leg = SipLeg(ua, clock, trunk(sipp.port), "1000")
        assert (await leg.dial(lambda c, r: None)).status is CallStatus.ANSWERED
        await asyncio.sleep(1.2)  # SIPp re-INVITEs after 500 ms
        await asyncio.wait_for(leg.hangup(), 5)  # SIPp answers the BYE only if all went well
        await asyncio.sleep(0.3)
        log = sipp.messages
        assert sipp.process.poll() is None or sipp.process.returncode == 0
    reinvite_answer = log.split("CSeq: 1 INVITE")[-1]
    assert "SIP/2.0 200 OK" in log and "m=audio" in reinvite_answer
    assert "BYE sip:" in log


async def test_a_tcp_trunk(ua: UserAgent, clock: MediaClock) -> None:
    with sipp_uas("uas_answer_dtmf", "-t", "t1") as sipp:
        leg = SipLeg(ua, clock, trunk(sipp.port, transport="tcp"), "1000")
        result = await leg.dial(lambda c, r: None)
        assert result.status is CallStatus.ANSWERED
        await asyncio.wait_for(leg.hangup(), 5)
        log = sipp.messages
    assert "TCP message received" in log and "Via: SIP/2.0/TCP" in log


async def test_a_cancel_nobody_answers_ends_after_64_t1(clock: MediaClock) -> None:
    from voxflow.sip.transaction import TimerSettings

    agent = UserAgent(timers=TimerSettings(t1=0.02))  # 64*T1 = 1.28 s
    await agent.start("127.0.0.1")
    try:
        with sipp_uas("uas_ignore_cancel") as sipp:
            leg = SipLeg(agent, clock, trunk(sipp.port, ring_timeout_s=1), "1000")
            result = await asyncio.wait_for(leg.dial(lambda c, r: None), 10)
            assert "CANCEL sip:" in sipp.messages
    finally:
        await agent.close()
    assert (result.status, result.sip_code) == (CallStatus.NO_ANSWER, 408)
