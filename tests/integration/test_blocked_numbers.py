from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from tests.support import ApiClient, RunningServer, errors_of, rows_of, wrap, xml_of
from voxflow.domain.blocking import BlockException, BlockRule, blocked
from voxflow.services.blocked_numbers import load_rules
from voxflow.store import tables as t


def item(
    number: str | None = "33",
    in_or_out: str | None = "OUT",
    operator: str | None = "STARTSWITH",
    default: str | None = "BLOCK",
    exceptions: str | None = None,
) -> str:
    parts = [
        f"<{tag}>{value}</{tag}>"
        for tag, value in (
            ("number", number),
            ("in_or_out", in_or_out),
            ("operator", operator),
            ("default", default),
        )
        if value is not None
    ]
    if exceptions is not None:
        parts.append(f"<exceptions>{exceptions}</exceptions>")
    return "<blocked_number>" + "".join(parts) + "</blocked_number>"


def exception(link_id: str = "sales", action: str = "ALLOW", template: str = "") -> str:
    extra = f"<time_template>{template}</time_template>" if template else ""
    return f"<exception><link_id>{link_id}</link_id><action>{action}</action>{extra}</exception>"


def create(api: ApiClient, *items: str) -> None:
    r = api.post("Rules", "createBlockedNumbers", wrap(*items))
    assert r.status_code == 201, r.text


def keys(api: ApiClient, **params: str) -> list[tuple[str, str, str, str]]:
    rows = rows_of(api.get("Rules", "getBlockedNumbers", **params))
    return [(r["number"], r["in_or_out"], r["operator"], r["default"]) for r in rows]


def account_id(server: RunningServer, api: ApiClient) -> int:
    with server.db.read() as conn:
        found: int = conn.execute(
            select(t.accounts.c.id).where(t.accounts.c.username == api.username)
        ).scalar_one()
    return found


# ---------------------------------------------------------------- create and read


def test_create_and_read_blocked_numbers(api: ApiClient) -> None:
    create(
        api,
        item("33", exceptions=exception("sales") + exception("vip", "ALLOW", "office hours")),
        item("449789123123", "in", "equals", "allow"),
        item("withheld", "IN", "EQUALS"),
        item("*", "OUT", "STARTSWITH", None),  # default BLOCK
    )
    assert keys(api) == [
        ("33", "OUT", "STARTSWITH", "BLOCK"),
        ("449789123123", "IN", "EQUALS", "ALLOW"),
        ("WITHHELD", "IN", "EQUALS", "BLOCK"),
        ("*", "OUT", "STARTSWITH", "BLOCK"),
    ]
    r = api.get("Rules", "getBlockedNumbers", number="33")
    result = xml_of(r).find("results/result")
    assert result is not None
    assert [c.tag for c in result] == ["number", "in_or_out", "operator", "default", "exceptions"]
    found = [
        (e.findtext("link_id"), e.findtext("action"), e.findtext("time_template"))
        for e in result.findall("exceptions/exception")
    ]
    assert found == [("sales", "ALLOW", None), ("vip", "ALLOW", "office hours")]
    empty = xml_of(api.get("Rules", "getBlockedNumbers", number="WITHHELD")).find(
        "results/result/exceptions"
    )
    assert empty is not None and len(empty) == 0


def test_filters_fields_and_order(api: ApiClient) -> None:
    create(api, item("33"), item("33", "IN"), item("44", "IN", "EQUALS", "ALLOW"))
    assert keys(api, in_or_out="in") == [
        ("33", "IN", "STARTSWITH", "BLOCK"),
        ("44", "IN", "EQUALS", "ALLOW"),
    ]
    assert keys(api, number="33", in_or_out="OUT") == [("33", "OUT", "STARTSWITH", "BLOCK")]
    rows = rows_of(api.get("Rules", "getBlockedNumbers", req_fields="n,d", order="n_DESC"))
    assert rows == [
        {"number": "44", "default": "ALLOW"},
        {"number": "33", "default": "BLOCK"},
        {"number": "33", "default": "BLOCK"},
    ]
    rows = rows_of(api.get("Rules", "getBlockedNumbers", req_fields="io,op", limit="1", page="3"))
    assert rows == [{"in_or_out": "IN", "operator": "EQUALS"}]


def test_json_output(api: ApiClient) -> None:
    create(api, item("33", exceptions=exception("sales")), item("44"))
    body = json.loads(api.get("Rules", "getBlockedNumbers", output="JSON").content)
    results = body["response"]["results"]["result"]
    assert results[0] == {
        "number": "33",
        "in_or_out": "OUT",
        "operator": "STARTSWITH",
        "default": "BLOCK",
        "exceptions": {"exception": {"link_id": "sales", "action": "ALLOW"}},
    }
    assert results[1]["exceptions"] == ""


# ---------------------------------------------------------------- create errors


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([item(number=None)], ["Blocked Number 1 of 1 Empty"]),
        ([item(number="")], ["Blocked Number 1 of 1 Empty"]),
        ([item(number="+33")], ["Blocked Number 1 of 1 Invalid"]),
        ([item(number="33a")], ["Blocked Number 1 of 1 Invalid"]),
        ([item(number="3" * 33)], ["Blocked Number 1 of 1 Invalid"]),
        ([item(in_or_out="BOTH")], ["In Or Out 1 of 1 Invalid"]),
        ([item(in_or_out=None)], ["In Or Out 1 of 1 Invalid"]),
        ([item(operator="CONTAINS")], ["Operator 1 of 1 Invalid"]),
        ([item(default="MAYBE")], ["Default 1 of 1 Invalid"]),
        ([item(exceptions=exception(link_id=""))], ["Exception Link ID 1 of 1 Empty"]),
        ([item(exceptions=exception(link_id="l" * 65))], ["Exception Link ID 1 of 1 too long"]),
        ([item(exceptions=exception(action="SKIP"))], ["Exception Action 1 of 1 Invalid"]),
        (
            [item(exceptions=exception(template="t" * 256))],
            ["Exception Time Template 1 of 1 too long"],
        ),
        (
            [item(exceptions=exception(action="X") + exception(link_id="b", action="Y"))],
            ["Exception Action 1 of 1 Invalid"],
        ),
        ([item("33"), item("33")], ["Blocked Number 2 of 2 already exists"]),
        (
            [item("1"), item(number="", in_or_out="X", operator="Y", default="Z"), item("2")],
            [
                "Blocked Number 2 of 3 Empty",
                "In Or Out 2 of 3 Invalid",
                "Operator 2 of 3 Invalid",
                "Default 2 of 3 Invalid",
            ],
        ),
    ],
)
def test_create_errors(api: ApiClient, items: list[str], expected: list[str]) -> None:
    r = api.post("Rules", "createBlockedNumbers", wrap(*items))
    assert r.status_code == 400
    assert errors_of(r) == expected
    assert keys(api) == []


def test_create_refuses_an_existing_rule_and_writes_nothing(api: ApiClient) -> None:
    create(api, item("33"))
    r = api.post("Rules", "createBlockedNumbers", wrap(item("44"), item("33", "out", "startswith")))
    assert errors_of(r) == ["Blocked Number 2 of 2 already exists"]
    assert keys(api) == [("33", "OUT", "STARTSWITH", "BLOCK")]
    # Another direction or operator is another rule.
    create(api, item("33", "IN"), item("33", "OUT", "EQUALS"))
    assert len(keys(api)) == 3


def test_longest_number_fits(api: ApiClient) -> None:
    create(api, item("3" * 32))
    assert keys(api)[0][0] == "3" * 32


def test_a_request_without_items_is_empty(api: ApiClient) -> None:
    r = api.post("Rules", "createBlockedNumbers", wrap("<something/>"))
    assert errors_of(r) == ["Request Empty"]


# ---------------------------------------------------------------- update


def test_update_default_and_exceptions(api: ApiClient) -> None:
    create(api, item("33", exceptions=exception("sales")), item("44", "IN", "EQUALS"))
    r = api.put(
        "Rules",
        "updateBlockedNumbers",
        wrap(
            item("33", default="ALLOW"),  # no <exceptions>: kept
            item("44", "IN", "EQUALS", None, exception("a", "block") + exception("b")),
        ),
    )
    assert r.status_code == 204 and r.content == b""
    body = json.loads(api.get("Rules", "getBlockedNumbers", output="JSON").content)
    first, second = body["response"]["results"]["result"]
    assert first["default"] == "ALLOW"
    assert first["exceptions"] == {"exception": {"link_id": "sales", "action": "ALLOW"}}
    assert second["default"] == "BLOCK"
    assert second["exceptions"]["exception"] == [
        {"link_id": "a", "action": "BLOCK"},
        {"link_id": "b", "action": "ALLOW"},
    ]
    # An empty <exceptions/> clears them.
    r = api.put("Rules", "updateBlockedNumbers", wrap(item("33", default=None, exceptions="")))
    assert r.status_code == 204
    body = json.loads(api.get("Rules", "getBlockedNumbers", number="33", output="JSON").content)
    assert body["response"]["results"]["result"]["exceptions"] == ""


def test_update_errors_roll_back_every_item(api: ApiClient) -> None:
    create(api, item("33"))
    r = api.put(
        "Rules",
        "updateBlockedNumbers",
        wrap(
            item("33", default="ALLOW"),
            item("33", "IN"),
            item("33", default="NEVER"),
            item("33", exceptions=exception(action="")),
            item("", "X", "EQUALS"),
        ),
    )
    assert r.status_code == 400
    assert errors_of(r) == [
        "Blocked Number 2 of 5 does not exist",
        "Default 3 of 5 Invalid",
        "Exception Action 4 of 5 Invalid",
        "Blocked Number 5 of 5 Empty",
        "In Or Out 5 of 5 Invalid",
    ]
    assert keys(api) == [("33", "OUT", "STARTSWITH", "BLOCK")]


# ---------------------------------------------------------------- delete


def test_delete_blocked_numbers(api: ApiClient) -> None:
    create(api, item("339", "IN"), item("334", "OUT", "EQUALS"), item("335"))
    r = api.delete(
        "Rules", "deleteBlockedNumbers", blocked_numbers="339;IN;STARTSWITH,334;out;equals"
    )
    assert r.status_code == 204 and r.content == b""
    assert keys(api) == [("335", "OUT", "STARTSWITH", "BLOCK")]


def test_delete_errors(api: ApiClient) -> None:
    create(api, item("339", "IN"))
    for params in ({}, {"blocked_numbers": ""}):
        r = api.delete("Rules", "deleteBlockedNumbers", **params)
        assert r.status_code == 400 and errors_of(r) == ["Blocked Numbers Empty"]
    r = api.delete(
        "Rules",
        "deleteBlockedNumbers",
        blocked_numbers="339;IN;STARTSWITH,339;OUT;STARTSWITH,;IN;EQUALS,339,1;IN;EQUALS;X,3x;IN;EQUALS",
    )
    assert r.status_code == 400
    assert errors_of(r) == [
        "Blocked Number 2 of 6 does not exist",
        "Blocked Number 3 of 6 Empty",
        "In Or Out 4 of 6 Invalid",
        "Operator 4 of 6 Invalid",
        "Operator 5 of 6 Invalid",
        "Blocked Number 6 of 6 Invalid",
    ]
    assert keys(api) == [("339", "IN", "STARTSWITH", "BLOCK")]  # item 1 was not deleted


# ---------------------------------------------------------------- rules for initiateCall


def test_load_rules_feeds_the_blocking_decision(api: ApiClient, server: RunningServer) -> None:
    create(
        api,
        item("33", exceptions=exception("sales") + exception("eu", "ALLOW", "weekdays")),
        item("336", "OUT", "STARTSWITH", "ALLOW"),
        item("WITHHELD", "IN", "EQUALS"),
    )
    with server.db.read() as conn:
        rules = load_rules(conn, account_id(server, api))
    assert rules == [
        BlockRule(
            "33",
            "OUT",
            "STARTSWITH",
            "BLOCK",
            (BlockException("sales", "ALLOW"), BlockException("eu", "ALLOW", "weekdays")),
        ),
        BlockRule("336", "OUT", "STARTSWITH", "ALLOW", ()),
        BlockRule("WITHHELD", "IN", "EQUALS", "BLOCK", ()),
    ]
    assert blocked(rules, "33123456789", "OUT", "support")
    assert not blocked(rules, "33123456789", "OUT", "sales")
    assert not blocked(rules, "336123", "OUT", "support")
    assert blocked(rules, "", "IN")


# ---------------------------------------------------------------- accounts


def test_another_account_cannot_see_update_or_delete(
    api: ApiClient, api_b: ApiClient, server: RunningServer
) -> None:
    create(api, item("33"))
    assert keys(api_b) == []
    r = api_b.put("Rules", "updateBlockedNumbers", wrap(item("33", default="ALLOW")))
    assert errors_of(r) == ["Blocked Number 1 of 1 does not exist"]
    r = api_b.delete("Rules", "deleteBlockedNumbers", blocked_numbers="33;OUT;STARTSWITH")
    assert errors_of(r) == ["Blocked Number 1 of 1 does not exist"]
    assert keys(api) == [("33", "OUT", "STARTSWITH", "BLOCK")]
    create(api_b, item("33", default="ALLOW"))  # B's own rule with the same key
    with server.db.read() as conn:
        assert [r.default_action for r in load_rules(conn, account_id(server, api_b))] == ["ALLOW"]
        assert [r.default_action for r in load_rules(conn, account_id(server, api))] == ["BLOCK"]
