"""CallFlow: createCallFlow, getCallFlow, getCallFlows, updateCallFlow, deleteCallFlows."""

from __future__ import annotations

from copy import deepcopy

from lxml import etree
from sqlalchemy import Connection, select

from voxflow.api import paging
from voxflow.api.items import parse_flag
from voxflow.api.routing import Request, Result, route
from voxflow.clock import wire_time
from voxflow.domain.flow import FlowError, parse_flow
from voxflow.domain.flow_variables import carry_over
from voxflow.errors import REQUEST_EMPTY, ApiError, ErrorList
from voxflow.services.flows import (
    canonical_xml,
    checks_for,
    dump_values,
    find_flow,
    load_values,
)
from voxflow.store import tables as t

FLOW_DOES_NOT_EXIST = "Call Flow Doesn't exist"
NAME_EMPTY = "CallFlow Name Empty"
NAME_EXISTS = "CallFlow Name already exists"
FLOW_COLUMNS = paging.Columns(
    [("cfn", "call_flow_name"), ("no", "notes"), ("cr", "created"), ("up", "updated")]
)


def _flow_element(req: Request) -> etree._Element:
    el = req.body.find("callFlow") if req.body is not None else None
    if el is None:
        raise ApiError(REQUEST_EMPTY)
    return el


def _validated(conn: Connection, req: Request, el: etree._Element, name: str) -> str:
    """Validate a flow element and return the XML text to store (with ``name`` set)."""
    try:
        parse_flow(el, checks_for(conn, req.account.id), name=name)
    except FlowError as exc:
        raise ApiError(*exc.problems) from None
    stored = deepcopy(el)
    stored.attrib.pop("newName", None)
    stored.set("name", name.strip())
    return canonical_xml(stored)


@route("CallFlow", "createCallFlow", "POST")
def create_call_flow(req: Request) -> Result:
    el = _flow_element(req)
    name = str(el.get("name", "")).strip()
    now = req.clock.now()
    with req.db.write() as conn:
        xml = _validated(conn, req, el, name)
        if find_flow(conn, req.account.id, name) is not None:
            raise ApiError(NAME_EXISTS)
        conn.execute(
            t.call_flows.insert().values(
                account_id=req.account.id,
                name=name,
                notes=str(el.get("notes", "")),
                xml=xml,
                created_at=now,
                updated_at=now,
            )
        )
    return Result(201, {"call_flow_name": name})


@route("CallFlow", "getCallFlow", "GET")
def get_call_flow(req: Request) -> Result:
    name = req.query.get("call_flow", "").strip()
    if not name:
        raise ApiError(NAME_EMPTY)
    with req.db.read() as conn:
        flow = find_flow(conn, req.account.id, name)
    if flow is None:
        raise ApiError(FLOW_DOES_NOT_EXIST)
    return Result(200, flow.element())


@route("CallFlow", "getCallFlows", "GET")
def get_call_flows(req: Request) -> Result:
    paging.page_params(req.query)
    q = (
        select(t.call_flows)
        .where(t.call_flows.c.account_id == req.account.id)
        .order_by(t.call_flows.c.name)
    )
    with req.db.read() as conn:
        found = conn.execute(q).all()
    rows = [
        {
            "call_flow_name": r.name,
            "notes": r.notes,
            "created": wire_time(r.created_at),
            "updated": wire_time(r.updated_at),
        }
        for r in found
    ]
    return Result(200, paging.paged(req.query, rows, FLOW_COLUMNS))


@route("CallFlow", "updateCallFlow", "PUT")
def update_call_flow(req: Request) -> Result:
    el = _flow_element(req)
    name = str(el.get("name", "")).strip()
    if not name:
        raise ApiError(NAME_EMPTY)
    new_name = str(el.get("newName", "")).strip() or name
    with req.db.write() as conn:
        flow = find_flow(conn, req.account.id, name)
        if flow is None:
            raise ApiError(FLOW_DOES_NOT_EXIST)
        xml = _validated(conn, req, el, new_name)
        if new_name != name and find_flow(conn, req.account.id, new_name) is not None:
            raise ApiError(NAME_EXISTS)
        notes = el.get("notes")
        conn.execute(
            t.call_flows.update()
            .where(t.call_flows.c.id == flow.pk)
            .values(
                name=new_name,
                notes=str(notes) if notes is not None else flow.notes,
                xml=xml,
                updated_at=req.clock.now(),
            )
        )
        _carry_values_over(conn, flow.pk, etree.fromstring(xml))
    return Result.no_content()


def _carry_values_over(conn: Connection, flow_pk: int, flow: etree._Element) -> None:
    links = conn.execute(
        select(t.links.c.id, t.links.c.rule_values).where(t.links.c.call_flow_pk == flow_pk)
    ).all()
    for link in links:
        kept = carry_over(flow, load_values(link.rule_values))
        conn.execute(
            t.links.update().where(t.links.c.id == link.id).values(rule_values=dump_values(kept))
        )


@route("CallFlow", "deleteCallFlows", "DELETE")
def delete_call_flows(req: Request) -> Result:
    raw = req.query.get("call_flows", "")
    names = [n.strip() for n in raw.split("|")]
    if not raw.strip():
        raise ApiError("Call Flows Empty")
    detach = parse_flag(req.query.get("detach_from_links"), default=False)
    if detach is None:
        raise ApiError("Detach From Links Invalid")
    errs = ErrorList()
    with req.db.write() as conn:
        for i, name in enumerate(names, 1):
            flow = find_flow(conn, req.account.id, name) if name else None
            if flow is None:
                errs.add(f"Call Flow {i} of {len(names)} Doesn't exist")
                continue
            attached = conn.execute(
                select(t.links.c.id).where(t.links.c.call_flow_pk == flow.pk)
            ).first()
            if attached is not None and not detach:
                errs.add(f"Call Flow {name} is attached to Links")
                continue
            conn.execute(
                t.links.update()
                .where(t.links.c.call_flow_pk == flow.pk)
                .values(call_flow_pk=None, rule_values="{}")
            )
            conn.execute(t.call_flows.delete().where(t.call_flows.c.id == flow.pk))
        errs.raise_if_any()
    return Result.no_content()
