"""Links: createLinks, getLinks, updateLinks, deleteLinks.

Attaching and removing rule templates is ``link_templates``; this module keeps the links
themselves. Every create and update is validated item by item, all errors are returned at once,
and any error rolls the whole request back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, func, select

from voxflow.api import paging
from voxflow.api.items import check_length, existing_ids, parse_date, parse_flag, request_items
from voxflow.api.routing import Request, Result, route
from voxflow.errors import ApiError, ErrorList
from voxflow.store import tables as t

LINK_COLUMNS = paging.Columns(
    [
        ("nid", "node_id"),
        ("nn", "node_name"),
        ("nt", "node_type"),
        ("lid", "link_id"),
        ("ln", "link_name"),
        ("lt", "link_type"),
        ("ctc", "click_to_call"),  # voxflow decision: iovox gives click_to_call no abbreviation
        ("vn", "voxnumber"),
        ("rn", "rule_name"),
    ]
)
ID_MAX, NAME_MAX, TYPE_MAX = 64, 255, 64
NODE_NOT_FOUND = "Node ID does not exist"
LINK_IDS_EMPTY = "Link IDs Empty"

Position = tuple[int, int]


def _name_taken(name: str, node_id: str) -> str:
    return f"Link Name {name} is already attached to Node {node_id}"


def _optional_values(errs: ErrorList, link: Mapping[str, str], pos: Position) -> dict[str, object]:
    """The valid ``link_type``, ``click_to_call``, ``link_date`` and ``trunk`` the item carries.

    ``trunk`` is a voxflow extension: the name of the configured trunk this link's calls go
    through ("" for the default trunk).
    """
    values: dict[str, object] = {}
    if "trunk" in link and check_length(errs, "Trunk", link["trunk"], TYPE_MAX, pos):
        values["trunk"] = link["trunk"] or None
    if "link_type" in link and check_length(errs, "Link Type", link["link_type"], TYPE_MAX, pos):
        values["link_type"] = link["link_type"]
    if link.get("click_to_call"):
        flag = parse_flag(link["click_to_call"], True)
        if flag is None:
            errs.add(f"Click To Call {pos[0]} of {pos[1]} Invalid")
        else:
            values["click_to_call"] = flag
    if link.get("link_date"):
        parsed = parse_date(errs, "Link Date", link["link_date"], pos)
        if parsed is not None:
            values["link_date"] = parsed
    return values


# ---------------------------------------------------------------- createLinks


@dataclass
class _NewLinks:
    """What a createLinks request is checked against: the store plus the items before it."""

    account_id: int
    total: int
    now: datetime
    taken_ids: set[str]
    node_pks: dict[str, int]
    names: set[tuple[int, str]]
    errs: ErrorList = field(default_factory=ErrorList)

    @classmethod
    def load(
        cls, conn: Connection, account_id: int, links: Sequence[Mapping[str, str]], now: datetime
    ) -> _NewLinks:
        link_ids = [link.get("link_id", "") for link in links]
        taken = conn.execute(
            select(t.links.c.link_id).where(
                t.links.c.account_id == account_id, t.links.c.link_id.in_(link_ids)
            )
        ).scalars()
        nodes = conn.execute(
            select(t.nodes.c.node_id, t.nodes.c.id).where(
                t.nodes.c.account_id == account_id,
                t.nodes.c.node_id.in_([link.get("node_id", "") for link in links]),
            )
        ).all()
        node_pks = {r.node_id: r.id for r in nodes}
        names = conn.execute(
            select(t.links.c.node_pk, t.links.c.link_name).where(
                t.links.c.node_pk.in_(list(node_pks.values())),
                t.links.c.link_name.in_([link.get("link_name", "") for link in links]),
            )
        ).all()
        return cls(
            account_id=account_id,
            total=len(links),
            now=now,
            taken_ids=set(taken),
            node_pks=node_pks,
            names={(r.node_pk, r.link_name) for r in names},
        )

    def check_link_id(self, link_id: str, pos: Position) -> bool:
        if not link_id:
            self.errs.add(f"Link ID {pos[0]} of {pos[1]} Empty")
            return False
        if link_id in self.taken_ids:
            self.errs.add(f"Link ID {pos[0]} of {pos[1]} already exists")
            return False
        self.taken_ids.add(link_id)
        return check_length(self.errs, "Link ID", link_id, ID_MAX, pos)

    def check_node(self, node_id: str, pos: Position) -> int | None:
        if not node_id:
            self.errs.add(f"Node ID {pos[0]} of {pos[1]} Empty")
            return None
        pk = self.node_pks.get(node_id)
        if pk is None:
            self.errs.add(f"Node ID {pos[0]} of {pos[1]} does not exist")
        return pk

    def check_name(self, name: str, node_id: str, node_pk: int | None, pos: Position) -> bool:
        if not check_length(self.errs, "Link Name", name, NAME_MAX, pos):
            return False
        if not name or node_pk is None:
            return True  # voxflow decision: an empty name is allowed and never clashes
        if (node_pk, name) in self.names:
            self.errs.add(_name_taken(name, node_id))
            return False
        self.names.add((node_pk, name))
        return True

    def row(self, link: Mapping[str, str], pos: Position) -> dict[str, object] | None:
        """The row to insert for one item, or None when the item has errors."""
        before = len(self.errs.items)
        link_id, node_id = link.get("link_id", ""), link.get("node_id", "")
        self.check_link_id(link_id, pos)
        node_pk = self.check_node(node_id, pos)
        self.check_name(link.get("link_name", ""), node_id, node_pk, pos)
        values = _optional_values(self.errs, link, pos)
        if len(self.errs.items) > before or node_pk is None:
            return None
        return {
            "account_id": self.account_id,
            "node_pk": node_pk,
            "link_id": link_id,
            "link_name": link.get("link_name", ""),
            "link_type": "",
            "link_date": self.now,
            "click_to_call": True,
            **values,
        }


def _create(req: Request, links: Sequence[Mapping[str, str]]) -> None:
    with req.db.write() as conn:
        batch = _NewLinks.load(conn, req.account.id, links, req.clock.now())
        rows = [batch.row(link, (i, batch.total)) for i, link in enumerate(links, 1)]
        batch.errs.raise_if_any()
        conn.execute(t.links.insert(), [r for r in rows if r is not None])


@route("Links", "createLinks", "POST")
def create_links(req: Request) -> Result:
    links = request_items(req.body, "link")
    _create(req, links)
    return Result(201)


# ---------------------------------------------------------------- getLinks


def _link_rows(req: Request, conn: Connection) -> list[dict[str, str]]:
    query = req.query
    q = (
        select(
            t.nodes.c.node_id,
            t.nodes.c.node_name,
            t.nodes.c.node_type,
            t.links.c.link_id,
            t.links.c.link_name,
            t.links.c.link_type,
            t.links.c.click_to_call,
            t.links.c.voxnumber,
            t.call_flows.c.name.label("rule_name"),
        )
        .select_from(t.links)
        .join(t.nodes, t.nodes.c.id == t.links.c.node_pk)
        .outerjoin(t.call_flows, t.call_flows.c.id == t.links.c.call_flow_pk)
        .where(t.links.c.account_id == req.account.id)
        .order_by(t.links.c.id)
    )
    for param, column in (
        ("node_id", t.nodes.c.node_id),
        ("node_type", t.nodes.c.node_type),
        ("link_id", t.links.c.link_id),
        ("link_type", t.links.c.link_type),
    ):
        if query.get(param):
            q = q.where(column == query[param])
    return [
        {
            "node_id": r.node_id,
            "node_name": r.node_name,
            "node_type": r.node_type,
            "link_id": r.link_id,
            "link_name": r.link_name,
            "link_type": r.link_type,
            "click_to_call": "1" if r.click_to_call else "0",
            "voxnumber": r.voxnumber,
            "rule_name": r.rule_name or "",
        }
        for r in conn.execute(q)
    ]


@route("Links", "getLinks", "GET")
def get_links(req: Request) -> Result:
    paging.page_params(req.query)
    node_id = req.query.get("node_id")
    with req.db.read() as conn:
        if node_id:
            found = conn.execute(
                select(t.nodes.c.id).where(
                    t.nodes.c.account_id == req.account.id, t.nodes.c.node_id == node_id
                )
            ).scalar()
            if found is None:
                raise ApiError(NODE_NOT_FOUND)
        rows = _link_rows(req, conn)
    return Result(200, paging.paged(req.query, rows, LINK_COLUMNS))


# ---------------------------------------------------------------- updateLinks


def _new_link_id(
    conn: Connection, account_id: int, link: Mapping[str, str], errs: ErrorList, pos: Position
) -> dict[str, object]:
    new_id = link.get("new_link_id", "")
    if not new_id or new_id == link["link_id"]:
        return {}
    taken = conn.execute(
        select(func.count()).where(t.links.c.account_id == account_id, t.links.c.link_id == new_id)
    ).scalar_one()
    if taken:
        errs.add(f"New Link ID {pos[0]} of {pos[1]} already exist")
        return {}
    if not check_length(errs, "New Link ID", new_id, ID_MAX, pos):
        return {}
    return {"link_id": new_id}


@dataclass(frozen=True)
class _Current:
    pk: int
    node_pk: int
    node_id: str


def _new_link_name(
    conn: Connection, current: _Current, link: Mapping[str, str], errs: ErrorList, pos: Position
) -> dict[str, object]:
    if "link_name" not in link:
        return {}
    name = link["link_name"]
    if not name:
        errs.add(f"Link Name {pos[0]} of {pos[1]} Empty")
        return {}
    if not check_length(errs, "Link Name", name, NAME_MAX, pos):
        return {}
    clash = conn.execute(
        select(func.count()).where(
            t.links.c.node_pk == current.node_pk,
            t.links.c.link_name == name,
            t.links.c.id != current.pk,
        )
    ).scalar_one()
    if clash:
        errs.add(_name_taken(name, current.node_id))
        return {}
    return {"link_name": name}


def _update_one(
    conn: Connection, account_id: int, link: Mapping[str, str], errs: ErrorList, pos: Position
) -> None:
    link_id = link.get("link_id", "")
    if not link_id:
        errs.add(f"Link ID {pos[0]} of {pos[1]} Empty")
        return
    found = conn.execute(
        select(t.links.c.id, t.links.c.node_pk, t.nodes.c.node_id)
        .join(t.nodes, t.nodes.c.id == t.links.c.node_pk)
        .where(t.links.c.account_id == account_id, t.links.c.link_id == link_id)
    ).first()
    if found is None:
        errs.add(f"Link ID {pos[0]} of {pos[1]} does not exist")
        return
    current = _Current(found.id, found.node_pk, found.node_id)
    values = _new_link_id(conn, account_id, link, errs, pos)
    values |= _new_link_name(conn, current, link, errs, pos)
    values |= _optional_values(errs, link, pos)
    if values:
        conn.execute(t.links.update().where(t.links.c.id == current.pk).values(**values))


def _update(req: Request, links: Sequence[Mapping[str, str]]) -> None:
    errs = ErrorList()
    with req.db.write() as conn:
        for i, link in enumerate(links, 1):
            _update_one(conn, req.account.id, link, errs, (i, len(links)))
        errs.raise_if_any()  # inside the transaction: any error rolls back every item


@route("Links", "updateLinks", "PUT")
def update_links(req: Request) -> Result:
    links = request_items(req.body, "link")
    _update(req, links)
    return Result.no_content()


# ---------------------------------------------------------------- deleteLinks


@route("Links", "deleteLinks", "DELETE")
def delete_links(req: Request) -> Result:
    ids = paging.id_list(req.query, "link_ids")
    if not ids or ids == [""]:
        raise ApiError(LINK_IDS_EMPTY)
    errs = ErrorList()
    with req.db.write() as conn:
        found = existing_ids(
            conn, t.links, t.links.c.link_id, req.account.id, ids, label="Link ID", errs=errs
        )
        errs.raise_if_any()
        conn.execute(t.links.delete().where(t.links.c.id.in_(list(found.values()))))
    return Result.no_content()
