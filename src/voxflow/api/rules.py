"""Rules: getRuleTemplates and getVariableRulesOfTemplate (blocked numbers and time templates
live in their own modules)."""

from __future__ import annotations

from typing import cast

from sqlalchemy import select

from voxflow.api import paging
from voxflow.api.routing import Request, Result, route
from voxflow.api.xmlcodec import Tree
from voxflow.clock import wire_time
from voxflow.domain.flow_variables import describe
from voxflow.errors import ApiError
from voxflow.services.flows import find_flow, load_values
from voxflow.store import tables as t

TEMPLATE_NAME_EMPTY = "Template Name Empty"
TEMPLATE_DOES_NOT_EXIST = "Template Name does not exist"
TEMPLATE_COLUMNS = paging.Columns(
    [
        ("tna", "template_name"),
        ("tno", "template_notes"),
        ("tt", "template_type"),
        ("c", "created"),
        ("a", "advanced"),
    ]
)
# voxflow ships no DEFAULT templates: every template is a call flow the account created.
TEMPLATE_TYPES = frozenset({"DEFAULT", "CUSTOM", "ALL"})


@route("Rules", "getRuleTemplates", "GET")
def get_rule_templates(req: Request) -> Result:
    template_type = req.query.get("template_type", "ALL").strip().upper() or "ALL"
    if template_type not in TEMPLATE_TYPES:
        raise ApiError("Template Type Invalid")
    paging.page_params(req.query)
    q = (
        select(t.call_flows)
        .where(t.call_flows.c.account_id == req.account.id)
        .order_by(t.call_flows.c.name)
    )
    if req.query.get("template_name", "").strip():
        q = q.where(t.call_flows.c.name == req.query["template_name"].strip())
    with req.db.read() as conn:
        found = conn.execute(q).all() if template_type != "DEFAULT" else []
    rows = [
        {
            "template_name": r.name,
            "template_notes": r.notes,
            "template_type": "CUSTOM",
            "created": wire_time(r.created_at),
            "advanced": "1",
        }
        for r in found
    ]
    return Result(200, paging.paged(req.query, rows, TEMPLATE_COLUMNS))


@route("Rules", "getVariableRulesOfTemplate", "GET")
def get_variable_rules_of_template(req: Request) -> Result:
    name = req.query.get("template_name", "").strip()
    if not name:
        raise ApiError(TEMPLATE_NAME_EMPTY)
    link_id = req.query.get("link_id", "").strip()
    with req.db.read() as conn:
        flow = find_flow(conn, req.account.id, name)
        if flow is None:
            raise ApiError(TEMPLATE_DOES_NOT_EXIST)
        values = None
        if link_id:
            link = conn.execute(
                select(t.links.c.call_flow_pk, t.links.c.rule_values).where(
                    t.links.c.account_id == req.account.id, t.links.c.link_id == link_id
                )
            ).first()
            if link is None:
                raise ApiError("Link ID Doesn't exist")
            values = load_values(link.rule_values) if link.call_flow_pk == flow.pk else {}
    rows = describe(flow.element(), values)
    return Result(200, {"rules": {"rule": cast(list[Tree], rows)}})
