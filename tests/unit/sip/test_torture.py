"""RFC 4475 torture tests: what voxflow does with each message.

§3.1.1 (valid): every message parses and ``validate()`` finds nothing; key fields are checked.
§3.1.2 and §3.2.1 (invalid): either ``parse`` raises :class:`MessageError` (the caller drops the
datagram) or, where the message is well framed and only its meaning is wrong, ``validate()``
returns the status a UAS answers with. The table below says which, per message.
§3.3 and §3.4 (application semantics): they parse (except mcl01, a framing error); what
``validate()`` says of each is in ``SEMANTIC_EXPECTED``.
"""

from __future__ import annotations

import pytest

from tests.unit.sip import torture
from voxflow.sip.message import (
    MessageError,
    SipRequest,
    SipResponse,
    parse_message,
)
from voxflow.sip.uri import AbsoluteUri, Params, SipUri


def request(name: str) -> SipRequest:
    message = parse_message(torture.VALID[name])
    assert isinstance(message, SipRequest)
    assert message.validate() is None
    return message


def response(name: str) -> SipResponse:
    message = parse_message(torture.VALID[name])
    assert isinstance(message, SipResponse)
    assert message.validate() is None
    return message


@pytest.mark.parametrize("name", sorted(torture.VALID))
def test_valid_messages_parse_and_validate(name: str) -> None:
    message = parse_message(torture.VALID[name])
    assert message.validate(supported=()) is None
    # Serialising and parsing again gives the same message.
    assert parse_message(bytes(message)) == message


def test_wsinv_short_tortuous_invite() -> None:
    m = request("wsinv")
    assert m.method == "INVITE"
    assert isinstance(m.uri, SipUri) and "unknownparam" in m.uri.params
    assert m.to.sip_uri.user == "vivekg" and m.to.tag == "1918181833n"
    assert m.from_.display_name == 'J Rosenberg \\"'
    assert m.from_.tag == "98asjd8"
    assert m.max_forwards == 68
    assert m.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert (m.cseq.number, m.cseq.method) == (9, "INVITE")
    vias = m.vias
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert "rport" in vias[0].params and vias[0].rport is None
    assert m.headers.get("Subject") == ""
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("unknownheaderwithunusualvalue") == ";;,,;;,;"
    assert m.content_type == "application/sdp"
    route = m.routes[0].sip_uri
    assert (
        route.lr
        and route.params["unknownwith"] == "value"
        and route.params["unknown-no-value"] is None
    )
    contact = m.contact
    assert contact is not None and contact.display_name == 'Quoted string ""'
    assert contact.params == Params(
        [("newparam", "newvalue"), ("secondparam", None), ("q", "0.33")]
    )
    assert len(m.body) == 150 and m.body.startswith(b"v=0\r\n")


def test_intmeth_wide_range_of_characters() -> None:
    m = request("intmeth")
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert isinstance(m.uri, SipUri)
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.via.branch == "z9hG4bK-.!%66*_+`'~"
    assert m.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert m.from_.params["fromParam''~+*_!.-%"] == '"работающий"'
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.cseq.method == m.method and m.cseq.number == 139122385
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_esc01_escaped_uris() -> None:
    m = request("esc01")
    assert isinstance(m.uri, SipUri) and m.uri.user == "sips:user@example.com"
    assert m.to.sip_uri.user == "user"
    assert m.from_.sip_uri.user == "I have spaces"
    assert m.call_id == "esc01.239409asdfakjkn23onasd0-3234"  # "i:" compact form
    assert m.content_type == "application/sdp"  # "C:" compact form
    contact = m.contact
    assert contact is not None
    uri = contact.sip_uri
    assert uri.user == "caller" and uri.lr and uri.params["name"] == "value%41"


def test_escnull_keeps_nulls_in_users() -> None:
    m = request("escnull")
    assert m.to.sip_uri.user == "null-\x00-null"
    assert [c.sip_uri.user for c in m.contacts] == ["\x00", "\x00\x00"]
    assert m.body == b""


def test_esc02_percent_that_is_not_an_escape() -> None:
    m = request("esc02")
    assert m.method == "RE%47IST%45R" and m.cseq.method == "RE%47IST%45R"
    assert m.to.display_name == "%Z%45"
    assert m.via.branch == "z9hG4bK209%fzsnel234"
    assert [c.sip_uri.user for c in m.contacts] == ["alias1", "alias3"]
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp_display_name_without_space() -> None:
    assert request("lwsdisp").from_.display_name == "caller"


def test_longreq_long_values() -> None:
    m = request("longreq")
    assert m.to.display_name == "I have a user name of " + "extreme" * 10 + " proportion"
    assert m.to.sip_uri.port == 6000
    assert m.to.sip_uri.params[torture.LONG_TO_NOVALUE] is None
    assert m.from_.tag == torture.LONG_TAG
    assert m.from_.sip_uri.user == torture.LONG_CALLER
    vias = m.vias
    assert len(vias) == 34
    assert [v.host for v in vias[:3]] == [
        "sip33.example.com",
        "sip32.example.com",
        "sip31.example.com",
    ]
    assert vias[-1].branch == torture.LONG_BRANCH and vias[-1].received == "192.0.2.5"
    assert len(m.body) == 150


def test_dblreq_ignores_octets_after_the_body() -> None:
    m = request("dblreq")
    assert m.method == "REGISTER" and m.body == b""
    assert m.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    contact = m.contact
    assert contact is not None and contact.sip_uri.user == "j.user"


def test_semiuri_user_with_semicolon() -> None:
    m = request("semiuri")
    assert isinstance(m.uri, SipUri) and m.uri.user == "user;par=u@example.net"
    assert m.headers.get_all("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_transports_unknown_transport() -> None:
    m = request("transports")
    assert [v.transport for v in m.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert m.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def test_mpart01_binary_body() -> None:
    m = request("mpart01")
    assert len(m.body) == 553 and b"\x00" in m.body
    assert m.content_type == "multipart/mixed"
    assert m.via.port == 5070 and "rport" in m.via.params


def test_unreason_and_noreason() -> None:
    m = response("unreason")
    assert m.status == 200 and m.reason == torture.UNREASON_PHRASE
    assert len(m.body) == 154
    m = response("noreason")
    assert m.status == 100 and m.reason == ""


# §3.1.2 and §3.2.1: "parse" -> MessageError at parse time; a number -> validate()'s status.
INVALID_EXPECTED: dict[str, str | int] = {
    "badinv01": "parse",  # empty Via and Contact parameters
    "clerr": "parse",  # Content-Length beyond the datagram
    "ncl": "parse",  # negative Content-Length
    "scalar02": 400,  # CSeq > 2**32-1 (Max-Forwards 300 would be next)
    "scalarlg": 400,  # a response: the UA drops it
    "quotbal": "parse",  # unterminated quote in To
    "ltgtruri": "parse",  # Request-URI in <>
    "lwsruri": "parse",  # LWS inside the Request-URI
    "lwsstart": "parse",  # several SP in the Request-Line
    "trws": "parse",  # SP after SIP-Version
    "escruri": 400,  # headers in the Request-URI
    "baddate": 400,  # Date not in GMT
    "regbadct": "parse",  # URI with '?' not in <>
    "badaspec": "parse",  # spaces inside <>
    "baddn": "parse",  # unquoted non-token display name
    "badvers": 505,  # SIP/7.0
    "mismatch01": 400,  # CSeq method differs
    "mismatch02": 400,  # unknown method, CSeq method differs (400 is allowed)
    "bigcode": "parse",  # status code of 10 digits
    "badbranch": 400,  # branch is only the magic cookie
}


def test_every_invalid_message_has_an_expectation() -> None:
    assert set(INVALID_EXPECTED) == set(torture.INVALID)


@pytest.mark.parametrize(("name", "expected"), sorted(INVALID_EXPECTED.items()))
def test_invalid_messages(name: str, expected: str | int) -> None:
    data = torture.INVALID[name]
    if expected == "parse":
        with pytest.raises(MessageError):
            parse_message(data)
        return
    problem = parse_message(data).validate()
    assert problem is not None and problem.status == expected


def test_invalid_reasons_name_the_problem() -> None:
    reasons = {
        name: problem.reason
        for name, expected in INVALID_EXPECTED.items()
        if expected != "parse" and (problem := parse_message(torture.INVALID[name]).validate())
    }
    assert reasons == {
        "scalar02": "CSeq number out of range",
        "scalarlg": "CSeq number out of range",
        "escruri": "Request-URI contains headers",
        "baddate": "Date is not an RFC 1123 date in GMT",
        "badvers": "SIP version SIP/7.0 is not supported",
        "mismatch01": "CSeq method does not match the request method",
        "mismatch02": "CSeq method does not match the request method",
        "badbranch": "Via branch has no transaction identifier",
    }


# §3.3 / §3.4: None = a UA processes it; a number = validate(supported=()) answers it.
SEMANTIC_EXPECTED: dict[str, str | int | None] = {
    "insuf": 400,  # missing To, From, Call-ID
    "unkscm": 416,  # unknown Request-URI scheme
    "novelsc": 416,  # soap.beep is not sip/sips
    "unksm2": None,  # non-SIP URIs in To, From, Contact are fine in themselves
    "bext01": 420,  # Require of unknown options (Proxy-Require is for proxies)
    "invut": None,  # Content-Type is the TU's business (415)
    "regaut01": None,  # authorization scheme is the registrar's business
    "multi01": 400,  # several From, To, Call-ID, CSeq
    "mcl01": "parse",  # two Content-Length values: no way to frame the body
    "bcast": None,  # a UA does not route responses
    "zeromf": None,  # Max-Forwards 0 only matters to proxies
    "cparam01": None,
    "cparam02": None,
    "regescrt": None,
    "sdp01": None,  # Accept is the TU's business (406)
    "inv2543": None,  # RFC 2543: no branch, no Max-Forwards, no Content-Length, no From tag
}


def test_every_semantic_message_has_an_expectation() -> None:
    assert set(SEMANTIC_EXPECTED) == set(torture.SEMANTIC)


@pytest.mark.parametrize(
    ("name", "expected"), sorted(SEMANTIC_EXPECTED.items(), key=lambda kv: kv[0])
)
def test_semantic_messages(name: str, expected: str | int | None) -> None:
    data = torture.SEMANTIC[name]
    if expected == "parse":
        with pytest.raises(MessageError):
            parse_message(data)
        return
    problem = parse_message(data).validate(supported=("timer", "replaces"))
    assert (problem.status if problem else None) == expected


def test_bext01_names_the_unsupported_options() -> None:
    problem = parse_message(torture.SEMANTIC["bext01"]).validate(supported=())
    assert problem is not None
    assert problem.headers == (("Unsupported", "nothingSupportsThis, nothingSupportsThisEither"),)


def test_unksm2_keeps_foreign_uris() -> None:
    m = parse_message(torture.SEMANTIC["unksm2"])
    assert m.to.uri == AbsoluteUri("isbn", "2983792873")
    assert m.from_.uri == AbsoluteUri("http", "//www.example.com")
    contact = m.contact
    assert contact is not None and contact.uri == AbsoluteUri("name", "John_Smith")


def test_inv2543_body_runs_to_the_end_of_the_datagram() -> None:
    m = parse_message(torture.SEMANTIC["inv2543"])
    assert m.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")
    assert m.via.branch is None and m.max_forwards is None and m.from_.tag is None


def test_cparam_parameters_land_on_the_right_side() -> None:
    header = parse_message(torture.SEMANTIC["cparam01"]).contact
    uri = parse_message(torture.SEMANTIC["cparam02"]).contact
    assert header is not None and "unknownparam" in header.params
    assert uri is not None and "unknownparam" in uri.sip_uri.params


def test_regescrt_contact_uri_headers() -> None:
    contact = parse_message(torture.SEMANTIC["regescrt"]).contact
    assert contact is not None
    assert contact.sip_uri.headers == [("Route", "<sip:sip.example.com>")]
