from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from tests.support import ApiClient, RunningServer, errors_of, rows_of, wrap, xml_of
from voxflow.store import tables as t


def node(node_id: str, name: str = "Shop", node_type: str = "shop") -> str:
    return (
        f"<node><node_id>{node_id}</node_id><node_name>{name}</node_name>"
        f"<node_type>{node_type}</node_type></node>"
    )


def link(node_id: str, link_id: str, name: str | None = None, **extra: str) -> str:
    body = f"<node_id>{node_id}</node_id><link_id>{link_id}</link_id>"
    body += f"<link_name>{name if name is not None else 'Name ' + link_id}</link_name>"
    body += "".join(f"<{k}>{v}</{k}>" for k, v in extra.items())
    return f"<link>{body}</link>"


def make_nodes(api: ApiClient, *specs: tuple[str, str, str]) -> None:
    r = api.post("Nodes", "createNodes", wrap(*(node(*s) for s in specs)))
    assert r.status_code == 201, r.text


def create(api: ApiClient, *links: str) -> Any:
    return api.post("Links", "createLinks", wrap(*links))


def link_ids(api: ApiClient, **params: Any) -> list[str]:
    return [row["link_id"] for row in rows_of(api.get("Links", "getLinks", **params))]


def stored(server: RunningServer, link_id: str) -> Any:
    with server.db.read() as conn:
        return conn.execute(select(t.links).where(t.links.c.link_id == link_id)).one()


@pytest.fixture
def shop(api: ApiClient) -> ApiClient:
    """Account A with nodes n1 (shop) and n2 (office)."""
    make_nodes(api, ("n1", "Shop", "shop"), ("n2", "Office", "office"))
    return api


# ------------------------------------------------------------------ happy paths


def test_create_get_update_delete_links(shop: ApiClient) -> None:
    r = create(
        shop,
        link("n1", "l1", "Magazine", link_type="print"),
        link("n2", "l2", "Website", link_type="web", click_to_call="0"),
    )
    assert r.status_code == 201, r.text
    r = shop.get("Links", "getLinks")
    assert r.status_code == 200
    assert rows_of(r) == [
        {
            "node_id": "n1",
            "node_name": "Shop",
            "node_type": "shop",
            "link_id": "l1",
            "link_name": "Magazine",
            "link_type": "print",
            "click_to_call": "1",
            "voxnumber": "",
            "rule_name": "",
        },
        {
            "node_id": "n2",
            "node_name": "Office",
            "node_type": "office",
            "link_id": "l2",
            "link_name": "Website",
            "link_type": "web",
            "click_to_call": "0",
            "voxnumber": "",
            "rule_name": "",
        },
    ]

    r = shop.put(
        "Links",
        "updateLinks",
        wrap(
            "<link><link_id>l1</link_id><new_link_id>l1b</new_link_id>"
            "<link_name>Radio</link_name><link_type>audio</link_type>"
            "<click_to_call>FALSE</click_to_call></link>"
        ),
    )
    assert r.status_code == 204 and r.content == b""
    rows = rows_of(shop.get("Links", "getLinks", link_id="l1b"))
    assert len(rows) == 1
    assert (rows[0]["link_name"], rows[0]["link_type"], rows[0]["click_to_call"]) == (
        "Radio",
        "audio",
        "0",
    )
    assert link_ids(shop, link_id="l1") == []

    r = shop.delete("Links", "deleteLinks", link_ids="l1b,l2")
    assert r.status_code == 204 and r.content == b""
    assert link_ids(shop) == []
    # With its links gone, the node can go too.
    assert shop.delete("Nodes", "deleteNodes", node_ids="n1,n2").status_code == 204


def test_create_stores_date_and_click_to_call_and_ignores_extra_elements(
    shop: ApiClient, server: RunningServer
) -> None:
    body = (
        "<link><node_id>n1</node_id><link_id>l1</link_id><link_name>A</link_name>"
        "<link_type>web</link_type><link_date>2008-11-19 14:10:46</link_date>"
        "<click_to_call>TRUE</click_to_call><categories/></link>"
        "<link><node_id>n1</node_id><link_id>l2</link_id><link_name>B</link_name>"
        "<link_date>2009-01-02</link_date><click_to_call>false</click_to_call>"
        "<categories><category/></categories></link>"
    )
    r = create(shop, body)
    assert r.status_code == 201, r.text
    l1, l2 = stored(server, "l1"), stored(server, "l2")
    assert (l1.link_date, l1.click_to_call) == (datetime(2008, 11, 19, 14, 10, 46), True)
    assert (l2.link_date, l2.click_to_call, l2.link_type) == (datetime(2009, 1, 2), False, "")


def test_create_without_date_uses_now_and_click_to_call_defaults_to_on(
    shop: ApiClient, server: RunningServer
) -> None:
    before = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    assert create(shop, link("n1", "l1")).status_code == 201
    row = stored(server, "l1")
    assert row.click_to_call is True
    assert before <= row.link_date <= datetime.now(UTC).replace(tzinfo=None)


def test_same_link_name_on_different_nodes_is_fine(shop: ApiClient) -> None:
    r = create(shop, link("n1", "l1", "Mag"), link("n2", "l2", "Mag"))
    assert r.status_code == 201, r.text
    assert link_ids(shop) == ["l1", "l2"]


# ------------------------------------------------------------------ createLinks errors


def test_create_errors_are_numbered_and_nothing_is_half_written(shop: ApiClient) -> None:
    assert create(shop, link("n1", "l1", "Mag")).status_code == 201
    r = create(
        shop,
        link("n1", "ok"),  # valid, but must not be written
        link("n1", ""),
        link("n1", "l1"),
        link("n9", "l4"),
        link("", "l5"),
        link("n1", "l6", "Mag"),
    )
    assert r.status_code == 400
    assert errors_of(r) == [
        "Link ID 2 of 6 Empty",
        "Link ID 3 of 6 already exists",
        "Node ID 4 of 6 does not exist",
        "Node ID 5 of 6 Empty",
        "Link Name Mag is already attached to Node n1",
    ]
    assert link_ids(shop) == ["l1"]


def test_create_rejects_duplicates_within_one_request(shop: ApiClient) -> None:
    r = create(shop, link("n1", "l1", "A"), link("n2", "l1", "B"), link("n1", "l3", "A"))
    assert r.status_code == 400
    assert errors_of(r) == [
        "Link ID 2 of 3 already exists",
        "Link Name A is already attached to Node n1",
    ]
    assert link_ids(shop) == []


def test_create_rejects_bad_click_to_call_and_date(shop: ApiClient) -> None:
    r = create(
        shop,
        link("n1", "l1", click_to_call="yes"),
        link("n1", "l2", link_date="19/11/2008"),
        link("n1", "l3", click_to_call="2", link_date="2008-13-01 00:00:00"),
    )
    assert r.status_code == 400
    assert errors_of(r) == [
        "Click To Call 1 of 3 Invalid",
        "Link Date 2 of 3 Invalid",
        "Click To Call 3 of 3 Invalid",
        "Link Date 3 of 3 Invalid",
    ]
    assert link_ids(shop) == []


def test_create_rejects_too_long_values_without_a_server_error(shop: ApiClient) -> None:
    r = create(
        shop,
        link("n1", "x" * 65),
        link("n1", "l2", "n" * 256),
        link("n1", "l3", link_type="t" * 65),
    )
    assert r.status_code == 400, r.text
    assert errors_of(r) == [
        "Link ID 1 of 3 too long",
        "Link Name 2 of 3 too long",
        "Link Type 3 of 3 too long",
    ]
    # At the limits exactly, everything fits.
    r = create(shop, link("n1", "x" * 64, "n" * 255, link_type="t" * 64))
    assert r.status_code == 201, r.text


def test_create_links_needs_link_items(shop: ApiClient) -> None:
    r = shop.post("Links", "createLinks", wrap("<node><node_id>n1</node_id></node>"))
    assert r.status_code == 400
    assert errors_of(r) == ["Request Empty"]


# ------------------------------------------------------------------ updateLinks


def test_update_changes_only_the_fields_given(shop: ApiClient, server: RunningServer) -> None:
    assert create(shop, link("n1", "l1", "Mag", link_type="print")).status_code == 201
    r = shop.put(
        "Links",
        "updateLinks",
        wrap("<link><link_id>l1</link_id><link_date>2010-05-06 07:08:09</link_date></link>"),
    )
    assert r.status_code == 204, r.text
    row = stored(server, "l1")
    assert (row.link_name, row.link_type, row.click_to_call) == ("Mag", "print", True)
    assert row.link_date == datetime(2010, 5, 6, 7, 8, 9)


def test_update_errors_roll_back_every_item(shop: ApiClient, server: RunningServer) -> None:
    assert create(shop, link("n1", "l1", "A"), link("n1", "l2", "B")).status_code == 201
    r = shop.put(
        "Links",
        "updateLinks",
        wrap(
            "<link><link_id>l1</link_id><link_name>Changed</link_name>"
            "<new_link_id>l1x</new_link_id></link>",
            "<link><link_id/><link_name>X</link_name></link>",
            "<link><link_id>nope</link_id></link>",
            "<link><link_id>l2</link_id><new_link_id>l1x</new_link_id></link>",
            "<link><link_id>l2</link_id><link_name/></link>",
        ),
    )
    assert r.status_code == 400
    assert errors_of(r) == [
        "Link ID 2 of 5 Empty",
        "Link ID 3 of 5 does not exist",
        "New Link ID 4 of 5 already exist",
        "Link Name 5 of 5 Empty",
    ]
    # Item 1 was valid and ran inside the transaction, but nothing of it was kept.
    assert link_ids(shop) == ["l1", "l2"]
    assert stored(server, "l1").link_name == "A"


def test_update_rejects_an_existing_new_link_id(shop: ApiClient) -> None:
    assert create(shop, link("n1", "l1"), link("n1", "l2")).status_code == 201
    r = shop.put(
        "Links",
        "updateLinks",
        wrap("<link><link_id>l1</link_id><new_link_id>l2</new_link_id></link>"),
    )
    assert r.status_code == 400
    assert errors_of(r) == ["New Link ID 1 of 1 already exist"]


def test_update_rejects_invalid_values(shop: ApiClient) -> None:
    assert create(shop, link("n1", "l1", "A"), link("n1", "l2", "B")).status_code == 201
    r = shop.put(
        "Links",
        "updateLinks",
        wrap(
            "<link><link_id>l1</link_id><click_to_call>maybe</click_to_call>"
            "<link_date>tomorrow</link_date></link>",
            f"<link><link_id>l1</link_id><new_link_id>{'x' * 65}</new_link_id>"
            f"<link_name>{'n' * 256}</link_name><link_type>{'t' * 65}</link_type></link>",
            "<link><link_id>l2</link_id><link_name>A</link_name></link>",
        ),
    )
    assert r.status_code == 400, r.text
    assert errors_of(r) == [
        "Click To Call 1 of 3 Invalid",
        "Link Date 1 of 3 Invalid",
        "New Link ID 2 of 3 too long",
        "Link Name 2 of 3 too long",
        "Link Type 2 of 3 too long",
        "Link Name A is already attached to Node n1",
    ]
    assert link_ids(shop) == ["l1", "l2"]


def test_update_may_keep_its_own_name_and_id(shop: ApiClient) -> None:
    assert create(shop, link("n1", "l1", "A")).status_code == 201
    r = shop.put(
        "Links",
        "updateLinks",
        wrap(
            "<link><link_id>l1</link_id><new_link_id>l1</new_link_id><link_name>A</link_name></link>"
        ),
    )
    assert r.status_code == 204, r.text


def test_update_items_apply_in_order(shop: ApiClient) -> None:
    """A later item sees an earlier item's change: a freed id can be taken in the same request."""
    assert create(shop, link("n1", "l1"), link("n1", "l2")).status_code == 201
    r = shop.put(
        "Links",
        "updateLinks",
        wrap(
            "<link><link_id>l1</link_id><new_link_id>l3</new_link_id></link>",
            "<link><link_id>l2</link_id><new_link_id>l1</new_link_id></link>",
        ),
    )
    assert r.status_code == 204, r.text
    assert sorted(link_ids(shop)) == ["l1", "l3"]


# ------------------------------------------------------------------ deleteLinks


def test_delete_errors_and_nothing_is_deleted(shop: ApiClient) -> None:
    assert create(shop, link("n1", "l1"), link("n1", "l2")).status_code == 201
    r = shop.delete("Links", "deleteLinks", link_ids="l1,,nope")
    assert r.status_code == 400
    assert errors_of(r) == ["Link ID 2 of 3 Empty", "Link ID 3 of 3 does not exist"]
    assert link_ids(shop) == ["l1", "l2"]


@pytest.mark.parametrize("params", [{}, {"link_ids": ""}])
def test_delete_needs_link_ids(shop: ApiClient, params: dict[str, str]) -> None:
    r = shop.delete("Links", "deleteLinks", **params)
    assert r.status_code == 400
    assert errors_of(r) == ["Link IDs Empty"]


def test_delete_wrong_verb(shop: ApiClient) -> None:
    r = shop.get("Links", "deleteLinks", link_ids="l1")
    assert r.status_code == 400
    assert errors_of(r) == ["Request Method must be DELETE. GET attempted"]


# ------------------------------------------------------------------ getLinks


@pytest.fixture
def catalogue(shop: ApiClient) -> ApiClient:
    r = create(
        shop,
        link("n1", "l1", "Banana", link_type="web"),
        link("n1", "l2", "Apple", link_type="print"),
        link("n2", "l3", "Cherry", link_type="web", click_to_call="0"),
    )
    assert r.status_code == 201, r.text
    return shop


def test_get_links_filters(catalogue: ApiClient) -> None:
    assert link_ids(catalogue, node_id="n1") == ["l1", "l2"]
    assert link_ids(catalogue, node_type="office") == ["l3"]
    assert link_ids(catalogue, link_id="l2") == ["l2"]
    assert link_ids(catalogue, link_type="web") == ["l1", "l3"]
    assert link_ids(catalogue, node_id="n1", link_type="web") == ["l1"]
    assert link_ids(catalogue, link_type="none") == []


def test_get_links_unknown_node(catalogue: ApiClient) -> None:
    r = catalogue.get("Links", "getLinks", node_id="n9")
    assert r.status_code == 400
    assert errors_of(r) == ["Node ID does not exist"]


def test_get_links_paging(catalogue: ApiClient) -> None:
    r = catalogue.get("Links", "getLinks", limit=2, page=2)
    root = xml_of(r)
    assert (root.findtext("current_page"), root.findtext("total_pages")) == ("2", "2")
    assert root.findtext("total_results") == "3"
    assert [row["link_id"] for row in rows_of(r)] == ["l3"]
    r = catalogue.get("Links", "getLinks", limit=0)
    assert errors_of(r) == ["Limit must be between 1 and 20000"]
    r = catalogue.get("Links", "getLinks", page="x")
    assert errors_of(r) == ["Page Number not an integer"]


def test_get_links_req_fields_and_order(catalogue: ApiClient) -> None:
    r = catalogue.get("Links", "getLinks", req_fields="ln,lid,ctc", order="ln_ASC")
    assert rows_of(r) == [
        {"link_name": "Apple", "link_id": "l2", "click_to_call": "1"},
        {"link_name": "Banana", "link_id": "l1", "click_to_call": "1"},
        {"link_name": "Cherry", "link_id": "l3", "click_to_call": "0"},
    ]
    # The fields come out in the order req_fields asks for them.
    first = xml_of(r).find("results/result")
    assert first is not None
    assert [c.tag for c in first] == ["link_name", "link_id", "click_to_call"]
    r = catalogue.get("Links", "getLinks", req_fields="nid,nn,nt,lt,vn,rn", order="nid_DESC")
    rows = rows_of(r)
    assert [(row["node_id"], row["link_type"]) for row in rows] == [
        ("n2", "web"),
        ("n1", "web"),
        ("n1", "print"),
    ]
    assert set(rows[0]) == {
        "node_id",
        "node_name",
        "node_type",
        "link_type",
        "voxnumber",
        "rule_name",
    }
    assert errors_of(catalogue.get("Links", "getLinks", req_fields="lid,zz")) == [
        "Required Fields Invalid: zz"
    ]
    assert errors_of(catalogue.get("Links", "getLinks", order="zz_ASC")) == ["Order Field Invalid"]
    assert errors_of(catalogue.get("Links", "getLinks", order="ln_UP")) == [
        "Order Direction Invalid"
    ]


def test_get_links_shows_the_attached_rule_template(
    catalogue: ApiClient, server: RunningServer
) -> None:
    now = datetime(2024, 1, 1)
    with server.db.write() as conn:
        account_id = conn.execute(
            select(t.accounts.c.id).where(t.accounts.c.username == catalogue.username)
        ).scalar_one()
        flow_pk = conn.execute(
            t.call_flows.insert().values(
                account_id=account_id,
                name="Call Agent",
                xml="<callFlow/>",
                created_at=now,
                updated_at=now,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        conn.execute(
            t.links.update()
            .where(t.links.c.link_id == "l2")
            .values(call_flow_pk=flow_pk, voxnumber="442071234567")
        )
    rows = rows_of(catalogue.get("Links", "getLinks", req_fields="lid,vn,rn"))
    assert rows == [
        {"link_id": "l1", "voxnumber": "", "rule_name": ""},
        {"link_id": "l2", "voxnumber": "442071234567", "rule_name": "Call Agent"},
        {"link_id": "l3", "voxnumber": "", "rule_name": ""},
    ]


def test_get_links_empty_is_an_empty_results_element(shop: ApiClient) -> None:
    r = shop.get("Links", "getLinks")
    assert r.status_code == 200
    assert b"<results/>" in r.content
    assert xml_of(r).findtext("total_results") == "0"


# ------------------------------------------------------------------ JSON


def test_get_links_json(catalogue: ApiClient) -> None:
    r = catalogue.get("Links", "getLinks", output="JSON", link_id="l3")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert json.loads(r.content) == {
        "response": {
            "current_page": "1",
            "total_pages": "1",
            "total_results": "1",
            "results": {
                "result": {
                    "node_id": "n2",
                    "node_name": "Office",
                    "node_type": "office",
                    "link_id": "l3",
                    "link_name": "Cherry",
                    "link_type": "web",
                    "click_to_call": "0",
                    "voxnumber": "",
                    "rule_name": "",
                }
            },
        }
    }
    many = json.loads(catalogue.get("Links", "getLinks", output="JSON").content)
    result = many["response"]["results"]["result"]
    assert isinstance(result, list) and len(result) == 3
    assert all(isinstance(v, str) for row in result for v in row.values())
    empty = json.loads(catalogue.get("Links", "getLinks", output="json", link_id="zz").content)
    assert empty["response"]["results"] == ""
    assert empty["response"]["total_results"] == "0"


def test_errors_in_json(shop: ApiClient) -> None:
    r = shop.get("Links", "getLinks", output="JSON", node_id="n9")
    assert r.status_code == 400
    assert json.loads(r.content) == {
        "errors": {"error": {"@status": "400", "#text": "Node ID does not exist"}}
    }


# ------------------------------------------------------------------ account isolation


def test_other_account_cannot_see_or_change_links(
    catalogue: ApiClient, api_b: ApiClient, server: RunningServer
) -> None:
    assert rows_of(api_b.get("Links", "getLinks")) == []
    assert errors_of(api_b.get("Links", "getLinks", node_id="n1")) == ["Node ID does not exist"]
    assert link_ids(api_b, link_id="l1") == []

    r = api_b.put(
        "Links", "updateLinks", wrap("<link><link_id>l1</link_id><link_name>X</link_name></link>")
    )
    assert r.status_code == 400
    assert errors_of(r) == ["Link ID 1 of 1 does not exist"]

    r = api_b.delete("Links", "deleteLinks", link_ids="l1,l2")
    assert errors_of(r) == ["Link ID 1 of 2 does not exist", "Link ID 2 of 2 does not exist"]

    # B cannot hang a link on A's node.
    r = create(api_b, link("n1", "b1"))
    assert r.status_code == 400
    assert errors_of(r) == ["Node ID 1 of 1 does not exist"]

    # A's links are untouched.
    assert link_ids(catalogue) == ["l1", "l2", "l3"]
    assert stored(server, "l1").link_name == "Banana"


def test_link_ids_and_names_are_per_account(catalogue: ApiClient, api_b: ApiClient) -> None:
    make_nodes(api_b, ("n1", "B shop", "shop"))
    r = create(api_b, link("n1", "l1", "Banana"))
    assert r.status_code == 201, r.text
    rows = rows_of(api_b.get("Links", "getLinks"))
    assert [(r["node_name"], r["link_id"]) for r in rows] == [("B shop", "l1")]
    # B renaming its l1 does not collide with A's l2, and A's l1 stays as it was.
    r = api_b.put(
        "Links",
        "updateLinks",
        wrap("<link><link_id>l1</link_id><new_link_id>l2</new_link_id></link>"),
    )
    assert r.status_code == 204, r.text
    assert link_ids(catalogue) == ["l1", "l2", "l3"]
    assert api_b.delete("Links", "deleteLinks", link_ids="l2").status_code == 204
    assert link_ids(catalogue) == ["l1", "l2", "l3"]


def test_concurrent_creates_of_one_link_id_never_fail_with_500(shop: ApiClient) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tests.support import ApiClient as Client

    clients = [Client(str(shop.http.base_url), shop.username, shop.key) for _ in range(8)]
    try:
        with ThreadPoolExecutor(len(clients)) as pool:
            results = list(pool.map(lambda c: create(c, link("n1", "race")), clients))
    finally:
        for c in clients:
            c.close()
    codes = sorted(r.status_code for r in results)
    assert codes == [201] + [400] * (len(clients) - 1), [r.text for r in results]
    # Under READ COMMITTED one request may see the winner's row in one check and not yet in
    # an earlier one, so a loser reports either clash or both; never a server error.
    clashes = {
        "Link ID 1 of 1 already exists",
        "Link Name Name race is already attached to Node n1",
    }
    for r in results:
        if r.status_code == 400:
            assert errors_of(r) and set(errors_of(r)) <= clashes, r.text
    assert link_ids(shop) == ["race"]
