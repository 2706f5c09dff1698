"""Dialogs of a UA that places calls (RFC 3261 §12-§15), and what a call's end means; sans-IO.

Rules of this module:

- A :class:`Dialog` is created by the UAC from a 101-199 response with a To tag (early) or a
  2xx (confirmed) to its INVITE (§12.1.2). Its state is a :class:`DialogState` changed in one
  place, ``_set_state``, which logs every transition: EARLY -> CONFIRMED -> TERMINATED.
- The dialog builds the requests it sends (§12.2.1.1: loose and strict routing, CSeq, tags)
  and the ACK for every 2xx to its INVITEs (§13.2.2.4). It remembers each ACK, so a
  retransmitted 2xx is answered with the very same ACK.
- Requests it receives (§12.2.2) and responses to its requests go through
  ``receive_request`` / ``receive_response``, which return actions: :class:`Respond` (hand the
  response to the transaction layer), :class:`SendAck` (straight to the transport: an ACK for a
  2xx has no transaction), :class:`ArmTimer` / :class:`DisarmTimer` (its 2xx retransmission,
  §13.3.1.4), :class:`Ended` (the dialog is over) and :class:`AckMissing` (our 2xx was never
  ACKed: the TU should send BYE).
- :func:`classify_final` and friends map how an INVITE ended to a call :class:`Outcome`.
- Time comes in as ``now``; nothing here reads a clock or touches a socket.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from voxflow.sip.message import (
    SipRequest,
    SipResponse,
    Via,
    make_request,
    make_response,
    new_branch,
)
from voxflow.sip.transaction import DEFAULT_TIMERS, TimerSettings
from voxflow.sip.uri import NameAddress, Params, SipUri, Uri, UriError

log = logging.getLogger("voxflow.sip.dialog")

ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "UPDATE")
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE"})  # §12.2, RFC 3311 §5.1
SDP = "application/sdp"
DTMF_RELAY = "application/dtmf-relay"
DTMF_KEYS = frozenset("0123456789*#ABCD")
DTMF_DURATION_MS = 250
_AUTH_HEADERS = ("Authorization", "Proxy-Authorization")


class DialogError(ValueError):
    """A response that cannot create a dialog, or a request the dialog's state forbids."""


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogTimer(StrEnum):
    RETRANSMIT_2XX = "2xx retransmit"  # §13.3.1.4: T1, doubling up to T2
    WAIT_ACK = "2xx ACK wait"  # §13.3.1.4: 64*T1 without an ACK ends the session


@dataclass(frozen=True)
class DialogId:
    """Call-ID, local tag and remote tag (§12)."""

    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def of_response(cls, response: SipResponse) -> DialogId | None:
        """The dialog a response to our request belongs to (From is ours, To theirs)."""
        remote = response.to.tag
        local = response.from_.tag
        return cls(response.call_id, local, remote) if remote and local else None

    @classmethod
    def of_request(cls, request: SipRequest) -> DialogId | None:
        """The dialog a request we received belongs to (To is ours, From theirs)."""
        local = request.to.tag
        remote = request.from_.tag
        return cls(request.call_id, local, remote) if local and remote else None


# Actions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Respond:
    """Send ``response`` through the server transaction of its request."""

    response: SipResponse


@dataclass(frozen=True)
class SendAck:
    """Send ``ack`` to the next hop of its Request-URI / Route (:func:`next_hop`)."""

    ack: SipRequest


@dataclass(frozen=True)
class ArmTimer:
    timer: DialogTimer
    at: float


@dataclass(frozen=True)
class DisarmTimer:
    timer: DialogTimer


@dataclass(frozen=True)
class Ended:
    """The dialog is terminated; ``reason`` says why."""

    reason: str


@dataclass(frozen=True)
class AckMissing:
    """No ACK came for our 2xx within 64*T1: §13.3.1.4 says to end the session with BYE."""


DialogAction = Respond | SendAck | ArmTimer | DisarmTimer | Ended | AckMissing


@dataclass
class _PendingAnswer:
    response: SipResponse
    interval: float


def _sip(address: NameAddress, what: str) -> SipUri:
    try:
        return address.sip_uri
    except UriError as exc:
        raise DialogError(f"{what}: {exc}") from exc


class Dialog:
    """A dialog created by our INVITE (the UAC side, §12.1.2)."""

    def __init__(
        self,
        *,
        id: DialogId,  # the RFC's word
        state: DialogState,
        local: NameAddress,
        remote: NameAddress,
        remote_target: SipUri,
        route_set: list[NameAddress],
        local_cseq: int,
        local_contact: NameAddress | None,
        via: Via,
        timers: TimerSettings = DEFAULT_TIMERS,
    ) -> None:
        self.id = id
        self.state = state
        self.local = local
        self.remote = remote
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_cseq = local_cseq
        self.remote_cseq: int | None = None  # §12.1.2: empty until the peer sends a request
        self.local_contact = local_contact
        self.secure = remote_target.secure
        self.timers = timers
        self._via = via
        self._invites: dict[int, SipRequest] = {}
        self._acks: dict[int, SipRequest] = {}
        self._invite_pending = False  # our (re-)INVITE awaits its final response (§14.1)
        self._answer: _PendingAnswer | None = None  # our 2xx awaiting its ACK (§13.3.1.4)

    def __repr__(self) -> str:
        return f"<Dialog {self.id.call_id} {self.state.value}>"

    @classmethod
    def from_response(
        cls,
        invite: SipRequest,
        response: SipResponse,
        timers: TimerSettings = DEFAULT_TIMERS,
    ) -> Dialog:
        """The dialog a 101-199 with a To tag (early) or a 2xx (confirmed) creates (§12.1.2)."""
        if not 100 < response.status < 300 or response.cseq.method != "INVITE":
            raise DialogError(f"a {response.status} to {response.cseq.method} creates no dialog")
        dialog_id = DialogId.of_response(response)
        if dialog_id is None:
            raise DialogError("the response has no To tag")
        via = invite.via.copy()
        # The dialog's requests keep our sent-by and transport, and ask for rport (RFC 3581) again.
        via.params = Params((k, v) for k, v in via.params.items() if k.lower() == "rport")
        dialog = cls(
            id=dialog_id,
            state=DialogState.CONFIRMED if response.success else DialogState.EARLY,
            local=invite.from_,
            remote=response.to,
            remote_target=cls._target_of(response, invite.uri),
            route_set=cls._route_set_of(response),
            local_cseq=invite.cseq.number,
            local_contact=invite.contact,
            via=via,
            timers=timers,
        )
        dialog._invites[invite.cseq.number] = invite
        dialog._invite_pending = not response.success
        log.debug("%r created by %s", dialog, response.status)
        return dialog

    @staticmethod
    def _route_set_of(response: SipResponse) -> list[NameAddress]:
        # §12.1.2: the Record-Route values of the response, in reverse order.
        routes = list(reversed(response.record_routes))
        for route in routes:
            _sip(route, "Record-Route")
        return routes

    @staticmethod
    def _target_of(response: SipResponse, fallback: Uri) -> SipUri:
        # §12.1.2: the remote target is the Contact of the response. A 1xx may lack one; we
        # then keep the Request-URI until a response carries a Contact.
        contact = response.contact
        if contact is not None:
            return _sip(contact, "Contact")
        if isinstance(fallback, SipUri):
            return fallback.copy()
        raise DialogError("no SIP remote target")

    def _set_state(self, new: DialogState, reason: str) -> list[DialogAction]:
        if new is self.state:
            return []
        log.debug("%r -> %s on %s", self, new.value, reason)
        self.state = new
        if new is DialogState.TERMINATED:
            stops = self._stop_answer()
            return [*stops, Ended(reason)]
        return []

    # Requests we send ----------------------------------------------------------------------

    def make_request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> SipRequest:
        """A request within the dialog (§12.2.1.1): BYE, re-INVITE, UPDATE, INFO, OPTIONS.

        Sending BYE ends the dialog at once (§15.1.1). ACK has :meth:`make_ack`; CANCEL is
        not a dialog request (``transaction.make_cancel``).
        """
        if method in ("ACK", "CANCEL"):
            raise DialogError(f"{method} is not built by make_request")
        if self.state is DialogState.TERMINATED:
            raise DialogError(f"{self!r} is terminated")
        if method == "INVITE" and self._invite_pending:
            raise DialogError("an INVITE is already in progress on this dialog (§14.1)")
        self.local_cseq += 1  # §12.2.1.1: one more than the last, for every new request
        request = self._build(method, self.local_cseq, body, content_type, headers)
        if method == "INVITE":
            self._invites[self.local_cseq] = request
            self._invite_pending = True
        if method == "BYE":
            self._set_state(DialogState.TERMINATED, "BYE sent")
        return request

    def make_info_dtmf(self, key: str, duration_ms: int = DTMF_DURATION_MS) -> SipRequest:
        """An INFO carrying one DTMF key as ``application/dtmf-relay``."""
        key = key.upper()
        if key not in DTMF_KEYS or len(key) != 1:
            raise DialogError(f"not a DTMF key: {key!r}")
        body = f"Signal={key}\r\nDuration={duration_ms}\r\n".encode()
        return self.make_request("INFO", body=body, content_type=DTMF_RELAY)

    def make_ack(
        self, response: SipResponse, *, body: bytes = b"", content_type: str | None = None
    ) -> SipRequest:
        """The ACK for a 2xx to one of our INVITEs (§13.2.2.4).

        Built like any request in the dialog, but with the INVITE's CSeq number, the INVITE's
        credentials, and a branch of its own. The same ACK is returned for every copy of the 2xx.
        """
        number = response.cseq.number
        cached = self._acks.get(number)
        if cached is not None and not body:
            return cached
        invite = self._invites.get(number)
        if invite is None:
            raise DialogError(f"no INVITE with CSeq {number} in this dialog")
        credentials = [
            (name, value) for name in _AUTH_HEADERS for value in invite.headers.get_all(name)
        ]
        ack = self._build("ACK", number, body, content_type, credentials)
        self._acks[number] = ack
        return ack

    def _build(
        self,
        method: str,
        number: int,
        body: bytes,
        content_type: str | None,
        headers: Iterable[tuple[str, str]],
    ) -> SipRequest:
        uri, routes = self._request_target()
        via = self._via.copy()
        via.params["branch"] = new_branch()
        contact = self.local_contact if method in TARGET_REFRESH_METHODS else None
        return make_request(
            method,
            uri,
            from_=self.local,
            to=self.remote,
            via=via,
            call_id=self.id.call_id,
            cseq=number,
            contact=contact,
            routes=routes,
            headers=headers,
            body=body,
            content_type=content_type,
        )

    @property
    def next_hop(self) -> SipUri:
        """Where the dialog's requests go (§8.1.2): the first route, loose or strict, else the
        remote target. Resolve it with RFC 3263."""
        return _sip(self.route_set[0], "Route") if self.route_set else self.remote_target

    def _request_target(self) -> tuple[SipUri, list[NameAddress]]:
        """Request-URI and Route set for a new request (§12.2.1.1)."""
        if not self.route_set:
            return self.remote_target.copy(), []
        first = _sip(self.route_set[0], "Route")
        if first.lr:  # loose routing: Request-URI = remote target, Route = route set
            return self.remote_target.copy(), [route.copy() for route in self.route_set]
        # A strict router: its URI becomes the Request-URI, stripped of what a Request-URI may
        # not carry (§19.1.1 table: method and headers), and the remote target goes last.
        uri = first.copy()
        uri.headers = []
        uri.params.pop("method", None)
        routes = [route.copy() for route in self.route_set[1:]]
        return uri, [*routes, NameAddress(self.remote_target.copy())]

    # Responses to our requests -------------------------------------------------------------

    def receive_response(self, response: SipResponse, now: float) -> list[DialogAction]:
        """A response to a request of this dialog (or to the INVITE that created it)."""
        if response.cseq.method == "INVITE":
            return self._invite_response(response)
        if response.status in (408, 481):  # §12.2.1.2
            return self._set_state(
                DialogState.TERMINATED, f"{response.status} to {response.cseq.method}"
            )
        return []

    def _invite_response(self, response: SipResponse) -> list[DialogAction]:
        if response.provisional:
            return []
        self._invite_pending = False
        if response.success:
            return self._accept(response)
        if self.state is DialogState.EARLY or response.status in (408, 481):
            # §12.3 (an early dialog ends with a non-2xx final) and §12.2.1.2.
            return self._set_state(DialogState.TERMINATED, f"{response.status} {response.reason}")
        return []  # a re-INVITE failed: the session goes on as before (§14.1)

    def _accept(self, response: SipResponse) -> list[DialogAction]:
        if self.state is DialogState.EARLY:
            # §13.2.2.4: the route set is recomputed from the 2xx as the dialog is confirmed.
            self.route_set = self._route_set_of(response)
            self._set_state(DialogState.CONFIRMED, f"{response.status} {response.reason}")
        if self.state is DialogState.CONFIRMED and response.contact is not None:
            self.remote_target = _sip(response.contact, "Contact")  # §12.2.1.2 target refresh
        return [SendAck(self.make_ack(response))]

    # Requests from the peer ----------------------------------------------------------------

    def receive_request(
        self, request: SipRequest, now: float, *, sdp: bytes | None = None
    ) -> list[DialogAction]:
        """A request of this dialog from the peer (§12.2.2).

        ``sdp`` is our current session description: the answer to a re-INVITE or UPDATE
        offer, or our offer in the 2xx to a re-INVITE without one. BYE is answered 200 and ends
        the dialog; OPTIONS and INFO get 200; methods we do not handle get 501.
        """
        if request.method == "ACK":
            return self._on_ack(request)
        if self.state is DialogState.TERMINATED:
            return [Respond(make_response(request, 481))]
        number = request.cseq.number
        if self.remote_cseq is not None and number < self.remote_cseq:
            return [Respond(make_response(request, 500, "Out of order CSeq"))]
        self.remote_cseq = number
        if request.method in TARGET_REFRESH_METHODS:
            self._refresh_target(request)
        return self._answer_request(request, now, sdp)

    def _answer_request(
        self, request: SipRequest, now: float, sdp: bytes | None
    ) -> list[DialogAction]:
        method = request.method
        if method == "BYE":
            ok = Respond(make_response(request, 200))
            return [ok, *self._set_state(DialogState.TERMINATED, "BYE received")]
        if method == "INVITE":
            return self._answer_invite(request, now, sdp)
        if method == "UPDATE":
            return self._answer_update(request, sdp)
        if method == "OPTIONS":
            return [Respond(make_response(request, 200, headers=self._capabilities()))]
        if method == "INFO":
            return [Respond(make_response(request, 200))]
        allow = (("Allow", ", ".join(ALLOWED_METHODS)),)
        return [Respond(make_response(request, 501, headers=allow))]

    def _refresh_target(self, request: SipRequest) -> None:
        # §12.2.2: a target refresh request replaces the remote target with its Contact.
        contact = request.contact
        if contact is not None and isinstance(contact.uri, SipUri):
            self.remote_target = contact.uri

    def _capabilities(self) -> tuple[tuple[str, str], ...]:
        return (("Allow", ", ".join(ALLOWED_METHODS)), ("Accept", SDP))

    def _answer_invite(
        self, request: SipRequest, now: float, sdp: bytes | None
    ) -> list[DialogAction]:
        if self._invite_pending:  # §14.2: our own INVITE is in progress (glare)
            return [Respond(make_response(request, 491))]
        if sdp is None:
            return [Respond(make_response(request, 488, "No session description to answer with"))]
        ok = make_response(request, 200, contact=self.local_contact, body=sdp, content_type=SDP)
        stops = self._stop_answer()
        self._answer = _PendingAnswer(ok, self.timers.t1)
        return [
            *stops,
            Respond(ok),
            ArmTimer(DialogTimer.RETRANSMIT_2XX, now + self.timers.t1),
            ArmTimer(DialogTimer.WAIT_ACK, now + self.timers.timeout),
        ]

    def _answer_update(self, request: SipRequest, sdp: bytes | None) -> list[DialogAction]:
        if not request.body:  # RFC 3311: an UPDATE without an offer (a session refresh)
            return [Respond(make_response(request, 200, contact=self.local_contact))]
        if sdp is None:
            return [Respond(make_response(request, 488, "No session description to answer with"))]
        ok = make_response(request, 200, contact=self.local_contact, body=sdp, content_type=SDP)
        return [Respond(ok)]

    def _on_ack(self, ack: SipRequest) -> list[DialogAction]:
        answer = self._answer
        if answer is None or ack.cseq.number != answer.response.cseq.number:
            return []
        return self._stop_answer()

    def _stop_answer(self) -> list[DialogAction]:
        if self._answer is None:
            return []
        self._answer = None
        return [DisarmTimer(DialogTimer.RETRANSMIT_2XX), DisarmTimer(DialogTimer.WAIT_ACK)]

    def timer_fired(self, timer: DialogTimer, now: float) -> list[DialogAction]:
        """One of the dialog's timers passed its deadline."""
        answer = self._answer
        if answer is None:
            return []
        if timer is DialogTimer.RETRANSMIT_2XX:
            # §13.3.1.4: the 2xx again, the interval doubling up to T2.
            answer.interval = min(2 * answer.interval, self.timers.t2)
            return [Respond(answer.response), ArmTimer(timer, now + answer.interval)]
        self._answer = None
        return [DisarmTimer(DialogTimer.RETRANSMIT_2XX), AckMissing()]


def next_hop(request: SipRequest) -> Uri:
    """The URI to resolve (RFC 3263) to send a request outside a dialog (§8.1.2).

    The first Route when it is a loose router (an outbound proxy), else the Request-URI.
    A request whose route set began with a strict router cannot be told apart from its
    bytes: for requests within a dialog use :attr:`Dialog.next_hop`.
    """
    routes = request.routes
    if routes and isinstance(routes[0].uri, SipUri) and routes[0].uri.lr:
        return routes[0].uri
    return request.uri


# Call outcomes -------------------------------------------------------------------------------


class Outcome(StrEnum):
    """How an outbound call attempt ended, in the words of the call record."""

    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    REJECTED = "rejected"
    FAILED = "failed"


@dataclass(frozen=True)
class CallResult:
    outcome: Outcome
    code: int
    reason: str = field(default="")


_BUSY = frozenset({486, 600})


def classify_final(response: SipResponse, *, cancelled: bool = False) -> CallResult:
    """The outcome of an INVITE from its final response.

    2xx answered; 486 and 600 busy; 487 no-answer when we cancelled it (ring timeout) and
    rejected otherwise; 408, 3xx (redirects are not followed) and 5xx failed; every other
    4xx and 6xx rejected.
    """
    code = response.status
    if code < 200:
        raise ValueError(f"{code} is not a final response")
    return CallResult(_outcome_of(code, cancelled), code, response.reason)


def _outcome_of(code: int, cancelled: bool) -> Outcome:
    if code < 300:
        return Outcome.ANSWERED
    if code in _BUSY:
        return Outcome.BUSY
    if code == 487:
        return Outcome.NO_ANSWER if cancelled else Outcome.REJECTED
    if code == 408 or code < 400 or 500 <= code < 600:
        return Outcome.FAILED
    return Outcome.REJECTED


def classify_timeout(*, cancelled: bool = False) -> CallResult:
    """No final response at all: a local 408 (§8.1.3.1); no-answer if we had cancelled."""
    outcome = Outcome.NO_ANSWER if cancelled else Outcome.FAILED
    return CallResult(outcome, 408, "Request Timeout")


def classify_transport_error() -> CallResult:
    """The request could not be sent: a local 503 (§8.1.3.1)."""
    return CallResult(Outcome.FAILED, 503, "Service Unavailable")
