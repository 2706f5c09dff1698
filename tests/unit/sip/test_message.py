from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.unit.sip import torture
from voxflow.sip.message import (
    BRANCH_MAGIC,
    COMPACT_FORMS,
    CSeq,
    Headers,
    MessageError,
    SipRequest,
    SipResponse,
    Via,
    canonical_name,
    make_request,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
    split_commas,
)
from voxflow.sip.uri import NameAddress, Params, parse_name_addr, parse_uri

INVITE = (
    b"INVITE sip:bob@biloxi.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"To: Bob <sip:bob@biloxi.com>\r\n"
    b"From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.com>\r\n"
    b"Record-Route: <sip:p2.example.com;lr>\r\n"
    b"Record-Route: <sip:p1.example.com;lr>\r\n"
    b"Timestamp: 54\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\r\n"
)


def invite() -> SipRequest:
    return SipRequest.parse(INVITE)


# Headers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("v", "Via"),
        ("I", "Call-ID"),
        ("mAx-FoRwArDs", "Max-Forwards"),
        ("cseq", "CSeq"),
        ("www-authenticate", "WWW-Authenticate"),
        ("r", "Refer-To"),
        ("b", "Referred-By"),
        ("o", "Event"),
        ("x", "Session-Expires"),
        ("X-Custom", "X-Custom"),
    ],
)
def test_canonical_names(name: str, canonical: str) -> None:
    assert canonical_name(name) == canonical


def test_every_compact_form_of_rfc_3261() -> None:
    # §7.3.3: c e f i k l m s t v.
    expected = {"c": "Content-Type", "e": "Content-Encoding", "f": "From", "i": "Call-ID"}
    expected |= {"k": "Supported", "l": "Content-Length", "m": "Contact", "s": "Subject"}
    expected |= {"t": "To", "v": "Via"}
    assert {short: canonical_name(short) for short in expected} == expected
    assert all(canonical_name(short) != short for short in COMPACT_FORMS)


def test_headers_are_case_insensitive_and_ordered() -> None:
    headers = Headers([("v", "a"), ("X-Thing", "1"), ("Via", "b")])
    assert headers.get("VIA") == "a" and headers.get_all("v") == ["a", "b"]
    assert headers.get("x-thing") == "1" and "X-THING" in headers and "Route" not in headers
    headers.set("via", "c")
    assert list(headers) == [("Via", "c"), ("X-Thing", "1")]
    headers.remove("x-thing")
    assert len(headers) == 1 and headers.count("Via") == 1
    headers.set("Allow", "INVITE, ACK")
    assert headers.get_list("allow") == ["INVITE", "ACK"]


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("a, b,c", ["a", "b", "c"]),
        ('"Doe, John" <sip:j@x>, <sip:k@y;p=a,b>', ['"Doe, John" <sip:j@x>', "<sip:k@y;p=a,b>"]),
        ('"a \\" , b" <sip:x>', ['"a \\" , b" <sip:x>']),
        ("", [""]),
        (",,", ["", "", ""]),
    ],
)
def test_split_commas(value: str, parts: list[str]) -> None:
    assert split_commas(value) == parts


def test_list_headers_are_split_and_others_kept_whole() -> None:
    data = (
        b"OPTIONS sip:a@b SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP h1;branch=z9hG4bK1, SIP/2.0/TCP h2:5061;branch=z9hG4bK2\r\n"
        b'm: <sip:a@c>, "x, y" <sip:b@d>;q=0.5\r\n'
        b"Allow: INVITE, ACK,BYE\r\n"
        b"k: timer, 100rel\r\n"
        b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n"
        b'WWW-Authenticate: Digest realm="a", nonce="b"\r\n'
        b"Subject: hello, world\r\n"
        b"Max-Forwards: 70\r\nTo: <sip:a@b>\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\n\r\n"
    )
    m = parse_message(data)
    assert [v.sent_by for v in m.vias] == ["h1", "h2:5061"]
    assert [c.display_name for c in m.contacts] == [None, "x, y"]
    assert m.headers.get_all("Allow") == ["INVITE", "ACK", "BYE"]
    assert m.headers.get_all("Supported") == ["timer", "100rel"]
    assert m.headers.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert m.headers.get_all("WWW-Authenticate") == ['Digest realm="a", nonce="b"']
    assert m.headers.get("Subject") == "hello, world"


# Parsing ------------------------------------------------------------------------------------


def test_request_accessors() -> None:
    m = invite()
    assert m.method == "INVITE" and str(m.uri) == "sip:bob@biloxi.com"
    via = m.via
    assert (via.transport, via.host, via.port, via.branch) == (
        "UDP",
        "pc33.atlanta.com",
        None,
        "z9hG4bK776asdhds",
    )
    assert "rport" in via.params and via.rport is None and via.received is None
    assert m.from_.display_name == "Alice" and m.from_.tag == "1928301774"
    assert m.to.tag is None and m.to.sip_uri.user == "bob"
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.com"
    assert m.cseq == CSeq(314159, "INVITE")
    assert m.max_forwards == 70
    assert [str(r.uri) for r in m.routes] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    assert [str(r.uri) for r in m.record_routes] == [
        "sip:p2.example.com;lr",
        "sip:p1.example.com;lr",
    ]
    contact = m.contact
    assert contact is not None and str(contact.uri) == "sip:alice@pc33.atlanta.com"
    assert m.content_type == "application/sdp"
    assert m.body == b"v=0\r\n"[:4]


def test_via_received_rport_and_ipv6() -> None:
    via = Via.parse(
        "SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKx;received=2001:db8::1;rport=5071"
    )
    assert via.host == "[2001:db8::9]" and via.port == 5070 and via.sent_by == "[2001:db8::9]:5070"
    assert via.received == "2001:db8::1" and via.rport == 5071
    assert (
        str(via) == "SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKx;received=2001:db8::1;rport=5071"
    )
    assert Via.parse(str(via)) == via


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0 host",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP host;",
        "SIP/2.0/UDP host:99999",
        "SIP/2.0/UDP host junk",
    ],
)
def test_malformed_vias(text: str) -> None:
    with pytest.raises(MessageError):
        Via.parse(text)


def test_response_accessors() -> None:
    m = SipResponse.parse(
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1;received=192.0.2.1;rport=5062\r\n"
        b"To: <sip:b@c>;tag=x\r\nFrom: <sip:a@c>;tag=y\r\nCall-ID: c\r\nCSeq: 2 INVITE\r\n\r\n"
    )
    assert (m.status, m.reason, m.provisional, m.success) == (180, "Ringing", True, False)
    assert m.via.received == "192.0.2.1" and m.via.rport == 5062
    assert m.to.tag == "x" and m.body == b""
    with pytest.raises(MessageError):
        SipRequest.parse(bytes(m))
    with pytest.raises(MessageError):
        SipResponse.parse(INVITE)


def test_folded_lines_and_bare_lf_and_leading_crlf() -> None:
    data = (
        b"\r\n\r\nOPTIONS sip:a@b SIP/2.0\n"
        b"Via: SIP/2.0/UDP h\n ;branch=z9hG4bK1\n"
        b"Subject: one\n\ttwo\n"
        b"To: <sip:a@b>\nFrom: <sip:c@d>;tag=1\nCall-ID: 1\nCSeq: 1 OPTIONS\n\nbody"
    )
    m = parse_message(data)
    assert m.via.branch == "z9hG4bK1"
    assert m.headers.get("Subject") == "one two"
    assert m.body == b"body"


def test_content_length_frames_the_body() -> None:
    head = b"OPTIONS sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\n"
    assert parse_message(head + b"Content-Length: 3\r\n\r\nabcdef").body == b"abc"
    assert parse_message(head + b"l:  0 \r\n\r\nabcdef").body == b""
    assert parse_message(head + b"\r\nabcdef").body == b"abcdef"  # UDP: to the end
    for bad in (b"4x", b"-1", b"7", b"1" * 40, b""):
        with pytest.raises(MessageError):
            parse_message(head + b"Content-Length: " + bad + b"\r\n\r\nabcdef")
    with pytest.raises(MessageError):
        parse_message(head + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nabcdef")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nTo: <sip:a@b>",  # no empty line
        b" OPTIONS sip:a@b SIP/2.0\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\n folded-start\r\n\r\n",
        b"OPTIONS sip:a@b HTTP/1.1\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2\r\n\r\n",
        b"OPT(IONS sip:a@b SIP/2.0\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nNo colon here\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\n: x\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: one OPTIONS\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: 1\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: a b\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Type: sdp\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nRoute: sip:a@b, \r\n\r\n",
        b"SIP/2.0 99 Low\r\n\r\n",
        b"SIP/2.0 700 High\r\n\r\n",
        b"SIP/2.0 2000 OK\r\n\r\n",
        b"SIP/2.0\r\n\r\n",
    ],
)
def test_malformed_messages(data: bytes) -> None:
    with pytest.raises(MessageError):
        parse_message(data)


def test_serialisation_writes_canonical_names_and_the_true_content_length() -> None:
    m = parse_message(
        b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nl: 99\r\n\r\n" + b"x" * 99
    )
    m.body = b"hi"
    text = bytes(m)
    assert (
        text
        == b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 2\r\n\r\nhi"
    )


def test_validate_semantics() -> None:
    m = invite()
    assert m.validate() is None
    m.headers.set("Max-Forwards", "seventy")
    problem = m.validate()
    assert problem is not None and (problem.status, problem.reason) == (
        400,
        "Max-Forwards is not a number from 0 to 255",
    )
    m.headers.set("Max-Forwards", "256")
    assert m.validate() is not None
    m.headers.remove("Max-Forwards")
    assert m.validate() is None  # RFC 2543 peers send none
    m.headers.set("CSeq", "4294967296 INVITE")
    problem = m.validate()
    assert problem is not None and problem.reason == "CSeq number out of range"
    m.headers.set("CSeq", "nonsense")
    problem = m.validate()
    assert problem is not None and problem.status == 400  # validate never raises
    m = invite()
    m.uri = parse_uri("tel:+15551234")
    problem = m.validate()
    assert problem is not None and problem.status == 416
    m = invite()
    m.headers.add("Require", "100rel")
    assert m.validate() is None
    assert m.validate(supported=["100REL"]) is None
    problem = m.validate(supported=["timer"])
    assert problem is not None and problem.status == 420
    m.method = "ACK"
    m.headers.set("CSeq", "314159 ACK")
    assert m.validate(supported=["timer"]) is None  # §8.2.2.3: never a 420 for ACK


# Building -----------------------------------------------------------------------------------


def test_generated_identifiers() -> None:
    assert new_branch().startswith(BRANCH_MAGIC) and new_branch() != new_branch()
    assert len(new_tag()) >= 8 and new_tag() != new_tag()
    assert new_call_id("example.com").endswith("@example.com") and "@" not in new_call_id()


def test_make_request_fills_tag_and_branch() -> None:
    request = make_request(
        "INVITE",
        parse_uri("sip:bob@biloxi.com"),
        from_=parse_name_addr("Alice <sip:alice@atlanta.com>"),
        to=parse_name_addr("<sip:bob@biloxi.com>"),
        via=Via(host="192.0.2.10", port=5060, params=Params([("rport", None)])),
        call_id="abc",
        cseq=7,
        contact=parse_name_addr("<sip:alice@192.0.2.10:5060>"),
        routes=[parse_name_addr("<sip:proxy.example.com;lr>")],
        headers=[("User-Agent", "voxflow")],
        body=b"v=0\r\n",
        content_type="application/sdp",
    )
    parsed = SipRequest.parse(bytes(request))
    assert parsed == request
    assert parsed.from_.tag and (parsed.via.branch or "").startswith(BRANCH_MAGIC)
    assert parsed.cseq == CSeq(7, "INVITE") and parsed.max_forwards == 70
    assert [name for name, _ in parsed.headers] == [
        "Via", "Max-Forwards", "Route", "From", "To", "Call-ID", "CSeq", "Contact", "User-Agent",
        "Content-Type", "Content-Length",
    ]  # fmt: skip
    assert parsed.validate() is None
    with pytest.raises(ValueError, match="Content-Type"):
        make_request(
            "MESSAGE", request.uri, from_=request.from_, to=request.to, via=request.via, body=b"x"
        )


def test_make_response_copies_per_8_2_6() -> None:
    request = invite()
    ringing = make_response(
        request, 180, to_tag="a6c85cf", contact=parse_name_addr("<sip:bob@192.0.2.4>")
    )
    assert ringing.reason == "Ringing"
    assert ringing.headers.get_all("Via") == request.headers.get_all("Via")
    assert ringing.from_ == request.from_ and ringing.call_id == request.call_id
    assert ringing.cseq == request.cseq
    assert ringing.to.tag == "a6c85cf" and ringing.to.display_name == "Bob"
    assert ringing.headers.get_all("Record-Route") == request.headers.get_all(
        "Record-Route"
    )  # §12.1.1
    assert SipResponse.parse(bytes(ringing)) == ringing
    trying = make_response(request, 100)
    assert trying.to.tag is None and trying.headers.get("Timestamp") == "54"  # §8.2.6.1
    assert "Record-Route" not in trying.headers
    busy = make_response(request, 486, "Busy Here Now", to_tag="x")
    assert busy.reason == "Busy Here Now" and "Record-Route" not in busy.headers
    # A To that already has a tag keeps it.
    request.headers.set("To", "<sip:bob@biloxi.com>;tag=old")
    assert make_response(request, 200, to_tag="new").to.tag == "old"
    assert make_response(request, 299).reason == ""


# Hostile input: MessageError and nothing else --------------------------------------------------

_ALL = [*torture.VALID.values(), *torture.INVALID.values(), *torture.SEMANTIC.values(), INVITE]


def _exercise(data: bytes) -> None:
    """Parse; a parsed message must then survive every accessor, validate and serialising."""
    try:
        message = parse_message(data)
    except MessageError:
        return
    message.validate(supported=())
    for name in ("vias", "contacts", "routes", "record_routes", "content_type"):
        getattr(message, name)
    for name in ("via", "from_", "to", "call_id", "cseq", "max_forwards"):
        with contextlib.suppress(MessageError):  # absent (or bad Max-Forwards): validate says so
            getattr(message, name)
    again = parse_message(bytes(message))
    assert bytes(again) == bytes(message)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
@example(b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP [::1\r\n\r\n")
@example(b"SIP/2.0 200 OK\r\nCSeq: " + b"9" * 5000 + b" INVITE\r\n\r\n")
def test_random_bytes_raise_only_message_error(data: bytes) -> None:
    _exercise(data)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_ALL)))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if kind == "flip" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif kind == "insert":
            chunk = draw(
                st.sampled_from(
                    [
                        b"\r\n",
                        b" ",
                        b";",
                        b",",
                        b"<",
                        b">",
                        b'"',
                        b":",
                        b"\\",
                        b"%",
                        b"@",
                        b"\x00",
                        b"\r\n ",
                    ]
                )
            )
            data[position:position] = chunk
        elif kind == "delete":
            del data[position : position + draw(st.integers(1, 5))]
        else:
            del data[position:]
    return bytes(data)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_mutated_messages_raise_only_message_error(data: bytes) -> None:
    _exercise(data)


def test_name_address_type_in_accessors() -> None:
    assert isinstance(invite().from_, NameAddress)


def test_built_header_values_cannot_inject_lines() -> None:
    evil = NameAddress(parse_uri("sip:a@b"), "Shop\r\nX-Evil: 1")
    with pytest.raises(ValueError, match="CR or LF"):
        make_request("OPTIONS", parse_uri("sip:b@c"), from_=evil, to=evil, via=Via(host="h"))
    headers = Headers()
    with pytest.raises(ValueError):
        headers.set("Subject", "a\nb")
    parsed = invite().headers
    assert parsed.copy() == parsed


def test_typed_views_are_parsed_once_and_follow_header_changes() -> None:
    data = (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKone\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKtwo\r\n"
        b"From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\n"
        b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@192.0.2.1>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    message = parse_message(data)
    assert message.via is message.via and message.cseq is message.cseq  # parsed once
    assert message.via.branch == "z9hG4bKone" and message.to.tag is None
    vias = message.vias
    vias.pop()  # a list view is the caller's own
    assert len(message.vias) == 2
    message.headers.set("To", "<sip:bob@example.com>;tag=b")
    message.headers.remove("Via")
    message.headers.add("Via", "SIP/2.0/TCP 192.0.2.3;branch=z9hG4bKthree")
    assert message.to.tag == "b"
    assert message.via.branch == "z9hG4bKthree" and len(message.vias) == 1
    message.headers = message.headers.copy()
    message.headers.set("CSeq", "2 INVITE")
    assert message.cseq.number == 2
