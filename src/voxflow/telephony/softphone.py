"""``voxflow softphone``: our own stack as a SIP endpoint that answers every call.

It rings, answers after ``answer_after_s`` with an SDP answer, logs every keypress it receives
(RFC 4733 or SIP INFO) with its time from the answer, records the audio, and saves it as a WAV
when the caller hangs up. New users point their first trunk at it to see keypresses arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from voxflow.media.clock import MediaClock
from voxflow.media.recorder import Recorder
from voxflow.media.session import RtpSession
from voxflow.sip.message import SipRequest, SipResponse, make_response, new_tag
from voxflow.sip.sdp import NegotiationError, SdpError, SessionDescription, answer_for
from voxflow.sip.transport import Address
from voxflow.sip.uri import NameAddress, SipUri
from voxflow.sip.useragent import UserAgent

log = logging.getLogger("voxflow.softphone")

SDP = "application/sdp"
T1_S, T2_S, ACK_WAIT_S = 0.5, 4.0, 32.0


@dataclass
class AnsweredCall:
    call_id: str
    invite: SipRequest
    to_tag: str
    answered_at: float | None = None
    session: RtpSession | None = None
    recorder: Recorder = field(default_factory=Recorder)
    keypresses: list[tuple[str, float]] = field(default_factory=list)  # key, seconds after answer
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    answer_sdp: bytes = b""


class Softphone:
    def __init__(
        self, clock: MediaClock, *, answer_after_s: float = 0.5, record_dir: Path | None = None
    ) -> None:
        self.clock = clock
        self.answer_after_s = answer_after_s
        self.record_dir = record_dir
        self.ua = UserAgent(on_request=self._on_request)
        self.calls: dict[str, AnsweredCall] = {}

    async def start(self, host: str = "127.0.0.1", port: int = 5070) -> None:
        await self.ua.start(host, port)
        log.info("softphone listening on sip:%s:%d (udp and tcp)", self.ua.host, self.ua.port)

    async def close(self) -> None:
        for call in self.calls.values():
            await self._end(call, "softphone stopped")
        await self.ua.close()

    # ------------------------------------------------------------------ requests

    def _on_request(self, request: SipRequest, _source: Address) -> None:
        handler = {
            "INVITE": self._on_invite,
            "ACK": self._on_ack,
            "BYE": self._on_bye,
            "CANCEL": self._on_cancel,
            "INFO": self._on_info,
        }.get(request.method)
        if handler is not None:
            handler(request)
        else:
            self.ua.send_response(
                make_response(request, 200 if request.method == "OPTIONS" else 405)
            )

    def _on_invite(self, invite: SipRequest) -> None:
        if invite.call_id in self.calls:  # a re-INVITE: answer with what we have
            call = self.calls[invite.call_id]
            self._respond_2xx(call, invite)
            return
        call = AnsweredCall(invite.call_id, invite, new_tag())
        self.calls[invite.call_id] = call
        self.ua.send_response(make_response(invite, 180, to_tag=call.to_tag))
        call.tasks.append(asyncio.get_running_loop().create_task(self._answer(call)))

    async def _answer(self, call: AnsweredCall) -> None:
        await asyncio.sleep(self.answer_after_s)
        if call.ended.is_set():
            return
        call.session = await RtpSession.open(self.clock, host=self.ua.host, name=call.call_id)
        try:
            offer = SessionDescription.parse(call.invite.body)
            answer, negotiated = answer_for(offer, *call.session.local_address)
        except (SdpError, NegotiationError) as exc:
            self.ua.send_response(
                make_response(call.invite, 488, str(exc)[:60], to_tag=call.to_tag)
            )
            await self._end(call, "no usable SDP offer")
            return
        call.session.start(negotiated)
        call.session.add_audio_sink(call.recorder.write)
        call.answered_at = asyncio.get_running_loop().time()
        call.tasks.append(asyncio.get_running_loop().create_task(self._listen(call)))
        call.answer_sdp = bytes(answer)
        log.info("answered %s from %s", call.call_id, call.invite.from_)
        await self._send_2xx_until_acked(call, bytes(answer))

    def _respond_2xx(
        self, call: AnsweredCall, invite: SipRequest, body: bytes | None = None
    ) -> SipResponse:
        sdp = body if body is not None else call.answer_sdp
        contact = NameAddress(SipUri(host=self.ua.host, port=self.ua.port))
        ok = make_response(
            invite, 200, to_tag=call.to_tag, contact=contact, body=sdp, content_type=SDP
        )
        self.ua.send_response(ok)
        return ok

    async def _send_2xx_until_acked(self, call: AnsweredCall, sdp: bytes) -> None:
        """Our 2xx again, T1 doubling up to T2, until the ACK comes (RFC 3261 §13.3.1.4)."""
        ok = self._respond_2xx(call, call.invite, sdp)
        interval, waited = T1_S, 0.0
        while waited < ACK_WAIT_S and not call.acked.is_set() and not call.ended.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.acked.wait(), interval)
            waited += interval
            if not call.acked.is_set():
                self.ua.send_response(ok)
            interval = min(2 * interval, T2_S)

    async def _listen(self, call: AnsweredCall) -> None:
        assert call.session is not None
        while True:
            pressed = await call.session.keypresses.get()
            self._heard(call, pressed.key, pressed.start_time, "rfc4733")

    def _heard(self, call: AnsweredCall, key: str, at: float, how: str) -> None:
        offset = at - (call.answered_at or at)
        call.keypresses.append((key, offset))
        log.info("keypress %s at +%.3f s (%s) on %s", key, offset, how, call.call_id)

    def _on_ack(self, ack: SipRequest) -> None:
        call = self.calls.get(ack.call_id)
        if call is not None:
            call.acked.set()

    def _on_bye(self, bye: SipRequest) -> None:
        call = self.calls.get(bye.call_id)
        self.ua.send_response(make_response(bye, 200 if call is not None else 481))
        if call is not None:
            asyncio.get_running_loop().create_task(self._end(call, "caller hung up"))

    def _on_cancel(self, cancel: SipRequest) -> None:
        call = self.calls.get(cancel.call_id)
        self.ua.send_response(make_response(cancel, 200 if call is not None else 481))
        if call is not None and call.answered_at is None:
            self.ua.send_response(make_response(call.invite, 487, to_tag=call.to_tag))
            asyncio.get_running_loop().create_task(self._end(call, "cancelled"))

    def _on_info(self, info: SipRequest) -> None:
        call = self.calls.get(info.call_id)
        self.ua.send_response(make_response(info, 200 if call is not None else 481))
        if call is None:
            return
        for line in info.body.decode("utf-8", "replace").splitlines():
            name, _, value = line.partition("=")
            if name.strip().lower() == "signal" and value.strip():
                self._heard(
                    call, value.strip()[:1].upper(), asyncio.get_running_loop().time(), "info"
                )

    # ------------------------------------------------------------------ the end

    async def _end(self, call: AnsweredCall, reason: str) -> None:
        if call.ended.is_set():
            return
        call.ended.set()
        current = asyncio.current_task()
        for task in call.tasks:
            if task is not current:
                task.cancel()
        if call.session is not None:
            call.session.close()
        keys = " ".join(f"{k}@+{t:.3f}s" for k, t in call.keypresses) or "none"
        saved = self._save(call)
        log.info("call %s ended (%s); keypresses: %s%s", call.call_id, reason, keys, saved)

    def _save(self, call: AnsweredCall) -> str:
        if self.record_dir is None or call.answered_at is None:
            return ""
        self.record_dir.mkdir(parents=True, exist_ok=True)
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in call.call_id)
        path = self.record_dir / f"{name}.wav"
        call.recorder.save(path)
        return f"; audio saved to {path}"
