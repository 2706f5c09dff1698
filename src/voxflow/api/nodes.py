"""Nodes: createNodes, getNodes, updateNodes, deleteNodes."""

from __future__ import annotations

from sqlalchemy import func, select

from voxflow.api import paging
from voxflow.api.items import check_length, existing_ids, parse_date, request_items
from voxflow.api.routing import Request, Result, route
from voxflow.clock import wire_time
from voxflow.errors import ApiError, ErrorList
from voxflow.store import tables as t

NODE_COLUMNS = paging.Columns(
    [("nid", "node_id"), ("nn", "node_name"), ("nt", "node_type"), ("nd", "node_date")]
)
ID_MAX, NAME_MAX, TYPE_MAX = 64, 255, 64


@route("Nodes", "createNodes", "POST")
def create_nodes(req: Request) -> Result:
    nodes = request_items(req.body, "node")
    total = len(nodes)
    errs = ErrorList()
    rows = []
    seen: set[str] = set()
    with req.db.write() as conn:
        existing = set(
            conn.execute(
                select(t.nodes.c.node_id).where(
                    t.nodes.c.account_id == req.account.id,
                    t.nodes.c.node_id.in_([n.get("node_id", "") for n in nodes]),
                )
            ).scalars()
        )
        for i, node in enumerate(nodes, 1):
            node_id = node.get("node_id", "")
            if not node_id:
                errs.add(f"Node ID {i} of {total} Empty")
                continue
            if node_id in existing or node_id in seen:
                errs.add(f"Node ID {i} of {total} already exists")
                continue
            seen.add(node_id)
            ok = check_length(errs, "Node ID", node_id, ID_MAX, (i, total))
            ok &= check_length(errs, "Node Name", node.get("node_name", ""), NAME_MAX, (i, total))
            ok &= check_length(errs, "Node Type", node.get("node_type", ""), TYPE_MAX, (i, total))
            date = req.clock.now()
            if node.get("node_date"):
                parsed = parse_date(errs, "Node Date", node["node_date"], (i, total))
                ok &= parsed is not None
                date = parsed or date
            if ok:
                rows.append(
                    {
                        "account_id": req.account.id,
                        "node_id": node_id,
                        "node_name": node.get("node_name", ""),
                        "node_type": node.get("node_type", ""),
                        "node_date": date,
                    }
                )
        errs.raise_if_any()
        conn.execute(t.nodes.insert(), rows)
    return Result(201)


@route("Nodes", "getNodes", "GET")
def get_nodes(req: Request) -> Result:
    q = select(t.nodes).where(t.nodes.c.account_id == req.account.id).order_by(t.nodes.c.id)
    if req.query.get("node_id"):
        q = q.where(t.nodes.c.node_id == req.query["node_id"])
    if req.query.get("node_type"):
        q = q.where(t.nodes.c.node_type == req.query["node_type"])
    paging.page_params(req.query)
    with req.db.read() as conn:
        found = conn.execute(q).all()
    rows = [
        {
            "node_id": r.node_id,
            "node_name": r.node_name,
            "node_type": r.node_type,
            "node_date": wire_time(r.node_date),
        }
        for r in found
    ]
    return Result(200, paging.paged(req.query, rows, NODE_COLUMNS))


@route("Nodes", "updateNodes", "PUT")
def update_nodes(req: Request) -> Result:
    nodes = request_items(req.body, "node")
    total = len(nodes)
    errs = ErrorList()
    with req.db.write() as conn:
        for i, node in enumerate(nodes, 1):
            node_id = node.get("node_id", "")
            if not node_id:
                errs.add(f"Node ID {i} of {total} Empty")
                continue
            pk = conn.execute(
                select(t.nodes.c.id).where(
                    t.nodes.c.account_id == req.account.id, t.nodes.c.node_id == node_id
                )
            ).scalar()
            if pk is None:
                errs.add(f"Node ID {i} of {total} does not exist")
                continue
            values: dict[str, object] = {}
            new_id = node.get("new_node_id", "")
            if new_id and new_id != node_id:
                taken = conn.execute(
                    select(func.count()).where(
                        t.nodes.c.account_id == req.account.id, t.nodes.c.node_id == new_id
                    )
                ).scalar_one()
                if taken:
                    errs.add(f"New Node ID {i} of {total} already exist")
                    continue
                if check_length(errs, "New Node ID", new_id, ID_MAX, (i, total)):
                    values["node_id"] = new_id
            for field, label, limit in (
                ("node_name", "Node Name", NAME_MAX),
                ("node_type", "Node Type", TYPE_MAX),
            ):
                if field in node and check_length(errs, label, node[field], limit, (i, total)):
                    values[field] = node[field]
            if node.get("node_date"):
                parsed = parse_date(errs, "Node Date", node["node_date"], (i, total))
                if parsed is not None:
                    values["node_date"] = parsed
            if values:
                conn.execute(t.nodes.update().where(t.nodes.c.id == pk).values(**values))
        errs.raise_if_any()  # inside the transaction: any error rolls back every item
    return Result.no_content()


@route("Nodes", "deleteNodes", "DELETE")
def delete_nodes(req: Request) -> Result:
    ids = paging.id_list(req.query, "node_ids")
    if not ids or ids == [""]:
        raise ApiError("Node IDs Empty")
    errs = ErrorList()
    with req.db.write() as conn:
        # The checks of existing_ids and "has Links" are reported together in item order.
        found = existing_ids(
            conn, t.nodes, t.nodes.c.node_id, req.account.id, ids, label="Node ID", errs=ErrorList()
        )
        with_links = set(
            conn.execute(
                select(t.links.c.node_pk).where(t.links.c.node_pk.in_(list(found.values())))
            ).scalars()
        )
        for i, node_id in enumerate(ids, 1):
            if not node_id:
                errs.add(f"Node ID {i} of {len(ids)} Empty")
            elif node_id not in found:
                errs.add(f"Node ID {i} of {len(ids)} does not exist")
            elif found[node_id] in with_links:
                errs.add(f"Node ID {i} of {len(ids)} has Links")
        pks = list(found.values())
        errs.raise_if_any()
        conn.execute(t.nodes.delete().where(t.nodes.c.id.in_(pks)))
    return Result.no_content()
