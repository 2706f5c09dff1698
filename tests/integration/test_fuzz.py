"""Property: nothing a client sends to any registered method gets a 5xx or a non-document error.

Random and hostile bodies (random bytes, random XML trees of real iovox tag names, mutated and
truncated documents), random verbs, headers and query strings, thrown at every method in the
routing table. Methods not written yet are simply not in the table and are not exercised.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from lxml import etree

import voxflow.api.interfaces  # noqa: F401  (registers every method)
from tests.support import ApiClient, PostgresServer, RunningServer, start_server, wrap
from voxflow.api import routing
from voxflow.errors import ApiError
from voxflow.store.db import Database

METHODS = routing.methods()

TAGS = [
    "request", "response", "link_id", "link_ids", "new_link_id", "link_name", "link_type",
    "link_date", "link", "links", "click_to_call", "node_id", "node_ids", "new_node_id",
    "node_name", "node_type", "node_date", "node", "nodes", "call_variables",
    "call_destination", "delay", "my_custom_var", "contact", "contacts", "contact_id",
    "contact_ids", "display_name", "first_name", "last_name", "email", "mobile_phone",
    "business_phone", "home_phone", "company", "notes", "phone_number", "callFlow",
    "call_flow", "call_flows", "name", "new_name", "play", "call", "voicemail", "menu",
    "option", "hangup", "rules", "rule", "rule_id", "rule_type", "rule_label",
    "rules_variable", "template_name", "template_type", "overwrite_existing",
    "detach_from_links", "soundFile", "sound_file", "sound_files", "sound_label",
    "sound_group", "send_call_alert", "record_call", "categories", "blocked_number",
    "blocked_numbers", "number", "in_or_out", "operator", "default", "exceptions",
    "time_template", "time_templates", "label", "time_frames", "time_frame", "date_from",
    "date_to", "recurrence", "time_from", "time_to", "days", "day", "destinationPhoneNumber",
]  # fmt: skip
ATTRIBUTES = ["name", "notes", "destinationPhoneNumber", "soundFile", "timeout", "label", "id"]
VALUES = [
    "", " ", "0", "1", "-1", "2", "30", "43200", "43201", "20000", "20001", "99999999999999999999",
    "1.5", "1e3", "TRUE", "FALSE", "true", "yes", "IN", "OUT", "EQUALS", "STARTSWITH", "BLOCK",
    "ALLOW", "WITHHELD", "*", "#", "MON", "SUN", "NONE", "MONTHLY", "YEARLY", "DEFAULT",
    "CUSTOM", "ALL", "00:00", "23:59", "24:61", "2024-02-29 12:00:00", "2024-13-45 99:99:99",
    "2024-01-01", "449789123123", "449789123123,,1,,2", "+44 20 7946 0000", "4" * 22,
    "$agent_number", "$_call_id", "$", "group|label", "|", "a|b|c", "n1", "l1", "c1", "flow",
    "339;IN;STARTSWITH,334;OUT;EQUALS", "n1,n2", ",", ",,", "a" * 65, "b" * 256, "x" * 2000,
    "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQAAAAA=", "not base64!",
    "'; DROP TABLE nodes; --", "%", "_", "\\", "%00", "\u00e9\u00e8\u4e2d\u6587", "\U0001f600",
    "<b>", "&amp;", "]]>",
]  # fmt: skip
QUERY_NAMES = [
    "node_id", "node_ids", "node_type", "link_id", "link_ids", "link_type", "contact_id",
    "contact_ids", "call_flows", "call_flow", "name", "template_name", "template_type",
    "detach_from_links", "blocked_numbers", "label", "labels", "sound_label", "sound_group",
    "sound_files", "call_id", "date_from", "date_to", "in_or_out",
]  # fmt: skip
VERBS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"]
WRITE_VERBS = {"POST", "PUT", "DELETE"}
CONTENT_TYPES = [
    "application/xml",
    "text/xml; charset=utf-8",
    "application/x-www-form-urlencoded",
    "application/json",
    "multipart/form-data; boundary=x",
    "text/plain; charset=utf-16",
    "",
]

# ------------------------------------------------------------------ strategies

url_text = st.text(st.characters(codec="utf-8"), max_size=40)
# h11 refuses header values with whitespace at either end.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
    str.strip
)
values = st.one_of(st.sampled_from(VALUES), url_text)
# Plausible field values, so that some writes succeed and reach the store.
PLAUSIBLE = ["n1", "n2", "n3", "l1", "c1", "x", "shop", "Main St", "2024-01-01 10:00:00", "1"]
field_values = st.one_of(
    st.sampled_from(PLAUSIBLE),
    st.sampled_from(PLAUSIBLE),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), max_size=20),
    values,
)


@dataclass(frozen=True)
class Element:
    tag: str
    attributes: tuple[tuple[str, str], ...]
    text: str
    children: tuple[Element, ...]

    def render(self, indent: str | None, depth: int = 0) -> str:
        attrs = "".join(f" {name}={quoteattr(value)}" for name, value in self.attributes)
        inner = escape(self.text)
        if self.children:
            if indent is None:
                inner += "".join(c.render(None) for c in self.children)
            else:
                pad = "\n" + indent * (depth + 1)
                inner += "".join(pad + c.render(indent, depth + 1) for c in self.children)
                inner += "\n" + indent * depth
        if not inner and len(self.attributes) % 2:
            return f"<{self.tag}{attrs}/>"
        return f"<{self.tag}{attrs}>{inner}</{self.tag}>"


tags = st.one_of(st.sampled_from(TAGS), st.sampled_from(TAGS).map(str.upper))
attribute_lists = st.lists(st.tuples(st.sampled_from(ATTRIBUTES), values), max_size=3).map(
    lambda pairs: tuple(dict(pairs).items())
)
leaves = st.builds(Element, tags, attribute_lists, values, st.just(()))
elements = st.recursive(
    leaves,
    lambda children: st.builds(
        Element,
        tags,
        attribute_lists,
        st.one_of(st.just(""), values),
        st.lists(children, max_size=6).map(tuple),
    ),
    max_leaves=40,
)


# The items each interface's writes carry and the fields inside them, so that generated bodies
# get past "Request Empty" into the per-item validation.
ITEM_SHAPES: dict[str, tuple[list[str], list[str]]] = {
    "Nodes": (["node"], ["node_id", "new_node_id", "node_name", "node_type", "node_date"]),
    "Links": (
        ["link", "link_ids", "rules_variable"],
        ["link_id", "new_link_id", "node_id", "link_name", "link_type", "link_date",
         "click_to_call", "template_name", "overwrite_existing", "categories"],
    ),
    "Contacts": (
        ["contact"],
        ["contact_id", "display_name", "first_name", "last_name", "email", "mobile_phone",
         "business_phone", "home_phone", "company", "notes"],
    ),
    "CallFlow": (["callFlow", "call_flow"], ["name", "new_name", "notes", "play", "call"]),
    "Rules": (
        ["blocked_number", "time_template", "rule", "time_frames"],
        ["number", "in_or_out", "operator", "default", "label", "date_from", "date_to",
         "recurrence", "time_from", "time_to", "days", "rule_id", "rule_type", "rule_label"],
    ),
    "SoundFiles": (
        ["sound_file", "soundFile"],
        ["sound_label", "sound_group", "notes", "sound_file"],
    ),
    "Calling": (
        ["call_variables"],
        ["call_destination", "delay", "my_custom_var", "agent_number", "link_id"],
    ),
}  # fmt: skip


def shaped_items(interface: str) -> st.SearchStrategy[list[Element]]:
    """``<item><field>value</field>...</item>`` children for the interface's write methods."""
    item_tags, field_tags = ITEM_SHAPES.get(interface, (TAGS, TAGS))
    field = st.builds(Element, st.sampled_from(field_tags), st.just(()), field_values, st.just(()))
    # The item's id field (the first listed) leads most items, with a plausible value.
    key = st.builds(
        Element, st.just(field_tags[0]), st.just(()), st.sampled_from(PLAUSIBLE), st.just(())
    )
    fields = st.lists(often(field, elements, odds=3), max_size=8)
    item = st.builds(
        Element,
        st.sampled_from(item_tags),
        st.just(()),
        st.just(""),
        st.tuples(often(key.map(lambda k: [k]), st.just([]), odds=3), fields).map(
            lambda parts: tuple(parts[0] + parts[1])
        ),
    )
    loose = st.builds(Element, st.sampled_from(field_tags), st.just(()), values, st.just(()))
    return st.lists(st.one_of(item, item, loose), min_size=1, max_size=5)


@st.composite
def xml_documents(draw: st.DrawFn, items: st.SearchStrategy[list[Element]] | None = None) -> bytes:
    """A random tree of iovox tags, usually under ``<request>``, rendered several ways."""
    children = draw(items if items is not None else st.lists(elements, max_size=6))
    root = draw(st.one_of(st.just("request"), st.just("request"), tags))
    document = Element(root, draw(attribute_lists), "", tuple(children))
    indent = draw(st.sampled_from([None, None, "  ", "\t"]))
    text = document.render(indent)
    if draw(st.booleans()):
        text = '<?xml version="1.0" encoding="utf-8"?>\n' + text
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["utf-16", "latin-1"]))
    data = text.encode(encoding, errors="replace")
    mutation = draw(st.sampled_from(["none"] * 6 + ["truncate", "splice", "garbage"]))
    if mutation == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif mutation == "splice" and data:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(max_size=20)) + data[at:]
    elif mutation == "garbage":
        data = data + draw(st.sampled_from([b"<", b"</request>", b"\x00", b"&x;", b"<!-- "]))
    return data


HOSTILE_BODIES = [
    b"",
    b"   \n ",
    b"<request/>",
    b"<!DOCTYPE r [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;&a;'>]><request>&b;</request>",
    b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<request><link_id>&x;</link_id></request>",
    b'<!DOCTYPE r [<!ENTITY % p SYSTEM "http://127.0.0.1:1/x">%p;]><request/>',
    (
        '<?xml version="1.0" encoding="UTF-16"?>'
        '<!DOCTYPE r [<!ENTITY a "b">]><request>&a;</request>'
    ).encode("utf-16"),
    b"<request>" + b"<a>" * 3000 + b"</a>" * 3000 + b"</request>",
    b"<request><link_id>\xff\xfe\xc3\x28</link_id></request>",
    b"<request><node><node_id>&#0;</node_id></node></request>",
]

bodies = st.one_of(
    st.none(),
    st.binary(max_size=3000),
    st.sampled_from(HOSTILE_BODIES),
    xml_documents(),
    xml_documents(),
    xml_documents(),
)


@dataclass(frozen=True)
class Call:
    verb: str
    path: str
    params: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    expected_verb: str | None  # the verb of the method addressed, when one is


def often(
    common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], odds: int = 8
) -> st.SearchStrategy[Any]:
    """``common`` ``odds`` times out of ``odds + 1`` (``one_of`` would weigh branches evenly)."""
    return st.sampled_from([True] * odds + [False]).flatmap(lambda c: common if c else rare)


def maybe(strategy: st.SearchStrategy[str], odds: int = 3) -> st.SearchStrategy[str | None]:
    """Absent most of the time."""
    return often(st.none(), strategy, odds)


@st.composite
def calls(draw: st.DrawFn, api: ApiClient) -> Call:
    method = draw(st.sampled_from(METHODS))
    interface = draw(
        often(
            st.just(method.interface),
            st.one_of(
                st.just(method.interface.lower()),
                st.sampled_from(["Calls", "Nope", "", "Nodes/extra", "Nodes/", "%2e%2e"]),
                url_text,
            ),
            odds=12,
        )
    )
    name = draw(
        often(
            st.just(method.name),
            st.one_of(st.just(method.name.upper()), st.sampled_from(["", "getNothing"]), url_text),
            odds=12,
        )
    )
    verb = draw(often(st.just(method.verb), st.sampled_from(VERBS), odds=6))
    params: dict[str, str | None] = {
        "v": draw(often(st.just("3"), st.one_of(st.sampled_from(["", "2", " 3 "]), url_text), 12)),
        "method": draw(often(st.just(name), st.none(), odds=20)),
        "output": draw(maybe(st.sampled_from(["XML", "JSON", "json", "CSV", ""]))),
        "page": draw(maybe(st.one_of(st.sampled_from(VALUES[:14]), url_text))),
        "limit": draw(maybe(st.one_of(st.sampled_from(VALUES[:14]), url_text))),
        "req_fields": draw(
            maybe(st.one_of(st.sampled_from(["nid", "nid,nn", "zz", ","]), url_text), 4)
        ),
        "order": draw(
            maybe(st.one_of(st.sampled_from(["nid_ASC", "nn_DESC", "x_UP"]), url_text), 4)
        ),
    }
    for key in draw(st.lists(st.sampled_from(QUERY_NAMES), max_size=4, unique=True)):
        params[key] = draw(values)
    # Header names in any case; now and then bad or missing credentials.
    user_header = draw(st.sampled_from(["username", "Username", "USERNAME"]))
    key_header = draw(st.sampled_from(["secureKey", "securekey", "SECUREKEY"]))
    headers: dict[str, str | None] = {
        user_header: draw(often(st.just(api.username), st.one_of(st.none(), header_text), 30)),
        key_header: draw(often(st.just(api.key), st.one_of(st.none(), header_text), 30)),
        "content-type": draw(st.sampled_from([*CONTENT_TYPES, None])),
        "Idempotency-Key": draw(maybe(header_text, 9)),
    }
    extra = draw(st.sampled_from(["X-Forwarded-For", "Accept", "Content-Encoding"]))
    headers[extra] = draw(maybe(header_text, 9))
    body = draw(often(xml_documents(shaped_items(method.interface)), bodies, odds=1))
    if verb in ("POST", "PUT") and body is None:
        body = wrap(draw(elements).render(None)).encode()
    return Call(
        verb=verb,
        path="/" + quote(interface, safe="/%"),
        params=tuple((k, v) for k, v in params.items() if v is not None),
        headers=tuple((k, v) for k, v in headers.items() if v is not None),
        body=body,
        expected_verb=addressed_verb(interface, params["method"]),
    )


def addressed_verb(interface: str, name: str | None) -> str | None:
    """The verb of the method a path and ``method`` parameter name, None when they name none."""
    try:
        return routing.resolve(interface.strip("/"), name).verb
    except ApiError:
        return None


# ------------------------------------------------------------------ the property


def assert_error_document(resp: httpx.Response, output: str | None) -> None:
    content_type = resp.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        assert resp.status_code != 401, "a 401 is always XML"
        assert (output or "").upper() == "JSON"
        document = resp.json()
        assert list(document) == ["errors"]
        rows: Any = document["errors"]["error"]
        rows = rows if isinstance(rows, list) else [rows]
        assert rows
        statuses = []
        for row in rows:
            assert set(row) == {"@status", "#text"}
            assert isinstance(row["#text"], str) and row["#text"]
            statuses.append(int(row["@status"]))
    else:
        assert content_type.startswith("application/xml"), content_type
        root = etree.fromstring(resp.content)
        assert root.tag == "errors"
        children = list(root)
        assert children and all(e.tag == "error" for e in children)
        assert all(e.text for e in children)
        statuses = [int(e.get("status", "0")) for e in children]
    assert max(statuses) == resp.status_code, (statuses, resp.status_code)


def check(call: Call, resp: httpx.Response) -> None:
    params = dict(call.params)
    detail = f"{call.verb} {call.path} {params} -> {resp.status_code} {resp.text[:300]}"
    assert resp.status_code < 500, detail
    if not 200 <= resp.status_code < 300:
        assert 400 <= resp.status_code < 500, detail
        assert_error_document(resp, params.get("output"))
        return
    # A success is only possible for the method's own verb, with the code that verb promises.
    assert call.expected_verb == call.verb, detail
    if call.verb == "POST":
        assert resp.status_code == 201, detail
    elif call.verb in ("PUT", "DELETE"):
        assert resp.status_code == 204 and resp.content == b"", detail
    else:
        assert resp.status_code == 200, detail
        if resp.headers.get("content-type", "").startswith("application/json"):
            assert list(json.loads(resp.content)) == ["response"], detail
        else:
            assert etree.fromstring(resp.content).tag == "response", detail


# ------------------------------------------------------------------ one server per backend


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def fuzz_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path_factory.mktemp("fuzz") / "voxflow.db"
        shutil.copy(template, path)
        db = Database(f"sqlite:///{path}")
    else:
        pg: PostgresServer = request.getfixturevalue("postgres")
        db = Database(pg.url(pg.create_database(template=request.getfixturevalue("pg_template"))))
    running = start_server(db)
    try:
        yield running
    finally:
        running.stop()
        db.dispose()


@pytest.fixture(scope="module")
def fuzz_api(fuzz_server: RunningServer) -> Iterator[ApiClient]:
    client = fuzz_server.client("fuzzer")
    # A few objects, so that reads and updates find something to work on.
    client.post(
        "Nodes",
        "createNodes",
        wrap(
            "<node><node_id>n1</node_id><node_name>a</node_name><node_type>t</node_type></node>",
            "<node><node_id>n2</node_id><node_name>b</node_name><node_type>t</node_type></node>",
        ),
    )
    yield client
    client.close()


def test_methods_are_registered() -> None:
    assert ("Nodes", "getNodes") in {(m.interface, m.name) for m in METHODS}


# VOXFLOW_FUZZ_EXAMPLES=5000 for a longer hunt.
@settings(
    max_examples=int(os.environ.get("VOXFLOW_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_no_request_gets_a_5xx_or_a_bare_error(fuzz_api: ApiClient, data: st.DataObject) -> None:
    call = data.draw(calls(fuzz_api))
    resp = fuzz_api.http.request(
        call.verb,
        call.path,
        params=list(call.params),
        headers=list(call.headers),
        content=call.body,
    )
    event(f"HTTP {resp.status_code}")
    if resp.status_code >= 400 and resp.headers.get("content-type", "").startswith(
        "application/xml"
    ):
        first = etree.fromstring(resp.content).findtext("error") or ""
        event(f"{call.expected_verb or 'unrouted'}: {first[:24]}")
    check(call, resp)
