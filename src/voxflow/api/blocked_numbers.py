"""Rules: createBlockedNumbers, getBlockedNumbers, updateBlockedNumbers, deleteBlockedNumbers.

A blocked number is identified by ``number`` + ``in_or_out`` + ``operator``; its ``default``
(``BLOCK``/``ALLOW``) and its exceptions can be changed. Exceptions are stored as JSON text:
``[{"link_id": .., "action": .., "time_template": ..}]``. The decision itself lives in
:mod:`voxflow.domain.blocking`; :mod:`voxflow.services.blocked_numbers` loads an account's rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lxml import etree
from sqlalchemy import Connection, select

from voxflow import errors
from voxflow.api import paging, xmlcodec
from voxflow.api.routing import Request, Result, route
from voxflow.api.xmlcodec import Tree
from voxflow.domain import blocking
from voxflow.domain.blocking import BlockException
from voxflow.errors import ApiError, ErrorList
from voxflow.services.blocked_numbers import dump_exceptions, load_exceptions
from voxflow.store import tables as t

NUMBER_MAX = 32  # the column width; longer is no phone number or prefix anyway
LINK_ID_MAX = 64
TEMPLATE_MAX = 255
BLOCKED_NUMBERS_EMPTY = "Blocked Numbers Empty"
BLOCKED_COLUMNS = paging.Columns(
    [
        ("n", "number"),
        ("io", "in_or_out"),
        ("op", "operator"),
        ("d", "default"),
        ("ex", "exceptions"),
    ]
)

Key = tuple[str, str, str]  # number, in_or_out, operator


@dataclass(frozen=True)
class Position:
    index: int
    total: int

    def __str__(self) -> str:
        return f"{self.index} of {self.total}"


# ---------------------------------------------------------------- validation


def _check_key(errs: ErrorList, values: Mapping[str, str], pos: Position) -> Key | None:
    """``number``, ``in_or_out`` and ``operator`` of one item, upper-cased, or None."""
    number = values.get("number", "").upper()
    in_or_out = values.get("in_or_out", "").upper()
    operator = values.get("operator", "").upper()
    ok = True
    if not number:
        errs.add(f"Blocked Number {pos} Empty")
        ok = False
    elif len(number) > NUMBER_MAX or not blocking.valid_number(number):
        errs.add(f"Blocked Number {pos} Invalid")
        ok = False
    if in_or_out not in blocking.DIRECTIONS:
        errs.add(f"In Or Out {pos} Invalid")
        ok = False
    if operator not in blocking.OPERATORS:
        errs.add(f"Operator {pos} Invalid")
        ok = False
    return (number, in_or_out, operator) if ok else None


def _check_default(errs: ErrorList, value: str, pos: Position) -> str | None:
    action = value.upper() or blocking.BLOCK
    if action not in blocking.ACTIONS:
        errs.add(f"Default {pos} Invalid")
        return None
    return action


def _check_exceptions(
    errs: ErrorList, item: etree._Element, pos: Position
) -> tuple[BlockException, ...] | None:
    """The ``<exceptions>`` of an item; None when absent or invalid (an error is then added)."""
    holder = item.find("exceptions")
    if holder is None:
        return None
    found: list[BlockException] = []
    problems: list[str] = []
    for el in xmlcodec.items(holder, "exception"):
        values = xmlcodec.fields(el)
        link_id = values.get("link_id", "")
        action = values.get("action", "").upper()
        template = values.get("time_template", "")
        if not link_id:
            problems.append(f"Exception Link ID {pos} Empty")
        elif len(link_id) > LINK_ID_MAX:
            problems.append(f"Exception Link ID {pos} too long")
        if action not in blocking.ACTIONS:
            problems.append(f"Exception Action {pos} Invalid")
        if len(template) > TEMPLATE_MAX:
            problems.append(f"Exception Time Template {pos} too long")
        found.append(BlockException(link_id, action, template))
    for message in dict.fromkeys(problems):  # each message once per item, in order
        errs.add(message)
    return tuple(found) if not problems else None


def _items(body: etree._Element | None) -> list[etree._Element]:
    found = xmlcodec.items(body, "blocked_number") if body is not None else []
    if not found:
        raise ApiError(errors.REQUEST_EMPTY)
    return found


def _find(conn: Connection, account_id: int, key: Key) -> int | None:
    bn = t.blocked_numbers
    pk: int | None = conn.execute(
        select(bn.c.id).where(
            bn.c.account_id == account_id,
            bn.c.number == key[0],
            bn.c.in_or_out == key[1],
            bn.c.operator == key[2],
        )
    ).scalar()
    return pk


# ---------------------------------------------------------------- handlers


@route("Rules", "createBlockedNumbers", "POST")
def create_blocked_numbers(req: Request) -> Result:
    items = _items(req.body)
    errs = ErrorList()
    rows: list[dict[str, object]] = []
    seen: set[Key] = set()
    with req.db.write() as conn:
        for i, item in enumerate(items, 1):
            pos = Position(i, len(items))
            values = xmlcodec.fields(item)
            key = _check_key(errs, values, pos)
            default = _check_default(errs, values.get("default", ""), pos)
            exceptions = _check_exceptions(errs, item, pos)
            invalid_exceptions = item.find("exceptions") is not None and exceptions is None
            if key is not None and (key in seen or _find(conn, req.account.id, key) is not None):
                errs.add(f"Blocked Number {pos} already exists")
                continue
            if key is None or default is None or invalid_exceptions:
                continue
            seen.add(key)
            rows.append(_row(req.account.id, key, default, exceptions or ()))
        errs.raise_if_any()
        conn.execute(t.blocked_numbers.insert(), rows)
    return Result(201)


def _row(
    account_id: int, key: Key, default: str, exceptions: Sequence[BlockException]
) -> dict[str, object]:
    return {
        "account_id": account_id,
        "number": key[0],
        "in_or_out": key[1],
        "operator": key[2],
        "default_action": default,
        "exceptions": dump_exceptions(exceptions),
    }


@route("Rules", "getBlockedNumbers", "GET")
def get_blocked_numbers(req: Request) -> Result:
    bn = t.blocked_numbers
    q = select(bn).where(bn.c.account_id == req.account.id).order_by(bn.c.id)
    if req.query.get("number"):
        q = q.where(bn.c.number == req.query["number"].strip().upper())
    if req.query.get("in_or_out"):
        q = q.where(bn.c.in_or_out == req.query["in_or_out"].strip().upper())
    paging.page_params(req.query)
    with req.db.read() as conn:
        found = conn.execute(q).all()
    rows = [
        {
            "number": r.number,
            "in_or_out": r.in_or_out,
            "operator": r.operator,
            "default": r.default_action,
            "exceptions": _exceptions_tree(load_exceptions(r.exceptions)),
        }
        for r in found
    ]
    return Result(200, paging.paged(req.query, rows, BLOCKED_COLUMNS))


def _exceptions_tree(exceptions: Sequence[BlockException]) -> Tree:
    rows: list[Tree] = []
    for e in exceptions:
        row = {"link_id": e.link_id, "action": e.action}
        rows.append({**row, "time_template": e.time_template} if e.time_template else row)
    return {"exception": rows}


@route("Rules", "updateBlockedNumbers", "PUT")
def update_blocked_numbers(req: Request) -> Result:
    items = _items(req.body)
    errs = ErrorList()
    bn = t.blocked_numbers
    with req.db.write() as conn:
        for i, item in enumerate(items, 1):
            pos = Position(i, len(items))
            values = xmlcodec.fields(item)
            key = _check_key(errs, values, pos)
            pk = _find(conn, req.account.id, key) if key is not None else None
            if key is not None and pk is None:
                errs.add(f"Blocked Number {pos} does not exist")
            change = _changes(errs, item, values, pos)
            if pk is not None and change:
                conn.execute(bn.update().where(bn.c.id == pk).values(**change))
        errs.raise_if_any()  # inside the transaction: any error rolls back every item
    return Result.no_content()


def _changes(
    errs: ErrorList, item: etree._Element, values: Mapping[str, str], pos: Position
) -> dict[str, str]:
    change: dict[str, str] = {}
    if values.get("default"):
        default = _check_default(errs, values["default"], pos)
        if default is not None:
            change["default_action"] = default
    exceptions = _check_exceptions(errs, item, pos)
    if exceptions is not None:
        change["exceptions"] = dump_exceptions(exceptions)
    return change


@route("Rules", "deleteBlockedNumbers", "DELETE")
def delete_blocked_numbers(req: Request) -> Result:
    names = paging.id_list(req.query, "blocked_numbers")
    if not names or names == [""]:
        raise ApiError(BLOCKED_NUMBERS_EMPTY)
    errs = ErrorList()
    pks: list[int] = []
    with req.db.write() as conn:
        for i, name in enumerate(names, 1):
            pos = Position(i, len(names))
            parts = [p.strip() for p in name.split(";")]
            parts += [""] * (3 - len(parts))
            fields = {"number": parts[0], "in_or_out": parts[1], "operator": parts[2]}
            if len(parts) > 3:
                fields["operator"] = ";".join(parts[2:])  # reported as an invalid operator
            key = _check_key(errs, fields, pos)
            pk = _find(conn, req.account.id, key) if key is not None else None
            if key is not None and pk is None:
                errs.add(f"Blocked Number {pos} does not exist")
            if pk is not None:
                pks.append(pk)
        errs.raise_if_any()
        conn.execute(t.blocked_numbers.delete().where(t.blocked_numbers.c.id.in_(pks)))
    return Result.no_content()
