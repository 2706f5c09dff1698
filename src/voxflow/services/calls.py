"""Accepting a call: everything initiateCall checks, and the call row that is the durable job.

:func:`prepare_call` validates in a read transaction and freezes what placing the call needs
later: the flow with the link's values filled in, the call variables, the number, the keypress
plan and the due time. :func:`store_call` writes it. initiateCall runs both in one write
transaction (see ``api.calling``), so the checks see what the call is committed with. Nothing
is written unless every check passed. The statements run straight on the driver
(``store.raw``): they are on the path of every accepted call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from json.encoder import encode_basestring_ascii as _json_text
from typing import Any

from lxml import etree
from sqlalchemy import Connection, bindparam, func, select

from voxflow import ids
from voxflow.digits import ascii_digits
from voxflow.domain.blocking import blocked
from voxflow.domain.calls import MAX_DELAY_MINUTES, CallStatus
from voxflow.domain.dialstring import DialString, DialStringError, Keypress, parse_dial_string
from voxflow.domain.flow import call_variable_names
from voxflow.domain.flow_variables import resolve
from voxflow.errors import ApiError, ErrorList
from voxflow.services import callbacks, limits
from voxflow.services.accounts import Account
from voxflow.services.blocked_numbers import load_rules
from voxflow.services.flows import canonical_xml, load_values
from voxflow.store import tables as t
from voxflow.store.raw import RawStatement

LINK_ID_EMPTY = "Link ID Empty"
LINK_DOES_NOT_EXIST = "Link ID does not exist"
LINK_HAS_NO_RULES = "Link ID has no Calling Rules"
DESTINATION_INVALID = "Call Destination Invalid"
DELAY_INVALID = "Call Variable delay Invalid"
DESTINATION = "call_destination"
DELAY = "delay"

_LINK_WITH_FLOW = RawStatement(
    select(
        t.links.c.id,
        t.links.c.rule_values,
        t.links.c.trunk,
        t.nodes.c.node_id,
        t.call_flows.c.id.label("flow_pk"),
        t.call_flows.c.xml.label("flow_xml"),
        func.coalesce(t.links.c.status_callback_url, t.accounts.c.status_callback_url),
        t.account_limits.c.account_id.label("has_own_limits"),
        # Whether the account has blocked-number rules at all (most have none: no query then).
        select(t.blocked_numbers.c.id)
        .where(t.blocked_numbers.c.account_id == t.links.c.account_id)
        .exists()
        .label("has_block_rules"),
        *limits.OWN_COLUMNS,
    )
    .select_from(
        t.links.join(t.nodes, t.nodes.c.id == t.links.c.node_pk)
        .join(t.accounts, t.accounts.c.id == t.links.c.account_id)
        .outerjoin(t.call_flows, t.call_flows.c.id == t.links.c.call_flow_pk)
        .outerjoin(t.account_limits, t.account_limits.c.account_id == t.links.c.account_id)
    )
    .where(
        t.links.c.account_id == bindparam("account_id"), t.links.c.link_id == bindparam("link_id")
    )
)
_INSERT_CALL = RawStatement(t.calls.insert())
_INSERT_EVENT = RawStatement(t.call_events.insert())


def variable_empty(name: str) -> str:
    return f"Call Variable {name} Empty"


@dataclass(frozen=True)
class NewCall:
    """A validated call, ready to be stored: the values of its ``calls`` row."""

    row: dict[str, Any]
    delay_minutes: int
    callback_url: str | None = None  # the link's status callback URL, else the account's
    own_limits: dict[str, int | None] | None = None  # the account's, as read with the link

    @property
    def call_id(self) -> str:
        return str(self.row["call_id"])

    @property
    def due_at(self) -> datetime:
        due: datetime = self.row["due_at"]
        return due


def _delay(raw: str | None) -> tuple[int, tuple[str, ...]]:
    """The delay in minutes, and its error (none, or DELAY_INVALID)."""
    if raw is None or raw == "":
        return 0, ()
    if not ascii_digits(raw) or int(raw) > MAX_DELAY_MINUTES:
        return 0, (DELAY_INVALID,)
    return int(raw), ()


def _destination(variables: Mapping[str, str]) -> tuple[DialString | None, tuple[str, ...]]:
    """The parsed dial string, and its error (none, empty or invalid)."""
    raw = variables.get(DESTINATION, "")
    if not raw:
        return None, (variable_empty(DESTINATION),)
    try:
        return parse_dial_string(raw), ()
    except DialStringError:
        return None, (DESTINATION_INVALID,)


@dataclass  # not frozen: built for every request (see api.calling.Pending)
class CallRequest:
    """What initiateCall's variables say, read before any check that needs the database (in
    the API process: everything here is pure, so the writer does not spend its time on it)."""

    variables: dict[str, str]
    destination_errors: tuple[str, ...]  # reported first
    delay_errors: tuple[str, ...]  # reported after the flow's own variables
    number: str  # "" when the destination is in error
    keypresses: str  # the keypress plan, as stored (JSON)
    variables_json: str
    delay_minutes: int
    call_id: str
    created_at: datetime
    due_at: datetime

    @property
    def status(self) -> CallStatus:
        """The call's first status: scheduled when it has a delay, else queued."""
        return CallStatus.SCHEDULED if self.delay_minutes else CallStatus.QUEUED


def _keypress_plan(keypresses: tuple[Keypress, ...]) -> str:
    """``json.dumps([k.to_json() for k in keypresses])``, written directly (a key is one of
    KEYPRESSES: nothing to escape)."""
    return (
        "["
        + ", ".join(
            f'{{"key": "{k.key}", "pauses": {k.pauses}, "run_index": {k.run_index}}}'
            for k in keypresses
        )
        + "]"
    )


def _variables_json(variables: dict[str, str]) -> str:
    """``json.dumps(variables, sort_keys=True)`` of text values, written directly (json.dumps
    builds an encoder for every call)."""
    return (
        "{"
        + ", ".join([f"{_json_text(k)}: {_json_text(v)}" for k, v in sorted(variables.items())])
        + "}"
    )


def read_request(variables: dict[str, str], now: datetime) -> CallRequest:
    dial, destination_errors = _destination(variables)
    delay, delay_errors = _delay(variables.get(DELAY))
    return CallRequest(
        variables=variables,
        destination_errors=destination_errors,
        delay_errors=delay_errors,
        number=dial.number if dial is not None else "",
        keypresses=_keypress_plan(dial.keypresses) if dial else "[]",
        variables_json=_variables_json(variables),
        delay_minutes=delay,
        call_id=ids.uuid7(),
        created_at=now,
        due_at=now + timedelta(minutes=delay),
    )


@dataclass(frozen=True)
class ResolvedFlow:
    """A link's flow with the link's values filled in, and what initiateCall checks of it."""

    xml: str
    name: str
    unset: tuple[str, ...]  # "rule_id:field" of required fields the link leaves unset
    variables: tuple[str, ...]  # call variables the flow refers to, in order


@lru_cache(maxsize=1024)
def resolve_flow(template_xml: str, rule_values: str) -> ResolvedFlow:
    """Pure function of the stored texts, so it is cached: a link is called again and again."""
    flow, unset = resolve(etree.fromstring(template_xml.encode("utf-8")), load_values(rule_values))
    return ResolvedFlow(
        canonical_xml(flow),
        str(flow.get("name", "")),
        tuple(unset),
        tuple(call_variable_names(flow)),
    )


def prepare_call(conn: Connection, account: Account, link_id: str, request: CallRequest) -> NewCall:
    """Check an initiateCall against the store (reads only) and build its call row."""
    if not link_id:
        raise ApiError(LINK_ID_EMPTY)
    link = _LINK_WITH_FLOW.first(conn, {"account_id": account.id, "link_id": link_id})
    if link is None:
        raise ApiError(LINK_DOES_NOT_EXIST)
    link_pk, rule_values, trunk, node_id, flow_pk, flow_xml, callback_url, has_own = link[:8]
    has_block_rules = link[8]
    own_limits = limits.own_from(link[9:] if has_own is not None else None)
    if flow_pk is None:
        raise ApiError(LINK_HAS_NO_RULES)
    flow = resolve_flow(flow_xml, rule_values)
    errs = ErrorList()
    for message in request.destination_errors:
        errs.add(message)
    variables = request.variables
    for name in flow.variables:
        if name != DESTINATION and not variables.get(name):
            errs.add(variable_empty(name))
    for message in request.delay_errors:
        errs.add(message)
    for item in flow.unset:
        rule_id, _, field = item.partition(":")
        errs.add(f"Rule ID {rule_id} has no value for {field} on this Link")
    number = request.number
    if number and has_block_rules and blocked(load_rules(conn, account.id), number, "OUT", link_id):
        errs.add(f"Call Destination {number} is blocked")
    errs.raise_if_any()
    row = {
        "call_id": request.call_id,
        "account_id": account.id,
        "link_pk": link_pk,
        "link_id": link_id,
        "node_id": node_id,
        "call_flow_name": flow.name,
        "flow_xml": flow.xml,
        "rule_values": rule_values,
        "variables": request.variables_json,
        "destination": number,
        "dial_string": variables[DESTINATION],
        "keypresses": request.keypresses,
        "trunk": trunk,
        "status": request.status.value,
        "created_at": request.created_at,
        "due_at": request.due_at,
        "updated_at": request.created_at,
    }
    return NewCall(row, request.delay_minutes, callback_url, own_limits)


def first_event_detail(delay_minutes: int, due_at: str) -> str:
    """``json.dumps({"delay_minutes": ..., "due_at": ...})``, written directly (a time's text
    has nothing to escape)."""
    return f'{{"delay_minutes": {delay_minutes}, "due_at": "{due_at}"}}'


def store_call(conn: Connection, call: NewCall) -> None:
    """Insert the call row, its first event and its status callback (in the caller's write
    transaction)."""
    call_pk = _INSERT_CALL.inserted_id(conn, call.row)
    due_at = call.due_at.isoformat(sep=" ")
    _INSERT_EVENT.insert(
        conn,
        {
            "call_pk": call_pk,
            "at": call.row["created_at"],
            "kind": call.row["status"],
            "detail": first_event_detail(call.delay_minutes, due_at),
        },
    )
    if call.callback_url is None:
        return  # no status callback to queue
    detail = {"delay_minutes": call.delay_minutes, "due_at": due_at}
    target = callbacks.Target(
        call_pk,
        call.call_id,
        call.row["link_id"],
        call.row["destination"],
        0,
        None,
        call.callback_url,
    )
    # Its first status: there is no previous one.
    callbacks.enqueue_target(
        conn, target, call.row["status"], call.row["created_at"], detail, previous=None
    )
