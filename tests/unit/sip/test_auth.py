from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxflow.sip.auth import (
    AuthResult,
    Challenge,
    DigestClient,
    authorization,
    check,
    make_challenge,
    parse_auth_header,
    parse_challenges,
    strongest,
)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sha512_256(text: str) -> str:
    return hashlib.new("sha512_256", text.encode()).hexdigest()


def params_of(value: str) -> dict[str, str]:
    [(scheme, params)] = parse_auth_header(value)
    assert scheme == "Digest"
    return params


# --- published vectors --------------------------------------------------------------------------

RFC2617_CHALLENGE = """Digest
                 realm="testrealm@host.com",
                 qop="auth,auth-int",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41\""""


def test_rfc2617_section_3_5_example() -> None:
    [challenge] = parse_challenges(RFC2617_CHALLENGE)
    value = authorization(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle Of Life",
        cnonce="0a4f113b",
    )
    assert params_of(value) == {
        "username": "Mufasa",
        "realm": "testrealm@host.com",
        "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "uri": "/dir/index.html",
        "qop": "auth",
        "nc": "00000001",
        "cnonce": "0a4f113b",
        "response": "6629fae49393a05397450978507c4ef1",
        "opaque": "5ccc069c403ebaf9f0171e9517f40e41",
        "algorithm": "MD5",
    }
    assert "qop=auth," in value and "nc=00000001" in value  # tokens, not quoted


RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_examples(algorithm: str, response: str) -> None:
    header = (
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm},'
        f' nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )
    [challenge] = parse_challenges(header)
    assert challenge.qop == ("auth", "auth-int")
    value = authorization(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle of Life",
        cnonce=RFC7616_CNONCE,
    )
    params = params_of(value)
    assert params["response"] == response
    assert params["algorithm"] == algorithm
    assert params["opaque"] == RFC7616_OPAQUE
    assert params["cnonce"] == RFC7616_CNONCE


def test_rfc7616_both_challenges_in_one_header_picks_sha256() -> None:
    both = (
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256,'
        f' nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}",'
        f' Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5,'
        f' nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )
    challenges = parse_challenges(both)
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    best = strongest(reversed(challenges))
    assert best is not None and best.algorithm == "SHA-256"


# --- SIP-style vectors, computed here from the formulas ------------------------------------------


def test_sip_register_md5_qop_auth() -> None:
    header = (
        'Digest realm="trunk.example.net", nonce="5f1c2a9b-REG", algorithm=MD5, qop="auth",'
        ' opaque="a1b2"'
    )
    [challenge] = parse_challenges(header)
    uri = "sip:trunk.example.net"
    value = authorization(
        challenge, method="REGISTER", uri=uri, username="4412345", password="s3cret", cnonce="c1"
    )
    ha1 = md5("4412345:trunk.example.net:s3cret")
    ha2 = md5(f"REGISTER:{uri}")
    expected = md5(f"{ha1}:5f1c2a9b-REG:00000001:c1:auth:{ha2}")
    assert params_of(value)["response"] == expected
    assert params_of(value)["uri"] == uri


def test_sip_invite_sha256_through_proxy() -> None:
    header = 'Digest realm="proxy.example.net", nonce="n-INVITE-1", algorithm=SHA-256, qop="auth"'
    uri = "sip:+441234567890@trunk.example.net;user=phone"
    client = DigestClient("4412345", "s3cret", cnonce_factory=lambda: "abcdef01")
    assert client.on_challenge(header, proxy=True)
    [(name, value)] = client.headers("INVITE", uri, b"v=0\r\n")
    assert name == "Proxy-Authorization"
    ha1 = sha256("4412345:proxy.example.net:s3cret")
    ha2 = sha256(f"INVITE:{uri}")
    expected = sha256(f"{ha1}:n-INVITE-1:00000001:abcdef01:auth:{ha2}")
    assert params_of(value)["response"] == expected


def test_sip_invite_without_qop_uses_rfc2069_form() -> None:
    # Many trunks still challenge without qop: no cnonce, no nc.
    [challenge] = parse_challenges('Digest realm="asterisk",nonce="1a2b3c4d"')
    uri = "sip:100@192.0.2.10"
    value = authorization(challenge, method="INVITE", uri=uri, username="bob", password="pw")
    params = params_of(value)
    ha1, ha2 = md5("bob:asterisk:pw"), md5(f"INVITE:{uri}")
    assert params["response"] == md5(f"{ha1}:1a2b3c4d:{ha2}")
    assert "cnonce" not in params and "nc" not in params and "qop" not in params
    assert "opaque" not in params


@pytest.mark.parametrize(
    ("algorithm", "h"),
    [("MD5-sess", md5), ("SHA-256-sess", sha256), ("SHA-512-256-sess", sha512_256)],
)
def test_sess_algorithms(algorithm: str, h: Callable[[str], str]) -> None:
    header = f'Digest realm="r", nonce="N", algorithm={algorithm}, qop="auth"'
    [challenge] = parse_challenges(header)
    value = authorization(
        challenge, method="BYE", uri="sip:a@b", username="u", password="p", cnonce="C", nc=3
    )
    ha1 = h(f"{h('u:r:p')}:N:C")
    expected = h(f"{ha1}:N:00000003:C:auth:{h('BYE:sip:a@b')}")
    assert params_of(value)["response"] == expected
    assert params_of(value)["algorithm"] == algorithm


def test_sha512_256_is_the_truncated_sha512_variant_not_sha512_truncated() -> None:
    [challenge] = parse_challenges('Digest realm="r", nonce="N", algorithm=SHA-512-256, qop=auth')
    value = authorization(
        challenge, method="INVITE", uri="sip:x@y", username="u", password="p", cnonce="C"
    )
    expected = sha512_256(f"{sha512_256('u:r:p')}:N:00000001:C:auth:{sha512_256('INVITE:sip:x@y')}")
    response = params_of(value)["response"]
    assert response == expected and len(response) == 64
    assert response != hashlib.sha512(b"x").hexdigest()[:64]


def test_auth_int_signs_the_body_when_it_is_the_only_qop() -> None:
    [challenge] = parse_challenges('Digest realm="r", nonce="N", qop="auth-int"')
    body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
    value = authorization(
        challenge, method="INVITE", uri="sip:x@y", username="u", password="p", body=body, cnonce="C"
    )
    ha2 = md5(f"INVITE:sip:x@y:{hashlib.md5(body).hexdigest()}")
    expected = md5(f"{md5('u:r:p')}:N:00000001:C:auth-int:{ha2}")
    params = params_of(value)
    assert params["qop"] == "auth-int"
    assert params["response"] == expected


def test_auth_preferred_over_auth_int() -> None:
    [challenge] = parse_challenges('Digest realm="r", nonce="N", qop="auth-int,auth"')
    assert challenge.chosen_qop == "auth"
    value = authorization(challenge, method="X", uri="u", username="u", password="p", body=b"x")
    assert params_of(value)["qop"] == "auth"


def test_nc_is_eight_hex_digits() -> None:
    [challenge] = parse_challenges('Digest realm="r", nonce="N", qop=auth')
    value = authorization(challenge, method="X", uri="u", username="u", password="p", nc=255)
    assert params_of(value)["nc"] == "000000ff"


def test_userhash_sends_the_hashed_username() -> None:
    header = 'Digest realm="api@example.org", nonce="N", algorithm=SHA-256, qop=auth, userhash=true'
    [challenge] = parse_challenges(header)
    assert challenge.userhash
    value = authorization(challenge, method="X", uri="u", username="Mufasa", password="p")
    params = params_of(value)
    assert params["username"] == sha256("Mufasa:api@example.org")
    assert params["userhash"] == "true"


def test_quotes_in_username_are_escaped_and_round_trip() -> None:
    [challenge] = parse_challenges('Digest realm="r", nonce="N", qop=auth')
    value = authorization(challenge, method="X", uri="u", username='a"b\\c', password="p")
    assert 'username="a\\"b\\\\c"' in value
    assert params_of(value)["username"] == 'a"b\\c'


def test_unsupported_challenge_is_refused() -> None:
    [challenge] = parse_challenges('Digest realm="r", nonce="N", algorithm=AKAv1-MD5')
    with pytest.raises(ValueError, match="AKAv1-MD5"):
        authorization(challenge, method="X", uri="u", username="u", password="p")


def test_default_cnonce_is_fresh_each_time() -> None:
    [challenge] = parse_challenges('Digest realm="r", nonce="N", qop=auth')
    values = {
        params_of(authorization(challenge, method="X", uri="u", username="u", password="p"))[
            "cnonce"
        ]
        for _ in range(5)
    }
    assert len(values) == 5


# --- parsing ------------------------------------------------------------------------------------


def test_parsing_is_robust_to_case_spacing_and_quoting() -> None:
    header = (
        'digest  REALM = "sip, trunk \\"one\\""  ,NONCE=abc123 ,  Algorithm = sha-256 ,'
        'QOP="  auth , AUTH-INT " ,Opaque="" , Stale=TRUE,domain="sip:a sip:b"'
    )
    [challenge] = parse_challenges(header)
    assert challenge == Challenge(
        realm='sip, trunk "one"',
        nonce="abc123",
        opaque="",
        algorithm="SHA-256",
        qop=("auth", "auth-int"),
        stale=True,
    )


def test_missing_commas_and_tabs_still_parse() -> None:
    [challenge] = parse_challenges('Digest\trealm="r"\tnonce="n" algorithm=MD5-sess qop=auth')
    assert (challenge.realm, challenge.nonce, challenge.algorithm) == ("r", "n", "MD5-sess")
    assert challenge.qop == ("auth",)


def test_absent_algorithm_means_md5_and_stale_defaults_false() -> None:
    [challenge] = parse_challenges('Digest realm="r", nonce="n", stale=false')
    assert challenge.algorithm == "MD5"
    assert challenge.stale is False
    assert challenge.opaque is None


def test_other_schemes_are_skipped() -> None:
    header = (
        'Basic realm="x", Bearer realm="y", error="invalid_token",'
        ' Digest realm="z", nonce="n", Negotiate dG9rZW4==, Digest realm="w", nonce="m"'
    )
    assert [c.realm for c in parse_challenges(header)] == ["z", "w"]
    schemes = [scheme for scheme, _ in parse_auth_header(header)]
    assert schemes == ["Basic", "Bearer", "Digest", "Negotiate", "Digest"]


def test_several_header_values() -> None:
    values = [
        'Digest realm="r", nonce="a", algorithm=MD5, qop="auth"',
        'Digest realm="r", nonce="b", algorithm=SHA-512-256, qop="auth"',
        'Digest realm="r", nonce="c", algorithm=SHA-256, qop="auth"',
    ]
    best = strongest(parse_challenges(values))
    assert best is not None and best.nonce == "b"


def test_strongest_skips_what_we_cannot_answer() -> None:
    values = [
        'Digest realm="r", nonce="a", algorithm=AKAv1-MD5, qop="auth"',
        'Digest realm="r", nonce="b", algorithm=SHA-256-sess',  # -sess without qop
        'Digest realm="r", nonce="c", algorithm=SHA-256, qop="auth-conf"',  # no usable qop
        'Digest realm="r", algorithm=SHA-256, qop="auth"',  # no nonce
        'Digest realm="r", nonce="e", algorithm=MD5',
    ]
    best = strongest(parse_challenges(values))
    assert best is not None and best.nonce == "e"
    assert strongest(parse_challenges(values[:4])) is None


def test_tie_keeps_the_first_listed() -> None:
    values = 'Digest realm="r", nonce="a", qop=auth, Digest realm="r", nonce="b", qop=auth'
    best = strongest(parse_challenges(values))
    assert best is not None and best.nonce == "a"


@pytest.mark.parametrize(
    "header", ["", "   ", "Digest", "Digest ,,,", 'Digest realm="unterminated', "=,=\"'", "=="]
)
def test_odd_values_do_not_raise(header: str) -> None:
    challenges = parse_challenges(header)
    assert all(not c.nonce for c in challenges)


def test_unterminated_quote_runs_to_the_end() -> None:
    [challenge] = parse_challenges('Digest nonce="n", realm="half')
    assert challenge.realm == "half"


@given(st.text(max_size=200))
def test_parser_never_raises(text: str) -> None:
    for scheme, params in parse_auth_header(text):
        assert scheme
        assert all(isinstance(v, str) for v in params.values())


def test_challenge_header_value_round_trips() -> None:
    challenge = make_challenge(
        'voxflow "test"', algorithm="sha-512-256", qop=("auth", "auth-int"), opaque="o", stale=True
    )
    assert challenge.algorithm == "SHA-512-256"
    assert parse_challenges(challenge.header_value()) == [challenge]


def test_make_challenge_refuses_unknown_algorithms() -> None:
    with pytest.raises(ValueError, match="SHA-1"):
        make_challenge("r", algorithm="SHA-1")


def test_make_challenge_nonces_are_fresh() -> None:
    assert make_challenge("r").nonce != make_challenge("r").nonce


# --- DigestClient -------------------------------------------------------------------------------


def counter_cnonces() -> DigestClient:
    counter = itertools.count(1)
    return DigestClient("alice", "pw", cnonce_factory=lambda: f"c{next(counter)}")


def test_client_answers_a_401_with_authorization() -> None:
    client = counter_cnonces()
    assert client.on_challenge('Digest realm="r", nonce="n1", qop="auth"')
    [(name, value)] = client.headers("REGISTER", "sip:r")
    assert name == "Authorization"
    assert params_of(value)["nc"] == "00000001"
    assert params_of(value)["cnonce"] == "c1"


def test_client_counts_nonce_uses_and_pre_authorises_later_requests() -> None:
    client = counter_cnonces()
    client.on_challenge('Digest realm="proxy", nonce="n1", qop="auth"', proxy=True)
    ncs = []
    for method in ("INVITE", "ACK", "BYE"):
        [(name, value)] = client.headers(method, "sip:b@x")
        assert name == "Proxy-Authorization"
        ncs.append(params_of(value)["nc"])
    assert ncs == ["00000001", "00000002", "00000003"]


def test_a_new_nonce_restarts_the_count() -> None:
    client = counter_cnonces()
    client.on_challenge('Digest realm="r", nonce="n1", qop="auth"')
    client.headers("INVITE", "sip:b@x")
    client.headers("BYE", "sip:b@x")
    assert client.on_challenge('Digest realm="r", nonce="n2", qop="auth"')
    [(_, value)] = client.headers("BYE", "sip:b@x")
    assert params_of(value)["nonce"] == "n2"
    assert params_of(value)["nc"] == "00000001"


def test_same_nonce_again_means_wrong_credentials() -> None:
    client = counter_cnonces()
    challenge = 'Digest realm="r", nonce="n1", qop="auth"'
    assert client.on_challenge(challenge)
    client.headers("INVITE", "sip:b@x")
    assert not client.on_challenge(challenge)


def test_same_nonce_before_answering_is_not_a_failure() -> None:
    client = counter_cnonces()
    challenge = 'Digest realm="r", nonce="n1", qop="auth"'
    assert client.on_challenge(challenge)
    assert client.on_challenge(challenge)  # never sent credentials with it yet


def test_stale_true_means_retry_even_with_the_same_nonce() -> None:
    client = counter_cnonces()
    client.on_challenge('Digest realm="r", nonce="n1", qop="auth"')
    client.headers("INVITE", "sip:b@x")
    assert client.on_challenge('Digest realm="r", nonce="n1", qop="auth", stale=true')
    [(_, value)] = client.headers("INVITE", "sip:b@x")
    assert params_of(value)["nc"] == "00000002"  # never reuse an nc with one nonce


def test_stale_with_a_new_nonce_retries() -> None:
    client = counter_cnonces()
    client.on_challenge('Digest realm="r", nonce="n1", qop="auth"')
    client.headers("INVITE", "sip:b@x")
    assert client.on_challenge('Digest realm="r", nonce="n2", qop="auth", stale=TRUE')


def test_no_usable_challenge_means_stop() -> None:
    client = counter_cnonces()
    assert not client.on_challenge('Basic realm="r"')
    assert not client.on_challenge('Digest realm="r", nonce="n", algorithm=AKAv2-MD5')
    assert client.headers("INVITE", "sip:x") == []


def test_proxy_and_uas_realms_are_both_answered() -> None:
    client = counter_cnonces()
    client.on_challenge('Digest realm="proxy", nonce="p1", qop=auth', proxy=True)
    client.headers("INVITE", "sip:b@x")
    client.on_challenge(['Digest realm="uas", nonce="u1", algorithm=SHA-256, qop=auth'])
    headers = client.headers("INVITE", "sip:b@x")
    assert [name for name, _ in headers] == ["Proxy-Authorization", "Authorization"]
    assert [params_of(v)["realm"] for _, v in headers] == ["proxy", "uas"]
    assert params_of(headers[0][1])["nc"] == "00000002"
    assert client.challenge_for("uas") is not None
    client.forget("uas")
    assert [name for name, _ in client.headers("BYE", "sip:b@x")] == ["Proxy-Authorization"]
    client.forget()
    assert client.headers("BYE", "sip:b@x") == []


def test_client_picks_the_strongest_per_realm() -> None:
    client = counter_cnonces()
    client.on_challenge(
        [
            'Digest realm="r", nonce="a", algorithm=MD5, qop="auth"',
            'Digest realm="r", nonce="b", algorithm=SHA-256, qop="auth"',
        ]
    )
    [(_, value)] = client.headers("INVITE", "sip:x")
    assert params_of(value)["algorithm"] == "SHA-256"


def test_client_repr_hides_the_password() -> None:
    assert "pw" not in repr(DigestClient("alice", "pw"))


# --- the server side ----------------------------------------------------------------------------


PASSWORDS = {("alice", "voxflow"): "wonderland"}


def lookup(username: str, realm: str) -> str | None:
    return PASSWORDS.get((username, realm))


def answer(challenge: Challenge, password: str = "wonderland") -> str:
    return authorization(
        challenge, method="INVITE", uri="sip:100@127.0.0.1", username="alice", password=password
    )


@pytest.mark.parametrize("algorithm", ["MD5", "MD5-sess", "SHA-256", "SHA-512-256-sess"])
def test_check_accepts_a_right_answer(algorithm: str) -> None:
    challenge = make_challenge("voxflow", algorithm=algorithm)
    result = check(answer(challenge), "INVITE", lookup, realm="voxflow", uri="sip:100@127.0.0.1")
    assert result
    assert result == AuthResult(
        True, username="alice", realm="voxflow", nonce=challenge.nonce, nc=1
    )


def test_check_rfc2069_form() -> None:
    challenge = make_challenge("voxflow", algorithm="MD5", qop=())
    result = check(answer(challenge), "INVITE", lookup)
    assert result.ok and result.nc == 0


def test_check_auth_int_uses_the_body() -> None:
    challenge = make_challenge("voxflow", qop=("auth-int",))
    value = authorization(
        challenge, method="INVITE", uri="sip:x", username="alice", password="wonderland", body=b"B"
    )
    assert check(value, "INVITE", lookup, body=b"B")
    assert check(value, "INVITE", lookup, body=b"C").reason == "wrong response"


def test_check_refuses_a_wrong_password() -> None:
    result = check(answer(make_challenge("voxflow"), "nope"), "INVITE", lookup)
    assert not result
    assert result.reason == "wrong response"
    assert result.username == "alice"


def test_check_refuses_the_wrong_method() -> None:
    assert not check(answer(make_challenge("voxflow")), "BYE", lookup)


def test_check_unknown_user() -> None:
    result = check(answer(make_challenge("elsewhere")), "INVITE", lookup)
    assert result.reason == "unknown user"


def test_check_stale_nonce() -> None:
    challenge = make_challenge("voxflow")
    result = check(answer(challenge), "INVITE", lookup, nonce_valid=lambda nonce: False)
    assert not result.ok and result.stale and result.reason == "stale nonce"
    assert check(answer(challenge), "INVITE", lookup, nonce_valid={challenge.nonce}.__contains__)


def test_check_stale_only_for_a_right_answer() -> None:
    result = check(
        answer(make_challenge("voxflow"), "nope"), "INVITE", lookup, nonce_valid=lambda n: False
    )
    assert not result.stale and result.reason == "wrong response"


def test_check_realm_and_uri_must_match() -> None:
    value = answer(make_challenge("voxflow"))
    assert check(value, "INVITE", lookup, realm="other").reason == "wrong realm"
    assert (
        check(value, "INVITE", lookup, uri="sip:200@x").reason == "uri does not match the request"
    )


def test_check_accepts_upper_case_hex() -> None:
    value = answer(make_challenge("voxflow"))
    response = params_of(value)["response"]
    assert check(value.replace(response, response.upper()), "INVITE", lookup)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Basic YWxpY2U6cHc=", "not a Digest authorization"),
        ("", "not a Digest authorization"),
        ('Digest realm="voxflow", nonce="n", uri="u", response="r"', "missing username"),
        (
            'Digest username="alice", realm="voxflow", nonce="n", uri="u", response="r",'
            " algorithm=SHA-1",
            "unsupported algorithm",
        ),
        (
            'Digest username="alice", realm="voxflow", nonce="n", uri="u", response="r",'
            " userhash=true",
            "userhash not supported",
        ),
        (
            'Digest username="alice", realm="voxflow", nonce="n", uri="u", response="r",'
            " qop=auth-conf, nc=00000001, cnonce=c",
            "unsupported qop",
        ),
        (
            'Digest username="alice", realm="voxflow", nonce="n", uri="u", response="r", qop=auth',
            "qop without cnonce or nc",
        ),
        (
            'Digest username="alice", realm="voxflow", nonce="n", uri="u", response="r",'
            ' qop=auth, nc=1, cnonce="c"',
            "bad nc",
        ),
    ],
)
def test_check_refuses_malformed_authorizations(value: str, reason: str) -> None:
    assert check(value, "INVITE", lookup).reason == reason


def test_check_reports_the_nonce_count() -> None:
    challenge = make_challenge("voxflow")
    value = authorization(
        challenge, method="INVITE", uri="u", username="alice", password="wonderland", nc=0x1A
    )
    assert check(value, "INVITE", lookup).nc == 26


safe_text = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1, max_size=30)


@given(username=safe_text, password=safe_text, realm=safe_text, uri=safe_text)
def test_client_and_server_agree(username: str, password: str, realm: str, uri: str) -> None:
    challenge = make_challenge(realm, algorithm="SHA-256")
    value = authorization(
        challenge, method="REGISTER", uri=uri, username=username, password=password
    )
    result = check(
        value, "REGISTER", lambda u, r: password if (u, r) == (username, realm) else None
    )
    assert result.ok, (value, result)
    assert result.username == username
