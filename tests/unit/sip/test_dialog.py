from __future__ import annotations

import math

import pytest

from tests.unit.sip.test_transaction import Network, request, settled
from voxflow.sip.dialog import (
    AckMissing,
    ArmTimer,
    CallResult,
    Dialog,
    DialogAction,
    DialogError,
    DialogId,
    DialogState,
    DialogTimer,
    DisarmTimer,
    Ended,
    Outcome,
    Respond,
    SendAck,
    classify_final,
    classify_timeout,
    classify_transport_error,
    next_hop,
)
from voxflow.sip.message import (
    BRANCH_MAGIC,
    SipRequest,
    SipResponse,
    Via,
    make_request,
    make_response,
    parse_message,
)
from voxflow.sip.transaction import make_cancel
from voxflow.sip.uri import NameAddress, Params, SipUri, parse_name_addr, parse_uri

SDP_OFFER = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\n"
SDP_OURS = b"v=0\r\no=- 1 2 IN IP4 192.0.2.10\r\n"
CONTACT = "<sip:bob@192.0.2.4:5070;transport=udp>"
RECORD_ROUTES = ["<sip:p2.example.net;lr>", "<sip:p1.example.com;lr>"]  # p1 is nearest to us


def invite() -> SipRequest:
    request = make_request(
        "INVITE",
        parse_uri("sip:+441234567890@trunk.example.com"),
        from_=parse_name_addr('"Shop" <sip:shop@voxflow.example.org>;tag=ourtag'),
        to=parse_name_addr("<sip:+441234567890@trunk.example.com>"),
        via=Via(host="192.0.2.10", port=5060, params=Params([("rport", None)])),
        call_id="call-1@192.0.2.10",
        cseq=1,
        contact=parse_name_addr("<sip:shop@192.0.2.10:5060>"),
        routes=[parse_name_addr("<sip:p1.example.com;lr>")],
        headers=[("Proxy-Authorization", 'Digest username="shop", response="abc"')],
        body=SDP_OFFER,
        content_type="application/sdp",
    )
    return SipRequest.parse(bytes(request))


def answer(
    request: SipRequest,
    status: int,
    *,
    tag: str = "bobtag",
    contact: str = CONTACT,
    record_routes: list[str] = RECORD_ROUTES,
) -> SipResponse:
    response = make_response(request, status, to_tag=tag, contact=parse_name_addr(contact))
    for route in record_routes:
        response.headers.add("Record-Route", route)
    return SipResponse.parse(bytes(response))


def confirmed(record_routes: list[str] = RECORD_ROUTES) -> tuple[Dialog, SipRequest, SipResponse]:
    inv = invite()
    ok = answer(inv, 200, record_routes=record_routes)
    dialog = Dialog.from_response(inv, ok)
    dialog.receive_response(ok, 1.0)
    return dialog, inv, ok


def from_peer(
    dialog: Dialog, method: str, cseq: int, *, body: bytes = b"", contact: str | None = None
) -> SipRequest:
    """A request the peer sends within the dialog."""
    request = make_request(
        method,
        parse_uri("sip:shop@192.0.2.10:5060"),
        from_=dialog.remote,
        to=dialog.local,
        via=Via(host="192.0.2.4", port=5070),
        call_id=dialog.id.call_id,
        cseq=cseq,
        contact=parse_name_addr(contact) if contact else None,
        body=body,
        content_type="application/sdp" if body else None,
    )
    return SipRequest.parse(bytes(request))


def responses(actions: list[DialogAction]) -> list[int]:
    return [a.response.status for a in actions if isinstance(a, Respond)]


# Creation (§12.1.2) ---------------------------------------------------------------------------


def test_early_dialog_from_a_1xx_with_a_tag() -> None:
    inv = invite()
    dialog = Dialog.from_response(inv, answer(inv, 180))
    assert dialog.state is DialogState.EARLY
    assert dialog.id == DialogId("call-1@192.0.2.10", "ourtag", "bobtag")
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.net;lr",
    ]
    assert str(dialog.remote_target) == "sip:bob@192.0.2.4:5070;transport=udp"
    assert dialog.local_cseq == 1 and dialog.remote_cseq is None
    assert dialog.remote.tag == "bobtag" and dialog.local.tag == "ourtag"
    assert not dialog.secure


@pytest.mark.parametrize("status", [100, 486, 603])
def test_no_dialog_from_100_or_failures(status: int) -> None:
    inv = invite()
    with pytest.raises(DialogError):
        Dialog.from_response(inv, answer(inv, status))


def test_no_dialog_without_a_to_tag() -> None:
    inv = invite()
    ringing = make_response(inv, 180)
    with pytest.raises(DialogError, match="To tag"):
        Dialog.from_response(inv, ringing)


def test_a_1xx_without_contact_keeps_the_request_uri_as_target() -> None:
    inv = invite()
    ringing = make_response(inv, 183, to_tag="t")
    dialog = Dialog.from_response(inv, ringing)
    assert dialog.remote_target == inv.uri and dialog.route_set == []


def test_2xx_confirms_recomputes_the_route_set_and_acks() -> None:
    inv = invite()
    dialog = Dialog.from_response(inv, answer(inv, 180, record_routes=["<sip:old.example.com;lr>"]))
    ok = answer(inv, 200, contact="<sip:bob@192.0.2.99>")
    actions = dialog.receive_response(ok, 2.0)
    assert dialog.state is DialogState.CONFIRMED
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.net;lr",
    ]
    assert str(dialog.remote_target) == "sip:bob@192.0.2.99"
    [send] = actions
    assert isinstance(send, SendAck)
    ack = send.ack
    # §13.2.2.4: built like an in-dialog request, with the INVITE's CSeq number and credentials.
    assert ack.method == "ACK" and str(ack.uri) == "sip:bob@192.0.2.99"
    assert [str(r.uri) for r in ack.routes] == ["sip:p1.example.com;lr", "sip:p2.example.net;lr"]
    assert (ack.cseq.number, ack.cseq.method) == (1, "ACK")
    assert ack.call_id == inv.call_id and ack.from_.tag == "ourtag" and ack.to.tag == "bobtag"
    assert ack.via.branch != inv.via.branch and (ack.via.branch or "").startswith(BRANCH_MAGIC)
    assert ack.via.sent_by == "192.0.2.10:5060" and "rport" in ack.via.params
    assert ack.headers.get("Proxy-Authorization") == inv.headers.get("Proxy-Authorization")
    assert ack.body == b"" and "Contact" not in ack.headers
    assert SipRequest.parse(bytes(ack)) == ack


def test_retransmitted_2xx_gets_the_same_ack() -> None:
    dialog, _, ok = confirmed()
    first = dialog.receive_response(ok, 1.5)
    second = dialog.receive_response(ok, 2.5)
    assert first == second and isinstance(first[0], SendAck)
    assert first[0].ack is second[0].ack  # type: ignore[union-attr]
    assert dialog.local_cseq == 1  # an ACK takes no new CSeq number


def test_2xx_retransmissions_through_the_transaction_layer_are_reacked() -> None:
    net = Network(duplicate=True, final=200)
    inv = invite()
    net.start(inv)
    net.run()
    oks = [m for m in net.uac_got if isinstance(m, SipResponse) and m.status == 200]
    assert len(oks) == 2
    dialog = Dialog.from_response(inv, oks[0])
    acks = [action for ok in oks for action in dialog.receive_response(ok, net.now)]
    assert len(acks) == 2 and acks[0] == acks[1]


def test_forked_2xx_belong_to_different_dialogs() -> None:
    inv = invite()
    first = DialogId.of_response(answer(inv, 200, tag="a"))
    second = DialogId.of_response(answer(inv, 200, tag="b"))
    assert first is not None and second is not None and first != second
    assert DialogId.of_response(make_response(inv, 100)) is None


def test_early_dialog_ends_with_a_failure() -> None:
    inv = invite()
    dialog = Dialog.from_response(inv, answer(inv, 180))
    assert dialog.receive_response(answer(inv, 180), 1.0) == []
    assert dialog.receive_response(answer(inv, 486), 2.0) == [Ended("486 Busy Here")]
    assert dialog.state is DialogState.TERMINATED


# Requests we send (§12.2.1.1) -----------------------------------------------------------------


def test_bye_uses_loose_routing_and_ends_the_dialog() -> None:
    dialog, inv, _ = confirmed()
    bye = dialog.make_request("BYE")
    assert str(bye.uri) == "sip:bob@192.0.2.4:5070;transport=udp"
    assert [str(r.uri) for r in bye.routes] == ["sip:p1.example.com;lr", "sip:p2.example.net;lr"]
    assert bye.cseq.number == 2 and dialog.local_cseq == 2
    assert bye.from_ == dialog.local and bye.to == dialog.remote and bye.call_id == inv.call_id
    assert "Contact" not in bye.headers
    assert str(next_hop(bye)) == str(dialog.next_hop) == "sip:p1.example.com;lr"
    assert dialog.state is DialogState.TERMINATED
    with pytest.raises(DialogError):
        dialog.make_request("INFO")


def test_without_route_set_the_request_goes_to_the_remote_target() -> None:
    dialog, _, _ = confirmed(record_routes=[])
    info = dialog.make_request("INFO")
    assert str(info.uri) == "sip:bob@192.0.2.4:5070;transport=udp" and info.routes == []
    assert next_hop(info) == info.uri == dialog.next_hop


def test_strict_router_goes_into_the_request_uri() -> None:
    # §12.2.1.1: first route without lr -> Request-URI; the rest, then the remote target, as Route.
    dialog, _, _ = confirmed(
        record_routes=[
            "<sip:p2.example.net;lr>",
            "<sip:strict.example.com;method=INVITE;maddr=10.0.0.1>",
        ]
    )
    bye = dialog.make_request("BYE")
    assert str(bye.uri) == "sip:strict.example.com;maddr=10.0.0.1"
    assert [str(r.uri) for r in bye.routes] == [
        "sip:p2.example.net;lr",
        "sip:bob@192.0.2.4:5070;transport=udp",
    ]
    assert str(dialog.next_hop) == "sip:strict.example.com;method=INVITE;maddr=10.0.0.1"


def test_reinvite_is_a_target_refresh() -> None:
    dialog, _, _ = confirmed()
    reinvite = dialog.make_request("INVITE", body=SDP_OURS, content_type="application/sdp")
    assert reinvite.cseq.number == 2 and str(reinvite.contact.uri) == "sip:shop@192.0.2.10:5060"  # type: ignore[union-attr]
    with pytest.raises(DialogError, match="in progress"):
        dialog.make_request("INVITE")
    # Glare: the peer's re-INVITE while ours is pending gets 491 (§14.2).
    assert responses(
        dialog.receive_request(from_peer(dialog, "INVITE", 7, body=SDP_OFFER), 3.0, sdp=SDP_OURS)
    ) == [491]
    ok = answer(reinvite, 200, contact="<sip:bob@192.0.2.55>", record_routes=[])
    [send] = dialog.receive_response(ok, 3.0)
    assert isinstance(send, SendAck) and send.ack.cseq.number == 2
    assert str(dialog.remote_target) == "sip:bob@192.0.2.55"  # §12.2.1.2
    assert len(dialog.route_set) == 2  # the route set never changes once confirmed
    again = dialog.make_request("INVITE", body=SDP_OURS, content_type="application/sdp")
    assert dialog.receive_response(answer(again, 491), 4.0) == []
    assert dialog.state is DialogState.CONFIRMED
    dialog.make_request("INVITE", body=SDP_OURS, content_type="application/sdp")  # allowed again


def test_ack_and_cancel_are_not_built_by_make_request() -> None:
    dialog, _, _ = confirmed()
    for method in ("ACK", "CANCEL"):
        with pytest.raises(DialogError):
            dialog.make_request(method)
    with pytest.raises(DialogError, match="no INVITE"):
        dialog.make_ack(answer(dialog.make_request("INFO"), 200))


def test_info_dtmf() -> None:
    dialog, _, _ = confirmed()
    info = dialog.make_info_dtmf("5")
    assert info.method == "INFO" and info.content_type == "application/dtmf-relay"
    assert info.body == b"Signal=5\r\nDuration=250\r\n"
    assert dialog.make_info_dtmf("a", duration_ms=100).body == b"Signal=A\r\nDuration=100\r\n"
    for bad in ("", "55", "x"):
        with pytest.raises(DialogError):
            dialog.make_info_dtmf(bad)


def test_481_or_408_to_a_request_ends_the_dialog() -> None:
    dialog, _, _ = confirmed()
    info = dialog.make_request("INFO")
    assert dialog.receive_response(answer(info, 200), 1.0) == []
    assert dialog.receive_response(answer(info, 481), 1.0) == [Ended("481 to INFO")]


# Requests from the peer (§12.2.2) -------------------------------------------------------------


def test_incoming_bye_is_answered_and_ends_the_dialog() -> None:
    dialog, _, _ = confirmed()
    bye = from_peer(dialog, "BYE", 10)
    assert DialogId.of_request(bye) == dialog.id
    actions = dialog.receive_request(bye, 5.0)
    assert responses(actions) == [200] and actions[-1] == Ended("BYE received")
    assert dialog.state is DialogState.TERMINATED and dialog.remote_cseq == 10
    response = actions[0].response  # type: ignore[union-attr]
    assert response.to.tag == "ourtag" and response.cseq.method == "BYE"
    assert responses(dialog.receive_request(from_peer(dialog, "INFO", 11), 6.0)) == [481]


def test_options_info_and_unknown_methods() -> None:
    dialog, _, _ = confirmed()
    options = dialog.receive_request(from_peer(dialog, "OPTIONS", 1), 1.0)
    assert responses(options) == [200]
    assert "BYE" in (options[0].response.headers.get("Allow") or "")  # type: ignore[union-attr]
    assert responses(dialog.receive_request(from_peer(dialog, "INFO", 2, body=b"x"), 1.0)) == [200]
    refer = dialog.receive_request(from_peer(dialog, "REFER", 3), 1.0)
    assert responses(refer) == [501] and refer[0].response.headers.get("Allow")  # type: ignore[union-attr]


def test_out_of_order_cseq_gets_500() -> None:
    dialog, _, _ = confirmed()
    dialog.receive_request(from_peer(dialog, "INFO", 5), 1.0)
    assert responses(dialog.receive_request(from_peer(dialog, "INFO", 4), 1.0)) == [500]
    assert responses(dialog.receive_request(from_peer(dialog, "INFO", 5), 1.0)) == [200]


def test_incoming_reinvite_is_answered_with_our_sdp_and_retransmitted_until_acked() -> None:
    dialog, _, _ = confirmed()
    reinvite = from_peer(dialog, "INVITE", 20, body=SDP_OFFER, contact="<sip:bob@192.0.2.77>")
    actions = dialog.receive_request(reinvite, 10.0, sdp=SDP_OURS)
    ok = actions[0].response  # type: ignore[union-attr]
    assert ok.status == 200 and ok.body == SDP_OURS and ok.content_type == "application/sdp"
    assert str(ok.contact.uri) == "sip:shop@192.0.2.10:5060"  # §12.2.2: 2xx to a target refresh
    assert actions[1:] == [
        ArmTimer(DialogTimer.RETRANSMIT_2XX, 10.5),
        ArmTimer(DialogTimer.WAIT_ACK, 42.0),
    ]
    assert str(dialog.remote_target) == "sip:bob@192.0.2.77"
    # §13.3.1.4: T1, doubling up to T2.
    deadlines, now = [], 10.5
    for _ in range(5):
        resend, arm = dialog.timer_fired(DialogTimer.RETRANSMIT_2XX, now)
        assert resend == Respond(ok) and isinstance(arm, ArmTimer)
        deadlines.append(arm.at - now)
        now = arm.at
    assert deadlines == [1.0, 2.0, 4.0, 4.0, 4.0]
    ack = from_peer(dialog, "ACK", 20)
    assert dialog.receive_request(ack, now, sdp=SDP_OURS) == [
        DisarmTimer(DialogTimer.RETRANSMIT_2XX),
        DisarmTimer(DialogTimer.WAIT_ACK),
    ]
    assert dialog.timer_fired(DialogTimer.RETRANSMIT_2XX, now + 4) == []
    assert dialog.receive_request(ack, now) == []  # a second ACK: nothing to stop


def test_unacked_2xx_reports_ack_missing() -> None:
    dialog, _, _ = confirmed()
    dialog.receive_request(from_peer(dialog, "INVITE", 3, body=SDP_OFFER), 0.0, sdp=SDP_OURS)
    assert dialog.timer_fired(DialogTimer.WAIT_ACK, 32.0) == [
        DisarmTimer(DialogTimer.RETRANSMIT_2XX),
        AckMissing(),
    ]
    assert dialog.state is DialogState.CONFIRMED  # the TU decides: BYE
    assert dialog.make_request("BYE").method == "BYE"


def test_reinvite_without_sdp_to_answer_with() -> None:
    dialog, _, _ = confirmed()
    assert responses(
        dialog.receive_request(from_peer(dialog, "INVITE", 3, body=SDP_OFFER), 0.0)
    ) == [488]


def test_update() -> None:
    dialog, _, _ = confirmed()
    refresh = dialog.receive_request(
        from_peer(dialog, "UPDATE", 3, contact="<sip:bob@192.0.2.88>"), 0.0
    )
    assert responses(refresh) == [200] and refresh[0].response.body == b""  # type: ignore[union-attr]
    assert str(dialog.remote_target) == "sip:bob@192.0.2.88"
    offer = dialog.receive_request(
        from_peer(dialog, "UPDATE", 4, body=SDP_OFFER), 0.0, sdp=SDP_OURS
    )
    assert responses(offer) == [200] and offer[0].response.body == SDP_OURS  # type: ignore[union-attr]
    assert responses(
        dialog.receive_request(from_peer(dialog, "UPDATE", 5, body=SDP_OFFER), 0.0)
    ) == [488]


def test_bye_while_our_2xx_awaits_its_ack_stops_the_retransmissions() -> None:
    dialog, _, _ = confirmed()
    dialog.receive_request(from_peer(dialog, "INVITE", 3, body=SDP_OFFER), 0.0, sdp=SDP_OURS)
    actions = dialog.receive_request(from_peer(dialog, "BYE", 4), 1.0)
    assert actions[1:] == [
        DisarmTimer(DialogTimer.RETRANSMIT_2XX),
        DisarmTimer(DialogTimer.WAIT_ACK),
        Ended("BYE received"),
    ]


def test_sips_dialogs_are_secure() -> None:
    inv = invite()
    ok = answer(inv, 200, contact="<sips:bob@192.0.2.4>")
    assert Dialog.from_response(inv, ok).secure


def test_non_sip_contact_is_refused() -> None:
    inv = invite()
    with pytest.raises(DialogError):
        Dialog.from_response(inv, answer(inv, 200, contact="<tel:+441234>"))


def test_next_hop_outside_a_dialog() -> None:
    inv = invite()
    assert str(next_hop(inv)) == "sip:p1.example.com;lr"
    bare = parse_message(b"OPTIONS sip:a@b.example SIP/2.0\r\n\r\n")
    assert isinstance(bare, SipRequest) and next_hop(bare) == bare.uri
    assert isinstance(next_hop(bare), SipUri)
    assert NameAddress(parse_uri("sip:x")).uri == parse_uri("sip:x")


# Outcomes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cancelled", "outcome"),
    [
        (200, False, Outcome.ANSWERED),
        (202, False, Outcome.ANSWERED),
        (200, True, Outcome.ANSWERED),  # the answer crossed our CANCEL: the TU sends BYE
        (486, False, Outcome.BUSY),
        (600, False, Outcome.BUSY),
        (487, True, Outcome.NO_ANSWER),
        (487, False, Outcome.REJECTED),
        (403, False, Outcome.REJECTED),
        (404, False, Outcome.REJECTED),
        (480, False, Outcome.REJECTED),
        (603, False, Outcome.REJECTED),
        (604, False, Outcome.REJECTED),
        (408, False, Outcome.FAILED),
        (500, False, Outcome.FAILED),
        (503, False, Outcome.FAILED),
        (302, False, Outcome.FAILED),
    ],
)
def test_final_response_outcomes(status: int, cancelled: bool, outcome: Outcome) -> None:
    inv = invite()
    result = classify_final(answer(inv, status), cancelled=cancelled)
    assert result == CallResult(outcome, status, answer(inv, status).reason)


def test_outcomes_without_a_final_response() -> None:
    assert classify_timeout() == CallResult(Outcome.FAILED, 408, "Request Timeout")
    assert classify_timeout(cancelled=True).outcome is Outcome.NO_ANSWER
    assert classify_transport_error() == CallResult(Outcome.FAILED, 503, "Service Unavailable")
    with pytest.raises(ValueError):
        classify_final(answer(invite(), 180))
    assert Outcome.NO_ANSWER == "no-answer"


def test_ring_timeout_cancel_ends_as_no_answer() -> None:
    net = Network(ring=math.inf, final=200)  # the callee rings for ever
    inv = request()
    net.start(inv)
    net.run(until=40.0)  # past timer B: Proceeding does not time out
    assert net.statuses() == [100, 180] and not net.timeouts
    net.apply("uac", net.uac.send_request(make_cancel(inv), net.peer(), net.now))  # ring timeout
    net.run(until=200.0)
    finals = {
        m.cseq.method: m for m in net.uac_got if isinstance(m, SipResponse) and m.status >= 200
    }
    assert finals["CANCEL"].status == 200 and finals["INVITE"].status == 487
    assert classify_final(finals["INVITE"], cancelled=True).outcome is Outcome.NO_ANSWER
    assert net.sent.count(("uac", "ACK")) == 1
    assert settled(net)
