"""Links: attachRuleTemplateToLinks and removeRuleTemplateFromLinks."""

from __future__ import annotations

from lxml import etree
from sqlalchemy import Connection, select

from voxflow.api import xmlcodec
from voxflow.api.items import existing_ids, parse_flag
from voxflow.api.routing import Request, Result, route
from voxflow.api.rules import TEMPLATE_DOES_NOT_EXIST, TEMPLATE_NAME_EMPTY
from voxflow.digits import ascii_digits
from voxflow.domain.dialstring import DialStringError, parse_dial_string
from voxflow.domain.flow import CALL_ALERTS, Checks, is_literal
from voxflow.domain.flow_variables import (
    LinkValues,
    parse_rules_variable,
    rule_elements,
    variable_fields,
)
from voxflow.domain.sounds import parse_sound_ref
from voxflow.errors import ApiError, ErrorList
from voxflow.services.flows import checks_for, dump_values, find_flow
from voxflow.store import tables as t


def _link_ids(body: etree._Element | None) -> list[str]:
    container = body.find("link_ids") if body is not None else None
    ids = (
        [(el.text or "").strip() for el in container if el.tag == "link_id"]
        if container is not None
        else []
    )
    if not ids:
        raise ApiError("Link IDs Empty")
    if len(set(ids)) != len(ids):
        raise ApiError("Duplicate Link ID Received")
    return ids


def _link_pks(conn: Connection, account_id: int, ids: list[str], errs: ErrorList) -> dict[str, int]:
    return existing_ids(
        conn, t.links, t.links.c.link_id, account_id, ids, label="Link ID", errs=errs
    )


def _check_value(name: str, value: str | list[str], checks: Checks, errs: ErrorList) -> None:
    if isinstance(value, list):
        for ref in value:
            parsed = parse_sound_ref(ref)
            if parsed is None or not checks.sound_exists(parsed):
                errs.add(f"Sound File {ref} does not exist")
        return
    if not is_literal(value):
        return
    if name == "contact_id" and not checks.contact_exists(value):
        errs.add(f"Contact ID {value} does not exist")
    elif name == "phone_number":
        try:
            parse_dial_string(value)
        except DialStringError:
            errs.add(f"Phone Number {value} Invalid")
    elif name == "send_call_alert" and value.upper() not in CALL_ALERTS:
        errs.add(f"Send Call Alert {value} Invalid")
    elif name == "record_call" and value.upper() not in ("TRUE", "FALSE"):
        errs.add(f"Record Call {value} Invalid")
    elif name == "timeout" and not (ascii_digits(value) and 1 <= int(value) <= 600):
        errs.add(f"Timeout {value} Invalid")


def _rule_values(
    flow: etree._Element, given: LinkValues, checks: Checks, errs: ErrorList
) -> LinkValues:
    """The values of ``rules_variable`` that apply to this flow, each checked."""
    fields_of = {str(r.get("id", "")): set(variable_fields(r)) for r in rule_elements(flow)}
    kept: LinkValues = {}
    for rule_id, values in given.items():
        if rule_id not in fields_of:
            errs.add(f"Rule ID {rule_id} does not exist in Template")
            continue
        applicable = {k: v for k, v in values.items() if k in fields_of[rule_id]}
        for name, value in applicable.items():
            _check_value(name, value, checks, errs)
        if applicable:
            kept[rule_id] = applicable
    return kept


@route("Links", "attachRuleTemplateToLinks", "PUT")
def attach_rule_template(req: Request) -> Result:
    body = req.body
    assert body is not None
    name = xmlcodec.text(body, "template_name") or ""
    if not name:
        raise ApiError(TEMPLATE_NAME_EMPTY)
    overwrite = parse_flag(xmlcodec.text(body, "overwrite_existing"), default=False)
    if overwrite is None:
        raise ApiError("Overwrite Existing Invalid")
    ids = _link_ids(body)
    errs = ErrorList()
    with req.db.write() as conn:
        flow = find_flow(conn, req.account.id, name)
        if flow is None:
            raise ApiError(TEMPLATE_DOES_NOT_EXIST)
        pks = _link_pks(conn, req.account.id, ids, errs)
        if not overwrite:
            attached = set(
                conn.execute(
                    select(t.links.c.link_id).where(
                        t.links.c.id.in_(pks.values()), t.links.c.call_flow_pk.is_not(None)
                    )
                ).scalars()
            )
            for i, link_id in enumerate(ids, 1):
                if link_id in attached:
                    errs.add(f"Link ID {i} of {len(ids)} already has a Rule Template")
        given = parse_rules_variable(body.find("rules_variable"))
        values = _rule_values(flow.element(), given, checks_for(conn, req.account.id), errs)
        errs.raise_if_any()
        conn.execute(
            t.links.update()
            .where(t.links.c.id.in_(pks.values()))
            .values(call_flow_pk=flow.pk, rule_values=dump_values(values))
        )
    return Result.no_content()


@route("Links", "removeRuleTemplateFromLinks", "PUT")
def remove_rule_template(req: Request) -> Result:
    ids = _link_ids(req.body)
    errs = ErrorList()
    with req.db.write() as conn:
        pks = _link_pks(conn, req.account.id, ids, errs)
        errs.raise_if_any()
        conn.execute(
            t.links.update()
            .where(t.links.c.id.in_(pks.values()))
            .values(call_flow_pk=None, rule_values="{}")
        )
    return Result.no_content()
