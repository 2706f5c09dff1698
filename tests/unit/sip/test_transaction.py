from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from voxflow.sip.message import (
    SipRequest,
    SipResponse,
    Via,
    make_request,
    make_response,
    new_branch,
    parse_message,
)
from voxflow.sip.transaction import (
    Action,
    Deliver,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    Send,
    StartTimer,
    State,
    StopTimer,
    Terminated,
    TimedOut,
    Timer,
    TimerSettings,
    TransactionError,
    TransactionKey,
    TransactionLayer,
    TransportError,
    make_ack,
    make_cancel,
)
from voxflow.sip.uri import Params, parse_name_addr, parse_uri


@dataclass(frozen=True)
class Peer:
    host: str = "192.0.2.20"
    port: int = 5060
    transport: str = "udp"


UDP = Peer()
TCP = Peer(transport="tcp")


def request(
    method: str = "INVITE", *, branch: str | None = None, host: str = "192.0.2.10"
) -> SipRequest:
    return make_request(
        method,
        parse_uri("sip:bob@biloxi.example.com"),
        from_=parse_name_addr("<sip:alice@atlanta.example.com>;tag=1928301774"),
        to=parse_name_addr("<sip:bob@biloxi.example.com>"),
        via=Via(host=host, port=5060, params=Params([("branch", branch or new_branch())])),
        call_id="a84b4c76e66710",
        cseq=314159,
        routes=[parse_name_addr("<sip:proxy.example.com;lr>")],
    )


def response(req: SipRequest, status: int, tag: str = "a6c85cf") -> SipResponse:
    return make_response(req, status, to_tag=None if status == 100 else tag)


def kinds(actions: list[Action]) -> list[str]:
    out = []
    for action in actions:
        match action:
            case Send(message=SipRequest() as m):
                out.append(f"send {m.method}")
            case Send(message=SipResponse() as m):
                out.append(f"send {m.status}")
            case StartTimer(timer=t, at=at):
                out.append(f"start {t} {at:g}")
            case StopTimer(timer=t):
                out.append(f"stop {t}")
            case Deliver(message=SipRequest() as m):
                out.append(f"deliver {m.method}")
            case Deliver(message=SipResponse() as m):
                out.append(f"deliver {m.status}")
            case TimedOut(timer=t):
                out.append(f"timeout {t}")
            case TransportError():
                out.append("transport error")
            case Terminated():
                out.append("terminated")
    return out


def ict(destination: Peer = UDP) -> tuple[InviteClientTransaction, SipRequest]:
    req = request()
    return InviteClientTransaction(TransactionKey.for_client(req), req, destination), req


def nict(destination: Peer = UDP) -> tuple[NonInviteClientTransaction, SipRequest]:
    req = request("OPTIONS")
    return NonInviteClientTransaction(TransactionKey.for_client(req), req, destination), req


def ist(source: Peer = UDP) -> tuple[InviteServerTransaction, SipRequest]:
    req = request()
    return InviteServerTransaction(TransactionKey.for_server(req), req, source), req


def nist(source: Peer = UDP) -> tuple[NonInviteServerTransaction, SipRequest]:
    req = request("BYE")
    return NonInviteServerTransaction(TransactionKey.for_server(req), req, source), req


# INVITE client (§17.1.1, RFC 6026) ------------------------------------------------------------


def test_ict_retransmits_with_doubling_intervals_then_times_out() -> None:
    t, _ = ict()
    assert kinds(t.send_request(0.0)) == ["send INVITE", "start A 0.5", "start B 32"]
    assert t.state is State.CALLING
    now, deadlines = 0.5, []
    for _ in range(6):
        actions = t.timer_fired(Timer.A, now)
        assert kinds(actions)[0] == "send INVITE"
        start = actions[1]
        assert isinstance(start, StartTimer)
        deadlines.append(start.at)
        now = start.at
    assert deadlines == [1.5, 3.5, 7.5, 15.5, 31.5, 63.5]  # A doubles without a cap (§17.1.1.2)
    assert kinds(t.timer_fired(Timer.B, 32.0)) == ["timeout B", "stop A", "terminated"]
    assert t.terminated
    assert t.timer_fired(Timer.A, 63.5) == []  # a stale timer is harmless


def test_ict_provisional_stops_retransmissions_and_b() -> None:
    t, req = ict()
    t.send_request(0.0)
    assert kinds(t.receive(response(req, 100), 0.1)) == ["deliver 100", "stop A", "stop B"]
    assert t.state is State.PROCEEDING
    assert kinds(t.receive(response(req, 180), 0.2)) == ["deliver 180"]
    assert t.timer_fired(Timer.A, 0.5) == [] and t.timer_fired(Timer.B, 32) == []


def test_ict_2xx_goes_to_accepted_and_every_2xx_reaches_the_tu() -> None:
    t, req = ict()
    t.send_request(0.0)
    t.receive(response(req, 180), 0.1)
    assert kinds(t.receive(response(req, 200), 1.0)) == ["deliver 200", "start M 33"]
    assert t.state is State.ACCEPTED
    assert kinds(t.receive(response(req, 200), 2.0)) == ["deliver 200"]  # RFC 6026 §8.4
    assert t.receive(response(req, 180), 2.5) == []  # a late 1xx: absorbed
    assert kinds(t.timer_fired(Timer.M, 33.0)) == ["terminated"]


def test_ict_non_2xx_is_acked_by_the_transaction() -> None:
    t, req = ict()
    t.send_request(0.0)
    busy = response(req, 486)
    actions = t.receive(busy, 0.3)
    assert kinds(actions) == ["send ACK", "deliver 486", "stop A", "stop B", "start D 32.3"]
    ack = actions[0].message  # type: ignore[union-attr]
    assert isinstance(ack, SipRequest)
    # §17.1.1.3: same Request-URI, Call-ID, From, top Via, Route and CSeq number; To of the response.
    assert ack.method == "ACK" and ack.uri == req.uri
    assert ack.call_id == req.call_id and ack.from_ == req.from_
    assert ack.to.tag == "a6c85cf"
    assert ack.headers.get_all("Via") == req.headers.get_all("Via")[:1]
    assert ack.routes == req.routes
    assert (ack.cseq.number, ack.cseq.method) == (314159, "ACK")
    assert ack.body == b""
    # A retransmitted 486: the same ACK again, nothing for the TU.
    again = t.receive(busy, 1.0)
    assert kinds(again) == ["send ACK"] and again[0].message is ack  # type: ignore[union-attr]
    assert kinds(t.timer_fired(Timer.D, 32.3)) == ["terminated"]


def test_ict_over_tcp_has_no_timer_a_and_no_timer_d() -> None:
    t, req = ict(TCP)
    assert kinds(t.send_request(0.0)) == ["send INVITE", "start B 32"]
    assert kinds(t.receive(response(req, 603), 1.0)) == [
        "send ACK",
        "deliver 603",
        "stop B",
        "terminated",
    ]


def test_ict_transport_error() -> None:
    t, _ = ict()
    t.send_request(0.0)
    assert kinds(t.transport_error(0.0)) == ["transport error", "stop A", "stop B", "terminated"]


def test_ict_refuses_a_second_send() -> None:
    t, _ = ict()
    t.send_request(0.0)
    with pytest.raises(TransactionError):
        t.send_request(1.0)


# Non-INVITE client (§17.1.2) ------------------------------------------------------------------


def test_nict_timer_e_caps_at_t2_and_f_times_out() -> None:
    t, _ = nict()
    assert kinds(t.send_request(0.0)) == ["send OPTIONS", "start E 0.5", "start F 32"]
    now, intervals = 0.5, []
    for _ in range(6):
        start = t.timer_fired(Timer.E, now)[1]
        assert isinstance(start, StartTimer)
        intervals.append(start.at - now)
        now = start.at
    assert intervals == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert kinds(t.timer_fired(Timer.F, 32.0)) == ["timeout F", "stop E", "terminated"]


def test_nict_proceeding_retransmits_every_t2() -> None:
    t, req = nict()
    t.send_request(0.0)
    assert kinds(t.receive(response(req, 100), 0.2)) == ["deliver 100"]
    assert kinds(t.timer_fired(Timer.E, 0.5)) == ["send OPTIONS", "start E 4.5"]
    assert kinds(t.receive(response(req, 200), 1.0)) == [
        "deliver 200",
        "stop E",
        "stop F",
        "start K 6",
    ]
    assert t.receive(response(req, 200), 2.0) == []  # absorbed in Completed
    assert kinds(t.timer_fired(Timer.K, 6.0)) == ["terminated"]


def test_nict_over_tcp() -> None:
    t, req = nict(TCP)
    assert kinds(t.send_request(0.0)) == ["send OPTIONS", "start F 32"]
    assert kinds(t.receive(response(req, 404), 0.1)) == ["deliver 404", "stop F", "terminated"]


def test_custom_timer_settings() -> None:
    req = request("OPTIONS")
    t = NonInviteClientTransaction(
        TransactionKey.for_client(req), req, UDP, TimerSettings(t1=0.1, t2=0.3)
    )
    assert kinds(t.send_request(0.0)) == ["send OPTIONS", "start E 0.1", "start F 6.4"]


# INVITE server (§17.2.1, RFC 6026) ------------------------------------------------------------


def test_ist_sends_100_and_repeats_the_last_provisional() -> None:
    t, req = ist()
    assert kinds(t.receive(req, 0.0)) == ["send 100", "deliver INVITE"]
    assert kinds(t.receive(req, 0.5)) == ["send 100"]
    assert kinds(t.send_response(response(req, 180), 0.6)) == ["send 180"]
    assert kinds(t.receive(req, 1.5)) == ["send 180"]


def test_ist_failure_is_retransmitted_until_acked() -> None:
    t, req = ist()
    t.receive(req, 0.0)
    assert kinds(t.send_response(response(req, 486), 1.0)) == [
        "send 486",
        "start G 1.5",
        "start H 33",
    ]
    intervals, now = [], 1.5
    for _ in range(5):
        start = t.timer_fired(Timer.G, now)[1]
        assert isinstance(start, StartTimer)
        intervals.append(start.at - now)
        now = start.at
    assert intervals == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert kinds(t.receive(req, 20.0)) == ["send 486"]
    ack = make_ack(req, response(req, 486))
    assert kinds(t.receive(ack, 21.0)) == ["stop G", "stop H", "start I 26"]
    assert t.state is State.CONFIRMED
    assert t.receive(ack, 22.0) == []  # absorbed
    assert kinds(t.timer_fired(Timer.I, 26.0)) == ["terminated"]


def test_ist_timer_h_without_ack() -> None:
    t, req = ist()
    t.receive(req, 0.0)
    t.send_response(response(req, 500), 0.0)
    assert kinds(t.timer_fired(Timer.H, 32.0)) == ["timeout H", "stop G", "terminated"]


def test_ist_accepted_absorbs_invites_and_passes_2xx_retransmissions() -> None:
    t, req = ist()
    t.receive(req, 0.0)
    ok = response(req, 200)
    assert kinds(t.send_response(ok, 1.0)) == ["send 200", "start L 33"]
    assert t.state is State.ACCEPTED
    assert t.receive(req, 1.5) == []  # RFC 6026 §7.1: absorbed, not passed to the TU
    assert kinds(t.send_response(ok, 1.5)) == ["send 200"]  # the TU's retransmission
    with pytest.raises(TransactionError):
        t.send_response(response(req, 486), 2.0)
    assert kinds(t.timer_fired(Timer.L, 33.0)) == ["terminated"]


def test_ist_over_tcp() -> None:
    t, req = ist(TCP)
    t.receive(req, 0.0)
    assert kinds(t.send_response(response(req, 486), 1.0)) == ["send 486", "start H 33"]
    assert kinds(t.receive(make_ack(req, response(req, 486)), 1.1)) == ["stop H", "terminated"]


# Non-INVITE server (§17.2.2) ------------------------------------------------------------------


def test_nist() -> None:
    t, req = nist()
    assert kinds(t.receive(req, 0.0)) == ["deliver BYE"]
    assert t.receive(req, 0.1) == []  # Trying: nothing to repeat
    assert kinds(t.send_response(response(req, 100), 0.2)) == ["send 100"]
    assert kinds(t.receive(req, 0.3)) == ["send 100"]
    assert kinds(t.send_response(response(req, 200), 0.4)) == ["send 200", "start J 32.4"]
    assert kinds(t.receive(req, 1.0)) == ["send 200"]
    with pytest.raises(TransactionError):
        t.send_response(response(req, 200), 1.1)
    assert kinds(t.timer_fired(Timer.J, 32.4)) == ["terminated"]


def test_nist_over_tcp_and_transport_error() -> None:
    t, req = nist(TCP)
    t.receive(req, 0.0)
    assert kinds(t.send_response(response(req, 200), 0.1)) == ["send 200", "terminated"]
    t, req = nist()
    t.receive(req, 0.0)
    assert kinds(t.transport_error(0.1)) == ["transport error", "terminated"]


# Matching (§17.1.3, §17.2.3) ------------------------------------------------------------------


def test_layer_matches_responses_by_branch_and_method() -> None:
    layer = TransactionLayer()
    invite = request()
    cancel = make_cancel(invite)
    layer.send_request(invite, UDP, 0.0)
    layer.send_request(cancel, UDP, 1.0)
    assert len(layer.clients) == 2
    ok = layer.receive(response(cancel, 200), UDP, 1.1)
    assert kinds(ok) == ["deliver 200", "stop E", "stop F", "start K 6.1"]
    assert ok[0].key == TransactionKey.for_client(cancel)  # type: ignore[union-attr]
    terminated = layer.receive(response(invite, 487), UDP, 1.2)
    assert kinds(terminated)[:2] == ["send ACK", "deliver 487"]
    stray = request()  # an unknown branch
    assert layer.receive(response(stray, 200), UDP, 1.3) == [Deliver(None, response(stray, 200))]


def test_layer_creates_server_transactions_and_absorbs_retransmissions() -> None:
    layer = TransactionLayer()
    invite = request()
    assert kinds(layer.receive(invite, UDP, 0.0)) == ["send 100", "deliver INVITE"]
    assert kinds(layer.receive(invite, UDP, 0.5)) == ["send 100"]
    # Same branch from another sent-by is another transaction (§17.2.3).
    other = request(branch=invite.via.branch, host="198.51.100.7")
    assert kinds(layer.receive(other, UDP, 0.6)) == ["send 100", "deliver INVITE"]
    assert len(layer.servers) == 2
    layer.send_response(response(invite, 486), 1.0)
    ack = make_ack(invite, response(invite, 486))
    assert kinds(layer.receive(ack, UDP, 1.1)) == ["stop G", "stop H", "start I 6.1"]
    # The ACK for a 2xx has a branch of its own: no transaction, straight to the TU.
    ack_2xx = request("ACK")
    assert layer.receive(ack_2xx, UDP, 1.2) == [Deliver(None, ack_2xx)]


def test_layer_cancel_finds_its_invite() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.receive(invite, UDP, 0.0)
    cancel = make_cancel(invite)
    assert kinds(layer.receive(cancel, UDP, 0.1)) == ["deliver CANCEL"]
    found = layer.find_invite(cancel)
    assert found is not None and found.request is invite
    assert layer.find_invite(make_cancel(request())) is None
    assert kinds(layer.send_response(response(cancel, 200), 0.2)) == ["send 200", "start J 32.2"]
    assert kinds(layer.send_response(response(invite, 487), 0.2))[0] == "send 487"


def test_layer_forgets_terminated_transactions_and_refuses_misuse() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    layer.send_request(req, TCP, 0.0)
    assert kinds(layer.receive(response(req, 200), TCP, 0.1))[-1] == "terminated"
    assert not layer.clients
    with pytest.raises(TransactionError):
        layer.send_response(response(request("BYE"), 200), 0.0)
    with pytest.raises(TransactionError):
        layer.send_request(request("ACK"), UDP, 0.0)
    layer.send_request(req, UDP, 1.0)
    with pytest.raises(TransactionError):
        layer.send_request(req, UDP, 1.0)
    key = TransactionKey.for_client(req)
    assert kinds(layer.transport_error(key, 1.1)) == [
        "transport error",
        "stop E",
        "stop F",
        "terminated",
    ]
    assert layer.timer_fired(key, Timer.E, 2.0) == []


def test_layer_drops_what_cannot_be_matched() -> None:
    layer = TransactionLayer()
    bare = parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\n\r\n")
    assert layer.receive(bare, UDP, 0.0) == []


def test_rfc2543_requests_without_branch_are_matched_by_dialog_fields() -> None:
    layer = TransactionLayer()
    invite = request()
    invite.headers.set("Via", "SIP/2.0/UDP 192.0.2.10:5060")
    assert kinds(layer.receive(invite, UDP, 0.0)) == ["send 100", "deliver INVITE"]
    assert kinds(layer.receive(invite, UDP, 0.1)) == ["send 100"]
    layer.send_response(response(invite, 603), 0.2)
    ack = make_ack(invite, response(invite, 603))
    assert kinds(layer.receive(ack, UDP, 0.3)) == ["stop G", "stop H", "start I 5.3"]


# Loss patterns over an in-memory network ------------------------------------------------------

Drop = Callable[[str, SipRequest | SipResponse], bool]


@dataclass
class Network:
    """A UAC layer and a UAS layer joined by a lossy link with 10 ms latency, on a fake clock.

    Every message crosses as bytes and is parsed again. The UAS answers each INVITE with
    ``final`` (after ``ring`` seconds of 180) and every other request with 200.
    """

    drop: Drop = lambda direction, message: False
    duplicate: bool = False
    final: int = 486
    ring: float = 0.0
    transport: str = "udp"
    now: float = 0.0
    uac: TransactionLayer = field(default_factory=TransactionLayer)
    uas: TransactionLayer = field(default_factory=TransactionLayer)
    uac_got: list[SipRequest | SipResponse] = field(default_factory=list)
    uas_got: list[SipRequest | SipResponse] = field(default_factory=list)
    timeouts: list[tuple[str, Timer]] = field(default_factory=list)
    sent: list[tuple[str, str]] = field(default_factory=list)
    _events: list[tuple[float, int, str, object]] = field(default_factory=list)
    _timers: dict[tuple[str, TransactionKey, Timer], float] = field(default_factory=dict)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def peer(self) -> Peer:
        return Peer(transport=self.transport)

    def start(self, req: SipRequest) -> None:
        self.apply("uac", self.uac.send_request(req, self.peer(), self.now))

    def apply(self, side: str, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Send(message=message):
                    self._send(side, message)
                case StartTimer(key=key, timer=timer, at=at):
                    self._timers[(side, key, timer)] = at
                    heapq.heappush(self._events, (at, next(self._seq), "timer", (side, key, timer)))
                case StopTimer(key=key, timer=timer):
                    self._timers.pop((side, key, timer), None)
                case Deliver(message=message):
                    (self.uac_got if side == "uac" else self.uas_got).append(message)
                    if side == "uas" and isinstance(message, SipRequest):
                        self._answer(message)
                case TimedOut(timer=timer):
                    self.timeouts.append((side, timer))

    def _send(self, side: str, message: SipRequest | SipResponse) -> None:
        label = message.method if isinstance(message, SipRequest) else str(message.status)
        self.sent.append((side, label))
        direction = "up" if side == "uac" else "down"
        if self.drop(direction, message):
            return
        for copy in range(2 if self.duplicate else 1):
            arrival = self.now + 0.01 + copy * 0.001
            heapq.heappush(
                self._events, (arrival, next(self._seq), "packet", (side, bytes(message)))
            )

    def _answer(self, req: SipRequest) -> None:
        if req.method == "ACK":
            return
        if req.method == "CANCEL":  # §9.2: 200 to the CANCEL, 487 to the INVITE
            self.apply(
                "uas", self.uas.send_response(make_response(req, 200, to_tag="uas"), self.now)
            )
            invite = self.uas.find_invite(req)
            if invite is not None and invite.state is State.PROCEEDING:
                terminated = make_response(invite.request, 487, to_tag="uas")
                self.apply("uas", self.uas.send_response(terminated, self.now))
            return
        if req.method == "INVITE" and self.ring:
            self.apply(
                "uas", self.uas.send_response(make_response(req, 180, to_tag="uas"), self.now)
            )
            heapq.heappush(self._events, (self.now + self.ring, next(self._seq), "answer", req))
            return
        status = self.final if req.method == "INVITE" else 200
        self.apply(
            "uas", self.uas.send_response(make_response(req, status, to_tag="uas"), self.now)
        )

    def run(self, until: float = 120.0) -> None:
        while self._events and self._events[0][0] <= until:
            at, _, kind, payload = heapq.heappop(self._events)
            self.now = at
            if kind == "packet":
                side, data = payload  # type: ignore[misc]
                target = "uas" if side == "uac" else "uac"
                layer = self.uas if target == "uas" else self.uac
                self.apply(target, layer.receive(parse_message(data), self.peer(), at))
            elif kind == "timer":
                side, key, timer = payload  # type: ignore[misc]
                if self._timers.get((side, key, timer)) == at:
                    del self._timers[(side, key, timer)]
                    layer = self.uac if side == "uac" else self.uas
                    self.apply(side, layer.timer_fired(key, timer, at))
            else:
                self._answer_after_ringing(payload)  # type: ignore[arg-type]

    def _answer_after_ringing(self, req: SipRequest) -> None:
        invite = self.uas.servers.get(TransactionKey.for_server(req))
        if invite is not None and invite.state is State.PROCEEDING:  # not cancelled meanwhile
            final = make_response(req, self.final, to_tag="uas")
            self.apply("uas", self.uas.send_response(final, self.now))

    def statuses(self) -> list[int]:
        return [m.status for m in self.uac_got if isinstance(m, SipResponse)]


def drop_first(count: int, match: Callable[[SipRequest | SipResponse], bool]) -> Drop:
    seen = itertools.count()

    def drop(direction: str, message: SipRequest | SipResponse) -> bool:
        return match(message) and next(seen) < count

    return drop


def is_method(method: str) -> Callable[[SipRequest | SipResponse], bool]:
    return lambda m: isinstance(m, SipRequest) and m.method == method


def is_status(status: int) -> Callable[[SipRequest | SipResponse], bool]:
    return lambda m: isinstance(m, SipResponse) and m.status == status


def settled(net: Network) -> bool:
    return not net.uac.clients and not net.uas.servers


@pytest.mark.parametrize("lost", [0, 1, 3, 5])
def test_lost_invites_are_retransmitted(lost: int) -> None:
    net = Network(drop=drop_first(lost, is_method("INVITE")))
    net.start(request())
    net.run()
    assert net.sent.count(("uac", "INVITE")) == lost + 1
    assert net.statuses() == [100, 486]  # the TU sees the final response once
    assert [m.method for m in net.uas_got if isinstance(m, SipRequest)] == ["INVITE"]
    assert settled(net)


def test_lost_final_responses_are_retransmitted_by_timer_g() -> None:
    net = Network(drop=drop_first(2, is_status(486)))
    net.start(request())
    net.run()
    # The 100 Trying stopped timer A, so only G brings the 486 back.
    assert net.sent.count(("uac", "INVITE")) == 1
    assert net.sent.count(("uas", "486")) == 3
    assert net.statuses() == [100, 486]
    assert net.sent.count(("uac", "ACK")) == 1
    assert settled(net)


def test_lost_ack_is_resent_when_the_final_response_comes_again() -> None:
    net = Network(drop=drop_first(2, is_method("ACK")))
    net.start(request())
    net.run()
    assert net.sent.count(("uac", "ACK")) == 3
    assert net.sent.count(("uas", "486")) == 3
    assert net.statuses() == [100, 486]
    assert not net.timeouts and settled(net)


def test_duplicated_messages_reach_each_tu_once() -> None:
    net = Network(duplicate=True, final=603)
    net.start(request())
    net.run()
    assert net.statuses() == [100, 603]
    assert [m.method for m in net.uas_got if isinstance(m, SipRequest)] == ["INVITE"]
    assert settled(net)


def test_2xx_retransmissions_all_reach_the_uac_tu() -> None:
    # RFC 6026: the 2xx and its copies pass through Accepted to the TU, which ACKs (dialog).
    net = Network(duplicate=True, final=200)
    net.start(request())
    net.run()
    # The second 100 arrives after the 200: absorbed in Accepted.
    assert net.statuses() == [100, 200, 200]
    assert not net.timeouts
    assert settled(net)  # both sides left Accepted after 64*T1 (timers L and M)


def test_a_ringing_call_does_not_time_out_in_proceeding() -> None:
    net = Network(ring=45.0, final=200)  # longer than timer B
    net.start(request())
    net.run(until=200.0)
    assert net.statuses() == [100, 180, 200]
    assert not net.timeouts


def test_everything_lost_times_out_after_64_t1() -> None:
    net = Network(drop=lambda direction, message: True)
    net.start(request())
    net.run()
    assert net.timeouts == [("uac", Timer.B)]
    assert net.sent.count(("uac", "INVITE")) == 7  # at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5
    assert settled(net)


@pytest.mark.parametrize("lost", [0, 2, 4])
def test_non_invite_over_lossy_udp(lost: int) -> None:
    net = Network(drop=drop_first(lost, is_method("OPTIONS")))
    net.start(request("OPTIONS"))
    net.run()
    assert net.statuses() == [200]
    assert net.sent.count(("uac", "OPTIONS")) == lost + 1
    assert settled(net)


def test_non_invite_lost_response_is_repeated_for_the_retransmitted_request() -> None:
    net = Network(drop=drop_first(1, is_status(200)))
    net.start(request("BYE"))
    net.run()
    assert net.sent.count(("uac", "BYE")) == 2 and net.sent.count(("uas", "200")) == 2
    assert net.statuses() == [200]


def test_tcp_sends_each_message_once() -> None:
    net = Network(transport="tcp")
    net.start(request())
    net.run(until=1.0)
    assert net.sent == [("uac", "INVITE"), ("uas", "100"), ("uas", "486"), ("uac", "ACK")]
    assert settled(net)  # within a second: timers D and I are zero on TCP


def test_reordered_2xx_before_1xx() -> None:
    t, req = ict()
    t.send_request(0.0)
    assert kinds(t.receive(response(req, 200), 0.1))[0] == "deliver 200"
    assert t.receive(response(req, 180), 0.2) == []  # the late 1xx never reaches the TU
    assert t.state is State.ACCEPTED


def test_make_cancel_follows_9_1() -> None:
    invite = request()
    invite.headers.add("Via", "SIP/2.0/UDP below.example.com;branch=z9hG4bKbelow")
    cancel = make_cancel(invite)
    assert cancel.method == "CANCEL" and cancel.uri == invite.uri
    assert (
        cancel.call_id == invite.call_id and cancel.from_ == invite.from_ and cancel.to == invite.to
    )
    assert (cancel.cseq.number, cancel.cseq.method) == (invite.cseq.number, "CANCEL")
    assert cancel.headers.get_all("Via") == invite.headers.get_all("Via")[:1]
    assert cancel.routes == invite.routes and cancel.body == b""
    assert TransactionKey.for_client(cancel).branch == TransactionKey.for_client(invite).branch


# Lingering: a transaction that only waits keeps no parsed request ----------------------------


def test_ict_accepted_forgets_its_invite_and_still_passes_2xx_retransmissions() -> None:
    t, req = ict()
    t.send_request(0.0)
    t.receive(response(req, 200), 0.2)
    assert t.state is State.ACCEPTED
    with pytest.raises(TransactionError):
        _ = t.request  # waiting out timer M: the INVITE is gone
    # RFC 6026 §8.4: each 2xx copy still reaches the TU, which re-ACKs it; 1xx are absorbed.
    assert kinds(t.receive(response(req, 200), 5.0)) == ["deliver 200"]
    assert kinds(t.receive(response(req, 200), 9.0)) == ["deliver 200"]
    assert t.receive(response(req, 183), 9.5) == []
    assert kinds(t.timer_fired(Timer.M, 32.2)) == ["terminated"]


def test_ict_completed_forgets_its_invite_and_re_sends_the_same_ack() -> None:
    t, req = ict()
    t.send_request(0.0)
    busy = response(req, 486)
    first = t.receive(busy, 0.3)
    ack = first[0].message  # type: ignore[union-attr]
    assert t.state is State.COMPLETED
    with pytest.raises(TransactionError):
        _ = t.request
    # §17.1.1.2: every retransmitted final response is absorbed and ACKed again.
    for at in (0.8, 1.8, 3.8):
        again = t.receive(busy, at)
        assert kinds(again) == ["send ACK"] and again[0].message is ack  # type: ignore[union-attr]
    assert bytes(ack) == bytes(make_ack(req, busy))
    assert kinds(t.timer_fired(Timer.D, 32.3)) == ["terminated"]


def test_nict_completed_forgets_its_request_and_absorbs_response_copies() -> None:
    t, req = nict()
    t.send_request(0.0)
    assert kinds(t.receive(response(req, 200), 0.1)) == [
        "deliver 200",
        "stop E",
        "stop F",
        "start K 5.1",
    ]
    with pytest.raises(TransactionError):
        _ = t.request
    assert t.receive(response(req, 200), 0.6) == []
    assert t.timer_fired(Timer.E, 0.5) == []  # stopped: a late callback does nothing
    assert kinds(t.timer_fired(Timer.K, 5.1)) == ["terminated"]


def test_ist_completed_keeps_only_its_final_response_and_confirmed_nothing() -> None:
    t, req = ist()
    t.receive(req, 0.0)
    busy = response(req, 486)
    t.send_response(busy, 0.1)
    with pytest.raises(TransactionError):
        _ = t.request
    assert t.last_response is busy
    assert kinds(t.timer_fired(Timer.G, 0.6)) == ["send 486", "start G 1.6"]  # interval doubled
    assert kinds(t.receive(req, 0.7)) == ["send 486"]  # a retransmitted INVITE
    t.receive(make_ack(req, busy), 1.0)
    assert t.state is State.CONFIRMED and t.last_response is None
    assert t.receive(req, 1.1) == [] and t.receive(make_ack(req, busy), 1.2) == []


def test_ist_accepted_keeps_no_response_while_the_tu_retransmits_its_2xx() -> None:
    t, req = ist()
    t.receive(req, 0.0)
    ok = response(req, 200)
    t.send_response(ok, 0.1)
    assert t.state is State.ACCEPTED and t.last_response is None
    assert kinds(t.send_response(ok, 0.6)) == ["send 200"]
    assert t.last_response is None
    assert t.receive(req, 0.7) == []


def test_nist_completed_repeats_its_response_without_its_request() -> None:
    t, req = nist()
    t.receive(req, 0.0)
    ok = response(req, 200)
    t.send_response(ok, 0.1)
    with pytest.raises(TransactionError):
        _ = t.request
    again = t.receive(req, 0.5)
    assert kinds(again) == ["send 200"] and again[0].message is ok  # type: ignore[union-attr]


def test_layer_keeps_finished_invites_slim_over_lossy_udp() -> None:
    """Through the layer, over the lossy network: a lost ACK for a 486 is made up for."""
    net = Network(drop=drop_first(1, is_method("ACK")), final=486)
    net.start(request())
    net.run(until=2.0)
    (waiting,) = net.uac.clients.values()
    assert waiting.state is State.COMPLETED and waiting._request is None
    net.run()
    assert net.sent.count(("uac", "ACK")) == 2 and settled(net)
