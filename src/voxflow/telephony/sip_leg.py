"""A call leg over SIP through a trunk: INVITE with an SDP offer, digest retries, ring timeout
(CANCEL), early media, the answer, RFC 4733 or SIP INFO keypresses, BYE either way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from voxflow.domain.calls import CallStatus
from voxflow.media.clock import MediaClock
from voxflow.media.session import RtpSession
from voxflow.sip.auth import DigestClient
from voxflow.sip.dialog import (
    CallResult,
    Dialog,
    DialogError,
    Outcome,
    classify_final,
    classify_timeout,
    classify_transport_error,
)
from voxflow.sip.message import SipRequest, SipResponse, Via, make_request, new_call_id
from voxflow.sip.resolve import ResolveError, resolve
from voxflow.sip.sdp import NegotiationError, SdpError, SessionDescription, make_offer, negotiate
from voxflow.sip.transaction import make_cancel
from voxflow.sip.transport import Address, transport_for
from voxflow.sip.uri import NameAddress, Params, SipUri
from voxflow.sip.useragent import DialogOwner, Final, UserAgent
from voxflow.telephony.leg import DialResult, KeypressSent
from voxflow.trunks import Trunk

log = logging.getLogger("voxflow.sip.leg")

SDP = "application/sdp"
MAX_AUTH_ROUNDS = 3
_STATUS_OF = {
    Outcome.ANSWERED: CallStatus.ANSWERED,
    Outcome.BUSY: CallStatus.BUSY,
    Outcome.NO_ANSWER: CallStatus.NO_ANSWER,
    Outcome.REJECTED: CallStatus.REJECTED,
    Outcome.FAILED: CallStatus.FAILED,
}


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # it may have been cancelled in the same turn of the loop
        future.set_result(None)


def _result(result: CallResult, answered_at: float | None = None) -> DialResult:
    return DialResult(_STATUS_OF[result.outcome], result.code, result.reason, answered_at)


@dataclass
class SipLeg:
    ua: UserAgent
    clock: MediaClock
    trunk: Trunk
    number: str
    session: RtpSession | None = None
    dialog: Dialog | None = None
    destination: Address | None = None
    _offer: SessionDescription | None = None
    _ended: asyncio.Event = field(default_factory=asyncio.Event)
    _invite: SipRequest | None = None
    _cancelled: bool = False
    _ringing: bool = False

    # ------------------------------------------------------------------ dialling

    async def dial(self, on_ringing: Callable[[int, str], None]) -> DialResult:
        try:
            self.destination = await self._destination()
        except (ResolveError, ValueError) as exc:
            log.info("cannot resolve trunk %s: %s", self.trunk.name, exc)
            return DialResult(CallStatus.FAILED, 503, f"cannot resolve {self.trunk.host}")
        self.session = await RtpSession.open(
            self.clock,
            host=self.trunk.local_host,
            port_range=(self.trunk.rtp_port_min, self.trunk.rtp_port_max),
            name=self.number,
        )
        self._offer = make_offer(*self.session.local_address)
        result = await self._invite_with_auth(on_ringing)
        if result.status is not CallStatus.ANSWERED:
            await self._close_media()
        return result

    async def _destination(self) -> Address:
        host, port = self.trunk.host, self.trunk.port
        if self.trunk.proxy_address is not None:
            host, port = self.trunk.proxy_address
        targets = await resolve(host, port, self.trunk.transport)
        first = targets[0]
        return Address(first.ip, first.port, first.transport)

    def _build_invite(
        self, cseq: int, call_id: str, from_tag: str | None, auth: list[tuple[str, str]]
    ) -> SipRequest:
        assert self.destination is not None and self._offer is not None
        trunk, body = self.trunk, bytes(self._offer)
        uri = SipUri(host=trunk.host, user=self.number, port=trunk.port)
        local = SipUri(host=self.ua.host, user=trunk.caller_id.lstrip("+"))
        from_ = NameAddress(local, params=Params([("tag", from_tag)] if from_tag else []))
        transport = self.destination.transport.upper()
        via = Via(
            host=self.ua.host,
            port=self.ua.port,
            transport=transport,
            params=Params([("rport", None)]),
        )
        contact = NameAddress(SipUri(host=self.ua.host, user=local.user, port=self.ua.port))
        routes = []
        if trunk.proxy_address is not None:
            proxy_host, proxy_port = trunk.proxy_address
            routes.append(
                NameAddress(SipUri(host=proxy_host, port=proxy_port, params=Params([("lr", None)])))
            )
        return make_request(
            "INVITE",
            uri,
            from_=from_,
            to=NameAddress(SipUri(host=trunk.host, user=self.number)),
            via=via,
            call_id=call_id,
            cseq=cseq,
            contact=contact,
            routes=routes,
            headers=[("User-Agent", "voxflow"), *auth],
            body=body,
            content_type=SDP,
        )

    async def _invite_with_auth(self, on_ringing: Callable[[int, str], None]) -> DialResult:
        digest = (
            DigestClient(self.trunk.username, self.trunk.password)
            if self.trunk.authenticates
            else None
        )
        call_id, from_tag = new_call_id(self.ua.host), None
        auth: list[tuple[str, str]] = []
        for cseq in range(1, MAX_AUTH_ROUNDS + 2):
            invite = self._build_invite(cseq, call_id, from_tag, auth)
            if self._needs_tcp(invite):  # RFC 3261 §18.1.1: too large for UDP
                invite = self._build_invite(cseq, call_id, from_tag, auth)
            from_tag = invite.from_.tag
            final = await self._ring(invite, on_ringing)
            response = final.response
            if response is None or response.status not in (401, 407) or digest is None:
                return self._conclude(invite, final)
            header = "Proxy-Authenticate" if response.status == 407 else "WWW-Authenticate"
            if not digest.on_challenge(
                response.headers.get_all(header), proxy=response.status == 407
            ):
                return self._conclude(invite, final)
            auth = digest.headers("INVITE", str(invite.uri), invite.body)
        return DialResult(CallStatus.REJECTED, 401, "authentication failed")

    def _needs_tcp(self, request: SipRequest) -> bool:
        assert self.destination is not None
        size = len(bytes(request))
        if transport_for(size, self.destination.transport) == self.destination.transport:
            return False
        self.destination = Address(self.destination.host, self.destination.port, "tcp")
        return True

    async def _ring(self, invite: SipRequest, on_ringing: Callable[[int, str], None]) -> Final:
        assert self.destination is not None
        self._invite = invite
        loop = asyncio.get_running_loop()
        timeout = loop.call_later(self.trunk.ring_timeout_s, self._cancel)

        def provisional(response: SipResponse, _at: float) -> None:
            if response.status > 100:
                on_ringing(response.status, response.reason)
                self._early_media(response)

        self._ringing = True  # stays True if we are cancelled meanwhile: hangup() CANCELs
        try:
            final = await self.ua.request(invite, self.destination, provisional)
        finally:
            timeout.cancel()
        self._ringing = False
        return final

    def _cancel(self) -> None:
        """Ring timeout: CANCEL the INVITE (§9.1); its 487 then ends the attempt."""
        if self._invite is None or self.destination is None:
            return
        self._cancelled = True
        invite = self._invite
        cancel = make_cancel(invite)
        loop = asyncio.get_running_loop()
        task = loop.create_task(self.ua.request(cancel, self.destination))
        task.add_done_callback(lambda t: t.exception())
        # §9.1: with no final response 64*T1 after the CANCEL, the INVITE has failed.
        loop.call_later(self.ua.layer.timers.timeout, self.ua.give_up, invite)

    def _early_media(self, response: SipResponse) -> None:
        if response.status == 183 and response.body and self.session is not None:
            with contextlib.suppress(SdpError, NegotiationError, ValueError):
                self.session.start(negotiate(self._offer, SessionDescription.parse(response.body)))  # type: ignore[arg-type]

    def _conclude(self, invite: SipRequest, final: Final) -> DialResult:
        response = final.response
        if response is None:
            if final.timed_out:
                return _result(classify_timeout(cancelled=self._cancelled))
            return _result(classify_transport_error())
        result = classify_final(response, cancelled=self._cancelled)
        if result.outcome is not Outcome.ANSWERED:
            return _result(result)
        return self._answered(invite, response, final.received_at)

    def _answered(self, invite: SipRequest, response: SipResponse, at: float) -> DialResult:
        assert self.destination is not None and self.session is not None and self._offer is not None
        dialog = Dialog.from_response(invite, response)
        self.dialog = dialog
        owner = DialogOwner(
            dialog,
            self.destination,
            current_sdp=lambda: bytes(self._offer) if self._offer else None,
            on_ended=lambda _reason: self._ended.set(),
        )
        self.ua.add_dialog(owner)
        for action in dialog.receive_response(response, at):
            ack = getattr(action, "ack", None)
            if ack is not None:
                self.ua.send_ack(ack, self.destination)
        try:
            self.session.start(negotiate(self._offer, SessionDescription.parse(response.body)))
        except (SdpError, NegotiationError, ValueError) as exc:
            log.info("answer without usable SDP: %s", exc)
            asyncio.get_running_loop().create_task(self.hangup())
            return DialResult(CallStatus.FAILED, 488, f"unusable SDP answer: {exc}")
        return DialResult(CallStatus.ANSWERED, response.status, response.reason, at)

    # ------------------------------------------------------------------ in the call

    async def send_keypress(self, key: str, at: float, tone_ms: int) -> KeypressSent:
        loop = asyncio.get_running_loop()
        if at > loop.time():
            due: asyncio.Future[None] = loop.create_future()
            handle = loop.call_at(at, _resolve, due)
            try:
                await due
            finally:
                handle.cancel()
        if self.trunk.dtmf == "info":
            return await self._info_keypress(key, at, tone_ms)
        assert self.session is not None
        sent = await self.session.send_keypress(key, tone_ms, immediately=True)
        return KeypressSent(
            key, at, sent.started_at if sent.started_at is not None else loop.time()
        )

    async def _info_keypress(self, key: str, at: float, tone_ms: int) -> KeypressSent:
        assert self.dialog is not None and self.destination is not None
        info = self.dialog.make_info_dtmf(key, tone_ms)
        actual = asyncio.get_running_loop().time()
        await self.ua.request(info, self.destination)
        return KeypressSent(key, at, actual)

    async def wait_remote_hangup(self) -> None:
        await self._ended.wait()

    async def hangup(self) -> None:
        if self.dialog is None and self._ringing and not self._cancelled:
            self._cancel()  # still ringing: CANCEL the INVITE (§9.1)
        if self.dialog is not None and self.destination is not None and not self._ended.is_set():
            try:
                bye = self.dialog.make_request("BYE")
            except DialogError:
                bye = None
            if bye is not None:
                self._ended.set()
                await self.ua.request(bye, self.destination)
        if self.dialog is not None:
            self.ua.remove_dialog(self.dialog)
        await self._close_media()

    async def _close_media(self) -> None:
        if self.session is not None:
            self.session.close()
            await self.session.wait_closed()
