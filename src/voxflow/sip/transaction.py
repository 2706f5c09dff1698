"""SIP transactions (RFC 3261 §17, with RFC 6026's Accepted state), sans-IO.

Rules of this module, in the manner of h11's ``_state.py``:

- A transaction is a state machine. Its state is a :class:`State`, changed in exactly one
  place, ``_set_state``, which logs every transition.
- The legal moves are data: each kind of transaction has a table mapping
  ``(state, event) -> next state``. An event that has no entry is absorbed, as the RFC says
  for stray retransmissions; a self-loop entry means "stay, but act" (retransmit, re-ACK).
- What happens on a move is split in two: the *effect of the event* (send, deliver to the TU)
  and the *entry into the new state* (start and stop timers).
- Inputs are calls that carry ``now`` in float seconds: ``send_request``, ``receive``,
  ``send_response``, ``timer_fired``, ``transport_error``. Outputs are lists of actions
  (:class:`Send`, :class:`StartTimer`, :class:`StopTimer`, :class:`Deliver`, :class:`TimedOut`,
  :class:`TransportError`, :class:`Terminated`). Timers are absolute deadlines; the caller
  calls ``timer_fired`` when one passes, and may forget those it was told to stop.
- A timer whose value is zero on a reliable transport (D, I, J, K) fires at once, inside the
  same call; retransmission timers (A, E, G) only run over UDP (§17.1.1.2, §17.1.2.2, §17.2.1).
- Nothing here reads a clock, opens a socket or sleeps.

ACK for a non-2xx final response is built and sent by the INVITE client transaction
(§17.1.1.3); the ACK for a 2xx is the dialog's (§13.2.2.4). After a 2xx the INVITE client and
server transactions wait in Accepted (RFC 6026 §7.1, §7.2) so that 2xx retransmissions reach
the TU, which re-ACKs them.

A transaction that only waits (Accepted, Completed, Confirmed) forgets what it no longer
needs: the parsed request, and a response it will not repeat. It keeps its key, its timers
and the one message it may have to send again (the ACK of a non-2xx, the server's last final
response), so that thousands of finished calls waiting out Timer M, D, K or J stay small and
the cyclic garbage collector has little to walk (``LINGERING``, ``_linger``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import ClassVar, Protocol

from voxflow.sip.message import (
    BRANCH_MAGIC,
    Headers,
    MessageError,
    SipRequest,
    SipResponse,
    make_response,
)

log = logging.getLogger("voxflow.sip.transaction")

T1_S = 0.5  # §17.1.1.1: RTT estimate
T2_S = 4.0  # maximum retransmit interval for non-INVITE requests and INVITE responses
T4_S = 5.0  # maximum duration a message remains in the network
TIMER_D_UNRELIABLE_S = 32.0  # §17.1.1.2: "at least 32 seconds"


class Timer(StrEnum):
    A = "A"  # INVITE request retransmit (client, UDP)
    B = "B"  # INVITE transaction timeout (client)
    D = "D"  # wait for response retransmits (client INVITE, Completed)
    E = "E"  # non-INVITE request retransmit (client, UDP)
    F = "F"  # non-INVITE transaction timeout (client)
    G = "G"  # INVITE final response retransmit (server, UDP)
    H = "H"  # wait for ACK receipt (server INVITE)
    I = "I"  # noqa: E741  # wait for ACK retransmits (server INVITE, Confirmed)
    J = "J"  # wait for non-INVITE request retransmits (server)
    K = "K"  # wait for response retransmits (client non-INVITE)
    L = "L"  # RFC 6026: wait for INVITE retransmits in Accepted (server)
    M = "M"  # RFC 6026: wait for 2xx retransmits in Accepted (client)


@dataclass(frozen=True)
class TimerSettings:
    """T1, T2 and T4 (§17.1.1.1, table 4); every other timer derives from them."""

    t1: float = T1_S
    t2: float = T2_S
    t4: float = T4_S

    @property
    def timeout(self) -> float:
        """64*T1: timers B, F, H, J, L and M."""
        return 64 * self.t1


DEFAULT_TIMERS = TimerSettings()


class State(Enum):
    IDLE = "Idle"  # created, nothing sent or received yet
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class Event(Enum):
    SEND_REQUEST = "request from the TU"
    PROVISIONAL = "1xx response"
    SUCCESS = "2xx response"
    FAILURE = "300-699 response"
    REQUEST = "request"
    ACK = "ACK"
    SEND_PROVISIONAL = "1xx from the TU"
    SEND_SUCCESS = "2xx from the TU"
    SEND_FAILURE = "300-699 from the TU"
    TRANSPORT_ERROR = "transport error"


Input = Event | Timer


class Destination(Protocol):
    """Where a message goes: the transport's address type (``transport`` is "udp", "tcp"...)."""

    @property
    def transport(self) -> str: ...


def is_reliable(destination: Destination) -> bool:
    return destination.transport.lower() != "udp"


class TransactionError(Exception):
    """The TU asked for something the transaction's state does not allow (a bug, not input)."""


@dataclass(frozen=True)
class TransactionKey:
    """What matches a message to a transaction (§17.1.3, §17.2.3).

    Client: the branch of the top Via and the CSeq method. Server: the branch, the sent-by of
    the top Via and the method, an ACK counting as INVITE.
    """

    branch: str
    method: str
    sent_by: str | None = None  # None for client transactions

    @classmethod
    def for_client(cls, message: SipRequest | SipResponse) -> TransactionKey:
        """The client key of our request, or of a response to it (§17.1.3)."""
        return cls(message.via.branch or "", message.cseq.method)

    @classmethod
    def for_server(cls, message: SipRequest | SipResponse) -> TransactionKey:
        """The server key of a received request, or of our response to it (§17.2.3)."""
        via, cseq = message.via, message.cseq
        method = "INVITE" if cseq.method == "ACK" else cseq.method
        branch = via.branch or ""
        if branch.startswith(BRANCH_MAGIC):
            return cls(branch, method, via.sent_by.lower())
        # RFC 2543 peers send no usable branch: a simplified form of §17.2.3's fallback.
        legacy = f"rfc2543:{message.call_id}:{message.from_.tag}:{cseq.number}:{branch}"
        return cls(legacy, method, via.sent_by.lower())


# Actions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Pass ``message`` to the transport, for ``destination``."""

    key: TransactionKey
    message: SipRequest | SipResponse
    destination: Destination


@dataclass(frozen=True)
class StartTimer:
    """Call ``timer_fired(timer)`` at ``at`` (replacing any earlier deadline of that timer)."""

    key: TransactionKey
    timer: Timer
    at: float


@dataclass(frozen=True)
class StopTimer:
    key: TransactionKey
    timer: Timer


@dataclass(frozen=True)
class Deliver:
    """Pass ``message`` up to the TU; ``key`` is None when no transaction matched it."""

    key: TransactionKey | None
    message: SipRequest | SipResponse


@dataclass(frozen=True)
class TimedOut:
    """Timer B, F or H fired: the TU treats it as a 408 (§8.1.3.1) or as a lost ACK."""

    key: TransactionKey
    timer: Timer


@dataclass(frozen=True)
class TransportError:
    """The transport could not send (§17.1.4, §17.2.4): treat it as a 503 (§8.1.3.1)."""

    key: TransactionKey


@dataclass(frozen=True)
class Terminated:
    """The transaction is over and can be forgotten."""

    key: TransactionKey
    reason: str


Action = Send | StartTimer | StopTimer | Deliver | TimedOut | TransportError | Terminated


def _response_event(status: int, *, from_tu: bool) -> Event:
    if status < 200:
        return Event.SEND_PROVISIONAL if from_tu else Event.PROVISIONAL
    if status < 300:
        return Event.SEND_SUCCESS if from_tu else Event.SUCCESS
    return Event.SEND_FAILURE if from_tu else Event.FAILURE


def _describe(event: Input) -> str:
    return f"timer {event.value}" if isinstance(event, Timer) else event.value


# The machinery -------------------------------------------------------------------------------


class Transaction:
    """What all four kinds share: the table walk, state changes and timer bookkeeping."""

    TRANSITIONS: ClassVar[Mapping[tuple[State, Input], State]]
    LINGERING: ClassVar[frozenset[State]] = frozenset()  # states that only wait: no request
    kind: ClassVar[str]
    __slots__ = (
        "_deadlines",
        "_intervals",
        "_request",
        "destination",
        "key",
        "reliable",
        "state",
        "timers",
    )

    def __init__(
        self,
        key: TransactionKey,
        request: SipRequest,
        destination: Destination,
        timers: TimerSettings = DEFAULT_TIMERS,
    ) -> None:
        self.key = key
        self._request: SipRequest | None = request
        self.destination = destination
        self.timers = timers
        self.reliable = is_reliable(destination)
        self.state = State.IDLE
        self._deadlines: dict[Timer, float] = {}
        self._intervals: dict[Timer, float] = {}

    def __repr__(self) -> str:
        return f"<{self.kind} {self.key.method} {self.key.branch} {self.state.value}>"

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    @property
    def request(self) -> SipRequest:
        """The request of the transaction, until it only waits (``LINGERING``)."""
        if self._request is None:
            raise TransactionError(f"{self!r} no longer keeps its request")
        return self._request

    def _linger(self) -> None:
        """Entered a state that only waits: drop what will not be sent or read again."""
        self._request = None
        self._intervals.clear()

    def timer_fired(self, timer: Timer, now: float) -> list[Action]:
        """A timer this transaction started has passed its deadline."""
        if self._deadlines.pop(timer, None) is None:
            return []  # stopped or already handled: a late callback is harmless
        return self._handle(timer, now)

    def transport_error(self, now: float) -> list[Action]:
        """The transport failed to send one of this transaction's messages."""
        return self._handle(Event.TRANSPORT_ERROR, now)

    def _handle(
        self, event: Input, now: float, message: SipRequest | SipResponse | None = None
    ) -> list[Action]:
        new = self.TRANSITIONS.get((self.state, event))
        if new is None:
            log.debug("%r ignores %s", self, _describe(event))
            return []
        actions = self._effect(event, message, now)
        return actions + self._set_state(new, now, _describe(event))

    def _set_state(self, new: State, now: float, reason: str) -> list[Action]:
        if new is self.state:
            return []
        log.debug("%r -> %s on %s", self, new.value, reason)
        self.state = new
        if new is State.TERMINATED:
            stops: list[Action] = [StopTimer(self.key, timer) for timer in self._deadlines]
            self._deadlines.clear()
            self._linger()
            return [*stops, Terminated(self.key, reason)]
        actions = self._enter(new, now)
        if new in self.LINGERING:
            self._linger()
        return actions

    def _effect(
        self, event: Input, message: SipRequest | SipResponse | None, now: float
    ) -> list[Action]:
        """What the event itself does (send, deliver), before the state changes."""
        if event is Event.TRANSPORT_ERROR:
            return [TransportError(self.key)]
        if event in (Timer.B, Timer.F, Timer.H):
            return [TimedOut(self.key, event)]
        return []

    def _enter(self, state: State, now: float) -> list[Action]:
        """What entering ``state`` does (timers)."""
        return []

    def _start(self, timer: Timer, delay: float, now: float) -> list[Action]:
        if delay <= 0:  # a zero timer (reliable transport) fires at once
            return self._handle(timer, now)
        self._intervals[timer] = delay
        self._deadlines[timer] = now + delay
        return [StartTimer(self.key, timer, now + delay)]

    def _stop(self, *timers: Timer) -> list[Action]:
        return [StopTimer(self.key, t) for t in timers if self._deadlines.pop(t, None) is not None]

    def _send(self, message: SipRequest | SipResponse) -> Send:
        return Send(self.key, message, self.destination)


# Client transactions -------------------------------------------------------------------------


class ClientTransaction(Transaction):
    __slots__ = ()

    def send_request(self, now: float) -> list[Action]:
        """Send the request for the first time (the TU's initial event)."""
        if self.state is not State.IDLE:
            raise TransactionError(f"{self!r} has already sent its request")
        return self._handle(Event.SEND_REQUEST, now)

    def receive(self, response: SipResponse, now: float) -> list[Action]:
        """A response whose key matched this transaction."""
        return self._handle(_response_event(response.status, from_tu=False), now, response)


_S = State
_E = Event


class InviteClientTransaction(ClientTransaction):
    """§17.1.1, figure 5, with RFC 6026's Accepted state."""

    kind = "ICT"
    LINGERING = frozenset({State.ACCEPTED, State.COMPLETED})  # Completed keeps its ACK
    __slots__ = ("ack",)
    TRANSITIONS: ClassVar[Mapping[tuple[State, Input], State]] = {
        (_S.IDLE, _E.SEND_REQUEST): _S.CALLING,
        (_S.CALLING, Timer.A): _S.CALLING,
        (_S.CALLING, Timer.B): _S.TERMINATED,
        (_S.CALLING, _E.PROVISIONAL): _S.PROCEEDING,
        (_S.PROCEEDING, _E.PROVISIONAL): _S.PROCEEDING,
        (_S.CALLING, _E.SUCCESS): _S.ACCEPTED,
        (_S.PROCEEDING, _E.SUCCESS): _S.ACCEPTED,
        (_S.ACCEPTED, _E.SUCCESS): _S.ACCEPTED,  # RFC 6026 §8.4: 2xx retransmits go to the TU
        (_S.ACCEPTED, Timer.M): _S.TERMINATED,
        (_S.CALLING, _E.FAILURE): _S.COMPLETED,
        (_S.PROCEEDING, _E.FAILURE): _S.COMPLETED,
        (_S.COMPLETED, _E.FAILURE): _S.COMPLETED,  # §17.1.1.2: re-send the ACK, not to the TU
        (_S.COMPLETED, Timer.D): _S.TERMINATED,
        (_S.CALLING, _E.TRANSPORT_ERROR): _S.TERMINATED,
        (_S.PROCEEDING, _E.TRANSPORT_ERROR): _S.TERMINATED,
        (_S.ACCEPTED, _E.TRANSPORT_ERROR): _S.TERMINATED,
        (_S.COMPLETED, _E.TRANSPORT_ERROR): _S.TERMINATED,
    }

    def __init__(
        self,
        key: TransactionKey,
        request: SipRequest,
        destination: Destination,
        timers: TimerSettings = DEFAULT_TIMERS,
    ) -> None:
        super().__init__(key, request, destination, timers)
        self.ack: SipRequest | None = None

    def _effect(
        self, event: Input, message: SipRequest | SipResponse | None, now: float
    ) -> list[Action]:
        if event is Event.SEND_REQUEST:
            return [self._send(self.request)]
        if event is Timer.A:  # §17.1.1.2: retransmit, doubling the interval each time
            return [
                self._send(self.request),
                *self._start(Timer.A, 2 * self._intervals[Timer.A], now),
            ]
        if event in (Event.PROVISIONAL, Event.SUCCESS) and message is not None:
            return [Deliver(self.key, message)]
        if event is Event.FAILURE and isinstance(message, SipResponse):
            return self._acknowledge(message)
        return super()._effect(event, message, now)

    def _acknowledge(self, response: SipResponse) -> list[Action]:
        # §17.1.1.2: the first final response goes to the TU; every copy of it is ACKed.
        first = self.state is not State.COMPLETED
        if self.ack is None:
            self.ack = make_ack(self.request, response)
        actions: list[Action] = [self._send(self.ack)]
        return [*actions, Deliver(self.key, response)] if first else actions

    def _enter(self, state: State, now: float) -> list[Action]:
        if state is State.CALLING:
            retransmit = [] if self.reliable else self._start(Timer.A, self.timers.t1, now)
            return retransmit + self._start(Timer.B, self.timers.timeout, now)
        stops = self._stop(Timer.A, Timer.B)
        if state is State.ACCEPTED:
            return stops + self._start(Timer.M, self.timers.timeout, now)
        if state is State.COMPLETED:
            wait = 0.0 if self.reliable else TIMER_D_UNRELIABLE_S
            return stops + self._start(Timer.D, wait, now)
        return stops


class NonInviteClientTransaction(ClientTransaction):
    """§17.1.2, figure 6."""

    kind = "NICT"
    LINGERING = frozenset({State.COMPLETED})
    __slots__ = ()
    TRANSITIONS: ClassVar[Mapping[tuple[State, Input], State]] = {
        (_S.IDLE, _E.SEND_REQUEST): _S.TRYING,
        (_S.TRYING, Timer.E): _S.TRYING,
        (_S.PROCEEDING, Timer.E): _S.PROCEEDING,
        (_S.TRYING, Timer.F): _S.TERMINATED,
        (_S.PROCEEDING, Timer.F): _S.TERMINATED,
        (_S.TRYING, _E.PROVISIONAL): _S.PROCEEDING,
        (_S.PROCEEDING, _E.PROVISIONAL): _S.PROCEEDING,
        (_S.TRYING, _E.SUCCESS): _S.COMPLETED,
        (_S.TRYING, _E.FAILURE): _S.COMPLETED,
        (_S.PROCEEDING, _E.SUCCESS): _S.COMPLETED,
        (_S.PROCEEDING, _E.FAILURE): _S.COMPLETED,
        (_S.COMPLETED, Timer.K): _S.TERMINATED,
        (_S.TRYING, _E.TRANSPORT_ERROR): _S.TERMINATED,
        (_S.PROCEEDING, _E.TRANSPORT_ERROR): _S.TERMINATED,
    }

    def _effect(
        self, event: Input, message: SipRequest | SipResponse | None, now: float
    ) -> list[Action]:
        if event is Event.SEND_REQUEST:
            return [self._send(self.request)]
        if event is Timer.E:
            # §17.1.2.2: Trying doubles up to T2; Proceeding retransmits every T2.
            doubled = min(2 * self._intervals[Timer.E], self.timers.t2)
            interval = self.timers.t2 if self.state is State.PROCEEDING else doubled
            return [self._send(self.request), *self._start(Timer.E, interval, now)]
        if event in (Event.PROVISIONAL, Event.SUCCESS, Event.FAILURE) and message is not None:
            return [Deliver(self.key, message)]
        return super()._effect(event, message, now)

    def _enter(self, state: State, now: float) -> list[Action]:
        if state is State.TRYING:
            retransmit = [] if self.reliable else self._start(Timer.E, self.timers.t1, now)
            return retransmit + self._start(Timer.F, self.timers.timeout, now)
        if state is State.COMPLETED:
            wait = 0.0 if self.reliable else self.timers.t4
            return self._stop(Timer.E, Timer.F) + self._start(Timer.K, wait, now)
        return []


# Server transactions -------------------------------------------------------------------------


class ServerTransaction(Transaction):
    """A server transaction answers towards ``destination``: where the request came from.

    That is RFC 3581's symmetric response routing rather than §18.2.2's Via sent-by, which
    keeps answers flowing through NATs in front of trunks.
    """

    __slots__ = ("last_response",)

    def __init__(
        self,
        key: TransactionKey,
        request: SipRequest,
        destination: Destination,
        timers: TimerSettings = DEFAULT_TIMERS,
    ) -> None:
        super().__init__(key, request, destination, timers)
        self.last_response: SipResponse | None = None

    def receive(self, request: SipRequest, now: float) -> list[Action]:
        """The request that created this transaction, a retransmission of it, or an ACK."""
        event = Event.ACK if request.method == "ACK" else Event.REQUEST
        return self._handle(event, now, request)

    def send_response(self, response: SipResponse, now: float) -> list[Action]:
        """The TU answers (§17.2.1, §17.2.2)."""
        event = _response_event(response.status, from_tu=True)
        if (self.state, event) not in self.TRANSITIONS:
            raise TransactionError(f"{self!r} cannot send a {response.status} now")
        return self._handle(event, now, response)

    def _effect(
        self, event: Input, message: SipRequest | SipResponse | None, now: float
    ) -> list[Action]:
        if event is Event.REQUEST and isinstance(message, SipRequest):
            return self._on_request(message)
        if isinstance(message, SipResponse):  # the TU's response
            self.last_response = message
            return [self._send(message)]
        return super()._effect(event, message, now)

    def _on_request(self, request: SipRequest) -> list[Action]:
        if self.state is State.IDLE:
            return [Deliver(self.key, request)]
        # A retransmission: the last response goes out again, if there is one to repeat.
        return [self._send(self.last_response)] if self.last_response is not None else []


class InviteServerTransaction(ServerTransaction):
    """§17.2.1, figure 7, with RFC 6026's Accepted state."""

    kind = "IST"
    # Completed keeps its final response for timer G and retransmitted INVITEs; Accepted
    # (the TU retransmits its 2xx) and Confirmed repeat nothing.
    LINGERING = frozenset({State.ACCEPTED, State.COMPLETED, State.CONFIRMED})
    __slots__ = ()
    TRANSITIONS: ClassVar[Mapping[tuple[State, Input], State]] = {
        (_S.IDLE, _E.REQUEST): _S.PROCEEDING,
        (_S.PROCEEDING, _E.REQUEST): _S.PROCEEDING,
        (_S.PROCEEDING, _E.SEND_PROVISIONAL): _S.PROCEEDING,
        (_S.PROCEEDING, _E.SEND_SUCCESS): _S.ACCEPTED,
        (_S.ACCEPTED, _E.SEND_SUCCESS): _S.ACCEPTED,  # RFC 6026 §7.1: the TU's 2xx retransmits
        (_S.ACCEPTED, _E.ACK): _S.ACCEPTED,  # RFC 6026 §7.1: passed to the TU
        (_S.ACCEPTED, Timer.L): _S.TERMINATED,
        (_S.PROCEEDING, _E.SEND_FAILURE): _S.COMPLETED,
        (_S.COMPLETED, _E.REQUEST): _S.COMPLETED,
        (_S.COMPLETED, Timer.G): _S.COMPLETED,
        (_S.COMPLETED, Timer.H): _S.TERMINATED,
        (_S.COMPLETED, _E.ACK): _S.CONFIRMED,
        (_S.CONFIRMED, Timer.I): _S.TERMINATED,
        (_S.PROCEEDING, _E.TRANSPORT_ERROR): _S.TERMINATED,
        (_S.ACCEPTED, _E.TRANSPORT_ERROR): _S.TERMINATED,
        (_S.COMPLETED, _E.TRANSPORT_ERROR): _S.TERMINATED,
    }

    def _linger(self) -> None:
        self._request = None
        if self.state is not State.COMPLETED:  # Completed repeats its response on timer G
            self.last_response = None
            self._intervals.clear()

    def _effect(
        self, event: Input, message: SipRequest | SipResponse | None, now: float
    ) -> list[Action]:
        if event is Event.SEND_SUCCESS and self.state is State.ACCEPTED and message is not None:
            return [self._send(message)]  # the TU retransmits its 2xx; nothing to keep
        if event is Event.REQUEST and self.state is State.IDLE and message is not None:
            # §17.2.1: a 100 Trying at once, rather than guess whether the TU answers in 200 ms.
            trying = make_response(self.request, 100)
            self.last_response = trying
            return [self._send(trying), Deliver(self.key, message)]
        if event is Event.ACK and self.state is State.ACCEPTED and message is not None:
            return [Deliver(self.key, message)]  # an ACK in Completed is the transaction's
        if event is Timer.G and self.last_response is not None:
            interval = min(2 * self._intervals[Timer.G], self.timers.t2)
            return [self._send(self.last_response), *self._start(Timer.G, interval, now)]
        return super()._effect(event, message, now)

    def _enter(self, state: State, now: float) -> list[Action]:
        if state is State.ACCEPTED:
            return self._start(Timer.L, self.timers.timeout, now)
        if state is State.COMPLETED:
            retransmit = [] if self.reliable else self._start(Timer.G, self.timers.t1, now)
            return retransmit + self._start(Timer.H, self.timers.timeout, now)
        if state is State.CONFIRMED:
            wait = 0.0 if self.reliable else self.timers.t4
            return self._stop(Timer.G, Timer.H) + self._start(Timer.I, wait, now)
        return []


class NonInviteServerTransaction(ServerTransaction):
    """§17.2.2, figure 8."""

    kind = "NIST"
    LINGERING = frozenset({State.COMPLETED})  # keeps the final response to repeat
    __slots__ = ()
    TRANSITIONS: ClassVar[Mapping[tuple[State, Input], State]] = {
        (_S.IDLE, _E.REQUEST): _S.TRYING,
        (_S.TRYING, _E.REQUEST): _S.TRYING,  # nothing to repeat yet: discarded
        (_S.TRYING, _E.SEND_PROVISIONAL): _S.PROCEEDING,
        (_S.PROCEEDING, _E.SEND_PROVISIONAL): _S.PROCEEDING,
        (_S.PROCEEDING, _E.REQUEST): _S.PROCEEDING,
        (_S.TRYING, _E.SEND_SUCCESS): _S.COMPLETED,
        (_S.TRYING, _E.SEND_FAILURE): _S.COMPLETED,
        (_S.PROCEEDING, _E.SEND_SUCCESS): _S.COMPLETED,
        (_S.PROCEEDING, _E.SEND_FAILURE): _S.COMPLETED,
        (_S.COMPLETED, _E.REQUEST): _S.COMPLETED,
        (_S.COMPLETED, Timer.J): _S.TERMINATED,
        (_S.TRYING, _E.TRANSPORT_ERROR): _S.TERMINATED,
        (_S.PROCEEDING, _E.TRANSPORT_ERROR): _S.TERMINATED,
        (_S.COMPLETED, _E.TRANSPORT_ERROR): _S.TERMINATED,
    }

    def _enter(self, state: State, now: float) -> list[Action]:
        if state is State.COMPLETED:
            wait = 0.0 if self.reliable else self.timers.timeout
            return self._start(Timer.J, wait, now)
        return []


# Building ACK and CANCEL ---------------------------------------------------------------------


def _copy_core(request: SipRequest, method: str, to: str) -> Headers:
    """The top Via, Max-Forwards, Route, From, To, Call-ID and CSeq of a request (§9.1)."""
    headers = Headers([("Via", request.headers.get("Via") or "")])
    headers.add("Max-Forwards", request.headers.get("Max-Forwards") or "70")
    for route in request.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("From", request.require("From"))
    headers.add("To", to)
    headers.add("Call-ID", request.require("Call-ID"))
    headers.add("CSeq", f"{request.cseq.number} {method}")
    return headers


def make_ack(invite: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK for a non-2xx final response to ``invite`` (§17.1.1.3).

    Same Request-URI, Call-ID, From, top Via (so the same branch), Route and CSeq number as
    the INVITE; To from the response (it carries the UAS's tag); method ACK; no body.
    """
    headers = _copy_core(invite, "ACK", response.require("To"))
    return SipRequest("ACK", invite.uri, headers)


def make_cancel(invite: SipRequest) -> SipRequest:
    """A CANCEL for ``invite`` (§9.1).

    Same Request-URI, Call-ID, To, From, CSeq number and single top Via (so the same branch)
    as the INVITE, and the same Route set; method CANCEL; no body.
    """
    headers = _copy_core(invite, "CANCEL", invite.require("To"))
    return SipRequest("CANCEL", invite.uri, headers)


# The transaction layer -----------------------------------------------------------------------


class TransactionLayer:
    """All live transactions: matches messages to them (§17.1.3, §17.2.3), creates server
    transactions for new requests, and forgets each transaction once it has terminated.

    A response with no transaction, and an ACK with no INVITE server transaction (the ACK for
    a 2xx, §17.2.3), go to the TU as ``Deliver(None, message)``.
    """

    def __init__(self, timers: TimerSettings = DEFAULT_TIMERS) -> None:
        self.timers = timers
        self.clients: dict[TransactionKey, ClientTransaction] = {}
        self.servers: dict[TransactionKey, ServerTransaction] = {}

    def send_request(
        self, request: SipRequest, destination: Destination, now: float
    ) -> list[Action]:
        """Start a client transaction for ``request`` (which carries a fresh branch)."""
        if request.method == "ACK":
            raise TransactionError("an ACK is sent without a transaction")
        key = TransactionKey.for_client(request)
        if key in self.clients:
            raise TransactionError(f"a client transaction {key} already exists")
        kind = InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
        transaction = kind(key, request, destination, self.timers)
        self.clients[key] = transaction
        return self._forget_terminated(transaction.send_request(now))

    def send_response(self, response: SipResponse, now: float) -> list[Action]:
        """Send the TU's response through the server transaction of its request."""
        transaction = self.servers.get(TransactionKey.for_server(response))
        if transaction is None:
            raise TransactionError("no server transaction for this response")
        return self._forget_terminated(transaction.send_response(response, now))

    def receive(
        self, message: SipRequest | SipResponse, source: Destination, now: float
    ) -> list[Action]:
        """A parsed message from the transport; ``source`` is where it came from."""
        try:
            if isinstance(message, SipResponse):
                return self._receive_response(message, now)
            return self._receive_request(message, source, now)
        except MessageError as exc:  # no Via or CSeq: it cannot be matched (§8.2.1)
            log.info("dropping a message that cannot be matched: %s", exc)
            return []

    def _receive_response(self, response: SipResponse, now: float) -> list[Action]:
        transaction = self.clients.get(TransactionKey.for_client(response))
        if transaction is None:
            return [Deliver(None, response)]
        return self._forget_terminated(transaction.receive(response, now))

    def _receive_request(
        self, request: SipRequest, source: Destination, now: float
    ) -> list[Action]:
        key = TransactionKey.for_server(request)
        transaction = self.servers.get(key)
        if transaction is None and request.method == "ACK":
            return [Deliver(None, request)]
        if transaction is None:
            kind = (
                InviteServerTransaction
                if request.method == "INVITE"
                else NonInviteServerTransaction
            )
            transaction = kind(key, request, source, self.timers)
            self.servers[key] = transaction
        return self._forget_terminated(transaction.receive(request, now))

    def timer_fired(self, key: TransactionKey, timer: Timer, now: float) -> list[Action]:
        transaction = self._find(key)
        return (
            []
            if transaction is None
            else self._forget_terminated(transaction.timer_fired(timer, now))
        )

    def transport_error(self, key: TransactionKey, now: float) -> list[Action]:
        transaction = self._find(key)
        return (
            [] if transaction is None else self._forget_terminated(transaction.transport_error(now))
        )

    def find_invite(self, cancel: SipRequest) -> InviteServerTransaction | None:
        """The INVITE server transaction a received CANCEL targets (§9.2)."""
        key = TransactionKey.for_server(cancel)
        transaction = self.servers.get(TransactionKey(key.branch, "INVITE", key.sent_by))
        return transaction if isinstance(transaction, InviteServerTransaction) else None

    def _find(self, key: TransactionKey) -> Transaction | None:
        table: Mapping[TransactionKey, Transaction] = (
            self.clients if key.sent_by is None else self.servers
        )
        return table.get(key)

    def _forget_terminated(self, actions: list[Action]) -> list[Action]:
        for action in actions:
            if isinstance(action, Terminated):
                if action.key.sent_by is None:
                    self.clients.pop(action.key, None)
                else:
                    self.servers.pop(action.key, None)
        return actions
