from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxflow.sip import sdp
from voxflow.sip.sdp import (
    Attribute,
    Connection,
    MediaDescription,
    NegotiationError,
    RtpMap,
    SdpError,
    SessionDescription,
    answer_for,
    make_offer,
    negotiate,
)


def crlf(text: str) -> str:
    return "".join(line.strip() + "\r\n" for line in text.strip().splitlines())


# SIPp's built-in uas scenario answer (static PCMU only, no telephone-event).
SIPP_ANSWER = crlf("""
    v=0
    o=user1 53655765 2353687637 IN IP4 127.0.0.1
    s=-
    c=IN IP4 127.0.0.1
    t=0 0
    m=audio 6000 RTP/AVP 0
    a=rtpmap:0 PCMU/8000
""")

# Asterisk (chan_pjsip) answering with its own order: PCMA first, DTMF on 101.
ASTERISK_ANSWER = crlf("""
    v=0
    o=- 1669135417 1669135419 IN IP4 203.0.113.10
    s=Asterisk
    c=IN IP4 203.0.113.10
    t=0 0
    m=audio 14552 RTP/AVP 8 0 101
    a=rtpmap:8 PCMA/8000
    a=rtpmap:0 PCMU/8000
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-16
    a=ptime:20
    a=maxptime:140
    a=sendrecv
""")

# FreeSWITCH: one codec, telephone-event on its own PT 96, an a=rtcp line.
FREESWITCH_ANSWER = crlf("""
    v=0
    o=FreeSWITCH 1700000000 1700000001 IN IP4 198.51.100.7
    s=FreeSWITCH
    c=IN IP4 198.51.100.7
    t=0 0
    m=audio 24612 RTP/AVP 0 96
    a=rtpmap:0 PCMU/8000
    a=rtpmap:96 telephone-event/8000
    a=fmtp:96 0-16
    a=ptime:20
    a=sendrecv
    a=rtcp:24613 IN IP4 198.51.100.7
""")

# baresip offering over IPv6: opus first, media-level c=, a video stream, bandwidth lines.
BARESIP_OFFER = crlf("""
    v=0
    o=- 1433832164 3227407578 IN IP6 2001:db8::10
    s=-
    c=IN IP6 2001:db8::10
    b=AS:2000
    t=0 0
    a=tool:baresip 3.10.1
    m=audio 10310 RTP/AVP 96 0 8 101
    c=IN IP6 2001:db8::11
    b=AS:64
    a=rtpmap:96 opus/48000/2
    a=fmtp:96 stereo=1;sprop-stereo=1
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-15
    a=rtcp-mux
    a=label:1
    a=sendrecv
    m=video 10312 RTP/AVP 97
    a=rtpmap:97 H264/90000
    a=sendrecv
""")


def our_offer() -> SessionDescription:
    return make_offer("192.0.2.1", 40000, session_id=42, version=0)


# ---------------------------------------------------------------- parse / serialise


def test_offer_text() -> None:
    assert str(our_offer()) == crlf("""
        v=0
        o=voxflow 42 0 IN IP4 192.0.2.1
        s=voxflow
        c=IN IP4 192.0.2.1
        t=0 0
        m=audio 40000 RTP/AVP 0 8 101
        a=rtpmap:0 PCMU/8000
        a=rtpmap:8 PCMA/8000
        a=rtpmap:101 telephone-event/8000
        a=fmtp:101 0-16
        a=ptime:20
        a=sendrecv
    """)


@pytest.mark.parametrize("text", [SIPP_ANSWER, ASTERISK_ANSWER, FREESWITCH_ANSWER, BARESIP_OFFER])
def test_real_world_descriptions_round_trip(text: str) -> None:
    parsed = SessionDescription.parse(text)
    assert str(parsed) == text
    assert SessionDescription.parse(bytes(parsed)) == parsed


def test_parse_fields() -> None:
    offer = sdp.parse(BARESIP_OFFER)
    assert offer.origin.addrtype == "IP6"
    assert offer.connection == Connection("2001:db8::10", "IP6")
    assert offer.other == [("b", "AS:2000")]
    assert offer.attributes == [Attribute("tool", "baresip 3.10.1")]
    audio, video = offer.media
    assert (audio.media, audio.port, audio.proto) == ("audio", 10310, "RTP/AVP")
    assert audio.payload_types == [96, 0, 8, 101]
    assert audio.connection == Connection("2001:db8::11", "IP6")
    assert audio.bandwidths == ["AS:64"]
    assert audio.rtpmaps()[96] == RtpMap(96, "opus", 48000, 2)
    assert audio.fmtp(101) == "0-15"
    assert audio.fmtp(0) is None
    assert audio.attribute("rtcp-mux") is None
    assert Attribute("rtcp-mux") in audio.attributes
    assert audio.direction == "sendrecv"
    assert audio.ptime_ms is None
    assert video.rtpmaps()[97].clock_rate == 90000


def test_parse_is_lenient_about_line_ends_and_order_of_output_is_rfc() -> None:
    text = (
        "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=x\nt=0 0\nc=IN IP4 10.0.0.1\n\nm=audio 5004/2 RTP/AVP 0\n"
    )
    parsed = sdp.parse(text)
    assert parsed.media[0].port_count == 2
    assert str(parsed).splitlines()[3:5] == ["c=IN IP4 10.0.0.1", "t=0 0"]  # c= before t=
    assert "m=audio 5004/2 RTP/AVP 0" in str(parsed)


def test_connection_ttl_suffix() -> None:
    media = sdp.parse(
        crlf("""
        v=0
        o=- 1 1 IN IP4 224.2.1.1
        s=-
        c=IN IP4 224.2.1.1/127
        t=0 0
        m=audio 5004 RTP/AVP 0
    """)
    )
    assert media.connection is not None
    assert media.connection.host == "224.2.1.1"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "o=- 1 1 IN IP4 1.2.3.4\r\n",
        "v=1\r\n",
        "v=0\r\ns=-\r\n",  # no o=
        "v=0\r\no=- 1 1 IN IP4\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN XX 1.2.3.4\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 5/x RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio \u00b2 RTP/AVP 0\r\n",  # a digit int() refuses
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 5/\u0663 RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nbogus\r\n",
        "v=0\r\nv=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n",
    ],
)
def test_malformed_descriptions(text: str) -> None:
    with pytest.raises(SdpError):
        sdp.parse(text)


def test_non_utf8_and_bad_rtpmap() -> None:
    with pytest.raises(SdpError):
        sdp.parse(b"v=0\r\no=\xff 1 1 IN IP4 1.2.3.4\r\n")
    with pytest.raises(SdpError):
        RtpMap.parse("x PCMU/8000")


@given(st.text(max_size=300))
def test_any_text_parses_or_raises_sdp_error(text: str) -> None:
    try:
        parsed = sdp.parse("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n" + text)
    except SdpError:
        return
    assert sdp.parse(str(parsed)) == parsed


# ---------------------------------------------------------------- offer / answer (UAC)


def test_sipp_answer_pcmu_without_dtmf() -> None:
    result = negotiate(our_offer(), sdp.parse(SIPP_ANSWER))
    assert result == sdp.Negotiated("PCMU", 0, None, ("127.0.0.1", 6000), "sendrecv", 20)


def test_answer_order_wins() -> None:
    result = negotiate(our_offer(), sdp.parse(ASTERISK_ANSWER))
    assert (result.codec, result.payload_type, result.dtmf_payload_type) == ("PCMA", 8, 101)
    assert result.remote == ("203.0.113.10", 14552)


def test_answer_telephone_event_pt_may_differ_from_ours() -> None:
    result = negotiate(our_offer(), sdp.parse(FREESWITCH_ANSWER))
    assert (result.codec, result.dtmf_payload_type) == ("PCMU", 96)
    assert result.remote == ("198.51.100.7", 24612)


def test_codec_we_did_not_offer_is_skipped() -> None:
    offer = make_offer("192.0.2.1", 40000, codecs=("PCMU",), session_id=1)
    answer = sdp.parse(ASTERISK_ANSWER)  # PCMA first, then PCMU
    assert negotiate(offer, answer).codec == "PCMU"


def test_dynamic_payload_type_for_pcma() -> None:
    answer = sdp.parse(
        SIPP_ANSWER.replace("RTP/AVP 0", "RTP/AVP 110").replace("rtpmap:0 PCMU", "rtpmap:110 pcma")
    )
    result = negotiate(our_offer(), answer)
    assert (result.codec, result.payload_type) == ("PCMA", 110)


@pytest.mark.parametrize(
    ("attribute", "ours"),
    [
        ("sendrecv", "sendrecv"),
        ("recvonly", "sendonly"),
        ("sendonly", "recvonly"),
        ("inactive", "inactive"),
    ],
)
def test_direction_is_ours(attribute: str, ours: str) -> None:
    answer = sdp.parse(ASTERISK_ANSWER.replace("a=sendrecv", f"a={attribute}"))
    assert negotiate(our_offer(), answer).direction == ours


def test_session_level_direction_and_hold_address() -> None:
    text = SIPP_ANSWER.replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n")
    assert negotiate(our_offer(), sdp.parse(text)).direction == "sendonly"
    held = SIPP_ANSWER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")
    assert negotiate(our_offer(), sdp.parse(held)).direction == "recvonly"


def test_we_offered_sendonly() -> None:
    offer = make_offer("192.0.2.1", 40000, session_id=1, direction="sendonly")
    assert negotiate(offer, sdp.parse(ASTERISK_ANSWER)).direction == "sendonly"


def test_ipv6_answer() -> None:
    offer = make_offer("2001:db8::1", 40000, session_id=1)
    assert offer.connection == Connection("2001:db8::1", "IP6")
    answer = sdp.parse(SIPP_ANSWER.replace("IP4 127.0.0.1", "IP6 2001:db8::2"))
    assert negotiate(offer, answer).remote == ("2001:db8::2", 6000)


def test_media_level_connection_wins() -> None:
    answer = sdp.parse(SIPP_ANSWER + "c=IN IP4 10.9.9.9\r\n")
    assert negotiate(our_offer(), answer).remote == ("10.9.9.9", 6000)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.replace("m=audio 6000", "m=audio 0"), "rejected"),
        (lambda t: t.split("m=")[0], "no audio"),
        (lambda t: t.replace("RTP/AVP 0", "RTP/AVP 18").replace("0 PCMU", "18 G729"), "no codec"),
        (lambda t: t.replace("RTP/AVP", "RTP/SAVP"), "transport"),
        (lambda t: t.replace("c=IN IP4 127.0.0.1\r\n", ""), "no c= line"),
        (lambda t: t.replace("m=audio", "m=video"), "rejected"),
    ],
)
def test_negotiation_errors(change: object, message: str) -> None:
    assert callable(change)
    answer = sdp.parse(change(SIPP_ANSWER))
    with pytest.raises(NegotiationError, match=message):
        negotiate(our_offer(), answer)


def test_offer_options() -> None:
    offer = make_offer("example.com", 4000, codecs=("PCMA",), dtmf_pt=None)
    assert offer.connection == Connection("example.com", "IP4")
    assert offer.media[0].formats == ["8"]
    assert offer.origin.session_id.isdigit()
    with pytest.raises(ValueError, match="codec"):
        make_offer("192.0.2.1", 4000, codecs=())
    with pytest.raises(NegotiationError):
        negotiate(SessionDescription(offer.origin), sdp.parse(SIPP_ANSWER))


# ---------------------------------------------------------------- answer_for (UAS)


def test_answer_for_baresip_offer() -> None:
    answer, result = answer_for(sdp.parse(BARESIP_OFFER), "2001:db8::99", 30000, session_id=7)
    assert result == sdp.Negotiated("PCMU", 0, 101, ("2001:db8::11", 10310), "sendrecv", 20)
    assert str(answer) == crlf("""
        v=0
        o=voxflow 7 0 IN IP6 2001:db8::99
        s=voxflow
        c=IN IP6 2001:db8::99
        t=0 0
        m=audio 30000 RTP/AVP 0 101
        a=rtpmap:0 PCMU/8000
        a=rtpmap:101 telephone-event/8000
        a=fmtp:101 0-15
        a=ptime:20
        a=sendrecv
        m=video 0 RTP/AVP 97
    """)


def test_answer_for_then_negotiate_agree() -> None:
    offer = our_offer()
    answer, theirs = answer_for(offer, "198.51.100.2", 50000, ("PCMA",), session_id=3)
    ours = negotiate(offer, sdp.parse(str(answer)))
    assert (ours.codec, ours.payload_type, ours.dtmf_payload_type) == ("PCMA", 8, 101)
    assert (theirs.codec, theirs.payload_type) == ("PCMA", 8)
    assert ours.remote == ("198.51.100.2", 50000)
    assert theirs.remote == ("192.0.2.1", 40000)


def test_answer_for_direction_and_no_dtmf() -> None:
    offer = make_offer("192.0.2.1", 40000, session_id=1, direction="sendonly")
    answer, result = answer_for(offer, "198.51.100.2", 50000, dtmf=False)
    assert answer.media[0].direction == "recvonly"
    assert answer.media[0].formats == ["0"]
    assert (result.direction, result.dtmf_payload_type) == ("recvonly", None)


def test_answer_for_rejects_what_it_cannot_take() -> None:
    g729 = sdp.parse(SIPP_ANSWER.replace("RTP/AVP 0", "RTP/AVP 18").replace("0 PCMU", "18 G729"))
    with pytest.raises(NegotiationError):
        answer_for(g729, "198.51.100.2", 50000)
    two = our_offer()
    two.media.insert(0, MediaDescription("audio", 5000, "RTP/SAVP", ["0"]))
    answer, result = answer_for(two, "198.51.100.2", 50000)
    assert [m.port for m in answer.media] == [0, 50000]
    assert result.remote == ("192.0.2.1", 40000)
