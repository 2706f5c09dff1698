from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxflow.sip.uri import (
    AbsoluteUri,
    NameAddress,
    Params,
    SipUri,
    UriError,
    parse_header_params,
    parse_name_addr,
    parse_sip_uri,
    parse_uri,
)


def test_full_sip_uri() -> None:
    uri = parse_sip_uri(
        "sips:alice:secret@atlanta.com:5061;transport=tcp;lr;Maddr=10.0.0.1?subject=hi&x=y"
    )
    assert uri == SipUri(
        scheme="sips",
        user="alice",
        password="secret",
        host="atlanta.com",
        port=5061,
        params=Params([("transport", "tcp"), ("lr", None), ("maddr", "10.0.0.1")]),
        headers=[("subject", "hi"), ("x", "y")],
    )
    assert uri.secure and uri.lr and uri.transport == "tcp"
    assert uri.params["MADDR"] == "10.0.0.1"
    assert uri.hostport == "atlanta.com:5061"


def test_params_are_case_insensitive_and_valueless_differs_from_empty() -> None:
    params = Params([("LR", None), ("tag", "")])
    assert "lr" in params and params["lr"] is None
    assert params["TAG"] == ""
    assert Params([("lr", None)]) == Params([("Lr", None)])
    assert Params([("lr", None)]) != Params([("lr", "")])
    assert params.serialise() == ";LR;tag="
    del params["Tag"]
    assert list(params) == ["LR"]


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("sip:[::1]", "[::1]", None),
        ("sip:alice@[2001:db8::10]:5070;transport=udp", "[2001:db8::10]", 5070),
        ("sip:192.0.2.4:5060", "192.0.2.4", 5060),
        ("sip:example.com", "example.com", None),
    ],
)
def test_hosts(text: str, host: str, port: int | None) -> None:
    uri = parse_sip_uri(text)
    assert (uri.host, uri.port) == (host, port)
    assert parse_uri(str(uri)) == uri


def test_escapes_are_undone_once_and_redone_on_output() -> None:
    # RFC 4475 §3.1.1.3: "%6C%72" is "lr", and "v%61lue%25%34%31" is "value%41", not "valueA".
    uri = parse_sip_uri("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")
    assert uri.user == "caller"
    assert uri.lr
    assert uri.params["name"] == "value%41"
    assert str(uri) == "sip:caller@host5.example.net;lr;name=value%2541"
    embedded = parse_sip_uri("sip:sips%3Auser%40example.com@example.net")
    assert embedded.user == "sips:user@example.com"
    assert str(embedded) == "sip:sips%3Auser%40example.com@example.net"


def test_user_part_may_hold_semicolons_and_a_password_commas() -> None:
    uri = parse_sip_uri("sip:user;par=u%40example.net@example.com")
    assert uri.user == "user;par=u@example.net"
    assert uri.params == Params()
    uri = parse_sip_uri("sip:+1-212-555-1212:1234@gateway.com;user=phone")
    assert (uri.user, uri.password, uri.params["user"]) == ("+1-212-555-1212", "1234", "phone")


def test_other_schemes_are_opaque() -> None:
    assert parse_uri("tel:+1-201-555-0123") == AbsoluteUri("tel", "+1-201-555-0123")
    assert parse_uri("soap.beep://192.0.2.103:3002") == AbsoluteUri(
        "soap.beep", "//192.0.2.103:3002"
    )
    assert str(parse_uri("isbn:2983792873")) == "isbn:2983792873"
    with pytest.raises(UriError):
        parse_sip_uri("tel:+1")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip",
        "<sip:user@example.com>",
        "sip:",
        "sip:user@",
        "sip:user@host:port",
        "sip:user@host:99999",
        "sip:us er@host",
        "sip:user@host;par am",
        "sip:user@host?a=b c",
        "sip:user@host;%zz",
        "sip:user@[::1",
        "tel:",
        "tel:a b",
        "1sip:x",
    ],
)
def test_malformed_uris(text: str) -> None:
    with pytest.raises(UriError):
        parse_uri(text)


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@atlanta.com",
        "sips:alice:pw@atlanta.com:5061;transport=tls;lr?Subject=Hello%20World&To=x",
        "sip:%00@host5.example.com",
        "sip:I%20have%20spaces@example.net",
        "sip:[2001:db8::1]:5060;maddr=[2001:db8::2]",
        "sip:+19725552222@gw1.example.net;unknownparam",
    ],
)
def test_round_trip(text: str) -> None:
    uri = parse_uri(text)
    assert parse_uri(str(uri)) == uri


_word = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12
)
_token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
    min_size=1,
    max_size=8,
)


_sip_uris = st.builds(
    lambda scheme, user, password, host, port, params, headers: SipUri(
        scheme=scheme,
        user=user,
        password=password if user is not None else None,
        host=host,
        port=port,
        params=Params(params),
        headers=headers,
    ),
    scheme=st.sampled_from(["sip", "sips"]),
    user=st.none() | _word,
    password=st.none() | _word,
    host=st.sampled_from(["example.com", "192.0.2.1", "[::1]", "a-b.c_d"]),
    port=st.none() | st.integers(0, 65_535),
    params=st.lists(st.tuples(_word, st.none() | _word), max_size=4),
    headers=st.lists(st.tuples(_word, _word), max_size=3),
)


@given(_sip_uris)
def test_any_sip_uri_round_trips(uri: SipUri) -> None:
    assert parse_uri(str(uri)) == uri


@given(st.text(max_size=60))
def test_parse_uri_raises_only_uri_error(text: str) -> None:
    try:
        parse_uri(text)
        parse_name_addr(text)
    except UriError:
        pass


def test_name_addr_with_quoted_display_name_and_params() -> None:
    value = parse_name_addr('"J Rosenberg \\\\\\""  <sip:jdrosen@example.com> ;  tag = 98asjd8;lr')
    assert value.display_name == 'J Rosenberg \\"'
    assert value.sip_uri.user == "jdrosen"
    assert value.tag == "98asjd8"
    assert value.params == Params([("tag", "98asjd8"), ("lr", None)])
    assert str(value) == '"J Rosenberg \\\\\\"" <sip:jdrosen@example.com>;tag=98asjd8;lr'
    assert parse_name_addr(str(value)) == value


def test_addr_spec_params_belong_to_the_header_and_bracketed_ones_to_the_uri() -> None:
    # RFC 4475 §3.3.12 and §3.3.13.
    bare = parse_name_addr("sip:+19725552222@gw1.example.net;unknownparam")
    assert "unknownparam" in bare.params and bare.sip_uri.params == Params()
    bracketed = parse_name_addr("<sip:+19725552222@gw1.example.net;unknownparam>")
    assert bracketed.params == Params() and "unknownparam" in bracketed.sip_uri.params


def test_token_display_names() -> None:
    assert parse_name_addr("caller<sip:caller@example.com>;tag=323").display_name == "caller"
    assert parse_name_addr("A.  Bell <sip:a@b>").display_name == "A. Bell"
    assert parse_name_addr("<sip:a@b>").display_name is None
    assert parse_name_addr('"" <sip:a@b>').display_name == ""


def test_quoted_header_param_values_keep_their_quotes() -> None:
    value = parse_name_addr('<sip:a@b>;+sip.instance="<urn:uuid:1;x>";expires=60')
    assert value.params["+sip.instance"] == '"<urn:uuid:1;x>"'
    assert value.params["expires"] == "60"
    assert parse_name_addr(str(value)) == value


def test_with_tag_copies() -> None:
    original = parse_name_addr("<sip:bob@biloxi.com>")
    tagged = original.with_tag("a6c85cf")
    assert tagged.tag == "a6c85cf" and original.tag is None
    assert str(tagged) == "<sip:bob@biloxi.com>;tag=a6c85cf"
    assert NameAddress(parse_uri("sip:a@b"), "Alice").copy() == NameAddress(
        parse_uri("sip:a@b"), "Alice"
    )


@pytest.mark.parametrize(
    "text",
    [
        '"Mr. J. User <sip:j.user@example.com>',  # unterminated quote (RFC 4475 §3.1.2.6)
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",  # '?' outside <> (§3.1.2.13)
        '"Watson, Thomas" < sip:t.watson@example.org >',  # spaces in <> (§3.1.2.14)
        "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",  # non-token display (§3.1.2.15)
        '"Joe" <sip:joe@example.org>;;;;',  # empty parameters (§3.1.2.1)
        "<sip:a@b",
        '"x" sip:a@b',
        "<sip:a@b>;tag=",
        "<sip:a@b> junk",
        "",
    ],
)
def test_malformed_name_addrs(text: str) -> None:
    with pytest.raises(UriError):
        parse_name_addr(text)


def test_header_params_with_ipv6_and_spaces() -> None:
    params = parse_header_params(" ; received = 2001:db8::9 ;rport; branch=z9hG4bK1")
    assert params == Params([("received", "2001:db8::9"), ("rport", None), ("branch", "z9hG4bK1")])
