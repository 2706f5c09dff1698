from __future__ import annotations

from tests.support import ApiClient, errors_of, rows_of, wrap


def node(node_id: str, name: str = "Shop", node_type: str = "shop") -> str:
    return (
        f"<node><node_id>{node_id}</node_id><node_name>{name}</node_name>"
        f"<node_type>{node_type}</node_type></node>"
    )


def test_create_get_update_delete_nodes(api: ApiClient) -> None:
    r = api.post("Nodes", "createNodes", wrap(node("n1"), node("n2", "Other", "office")))
    assert r.status_code == 201, r.text
    rows = rows_of(api.get("Nodes", "getNodes"))
    assert [row["node_id"] for row in rows] == ["n1", "n2"]
    assert rows[1]["node_type"] == "office"

    r = api.put(
        "Nodes",
        "updateNodes",
        wrap("<node><node_id>n1</node_id><node_name>Main</node_name></node>"),
    )
    assert r.status_code == 204 and r.content == b""
    rows = rows_of(api.get("Nodes", "getNodes", node_id="n1"))
    assert rows == [
        {
            "node_id": "n1",
            "node_name": "Main",
            "node_type": "shop",
            "node_date": rows[0]["node_date"],
        }
    ]

    assert api.delete("Nodes", "deleteNodes", node_ids="n1,n2").status_code == 204
    assert rows_of(api.get("Nodes", "getNodes")) == []


def test_create_nodes_errors_are_numbered_and_nothing_is_half_written(api: ApiClient) -> None:
    assert api.post("Nodes", "createNodes", wrap(node("n1"))).status_code == 201
    r = api.post("Nodes", "createNodes", wrap(node("n9"), "<node><node_id/></node>", node("n1")))
    assert r.status_code == 400
    assert errors_of(r) == ["Node ID 2 of 3 Empty", "Node ID 3 of 3 already exists"]
    assert [row["node_id"] for row in rows_of(api.get("Nodes", "getNodes"))] == ["n1"]


def test_other_account_cannot_see_or_change_nodes(api: ApiClient, api_b: ApiClient) -> None:
    assert api.post("Nodes", "createNodes", wrap(node("n1"))).status_code == 201
    assert rows_of(api_b.get("Nodes", "getNodes")) == []
    r = api_b.delete("Nodes", "deleteNodes", node_ids="n1")
    assert errors_of(r) == ["Node ID 1 of 1 does not exist"]
    # B may use the same id for its own node.
    assert api_b.post("Nodes", "createNodes", wrap(node("n1"))).status_code == 201


def test_documents_start_with_the_iovox_declaration(api: ApiClient) -> None:
    declaration = b'<?xml version="1.0" encoding="utf-8"?>\n'
    assert api.get("Nodes", "getNodes").content.startswith(declaration + b"<response>")
    assert api.get("Nodes", "getNodes", v="9").content.startswith(declaration + b"<errors>")


def test_delete_nodes_reports_every_problem_in_item_order(api: ApiClient) -> None:
    from tests.support import make_link

    make_link(api, "l1", "n1")
    assert api.post("Nodes", "createNodes", wrap(node("n2"))).status_code == 201
    r = api.delete("Nodes", "deleteNodes", node_ids="n1,,zz,n2")
    assert errors_of(r) == [
        "Node ID 1 of 4 has Links",
        "Node ID 2 of 4 Empty",
        "Node ID 3 of 4 does not exist",
    ]
    assert [row["node_id"] for row in rows_of(api.get("Nodes", "getNodes"))] == ["n1", "n2"]
