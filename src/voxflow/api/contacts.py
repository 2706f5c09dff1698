"""Contacts: createContacts, getContacts, updateContacts, deleteContacts.

A contact is a person or desk that a ``call`` rule can ring. The request shape and the error
strings follow Nodes and Links (voxflow decision: iovox does not document this interface).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from voxflow.api import paging
from voxflow.api.items import check_length, existing_ids, request_items
from voxflow.api.routing import Request, Result, route
from voxflow.errors import ApiError, ErrorList
from voxflow.store import tables as t

ID_MAX = 64
CONTACT_IDS_EMPTY = "Contact IDs Empty"
PHONE_RE = re.compile(r"\+?[0-9]+")

Position = tuple[int, int]


def _email(value: str) -> str | None:
    """Loose shape check: something@something, no whitespace."""
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in value):
        return None
    return value


def _phone(value: str) -> str | None:
    """Digits with an optional leading ``+``; spaces are dropped (the stored form has none)."""
    compact = value.replace(" ", "")
    return compact if PHONE_RE.fullmatch(compact) else None


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    limit: int | None  # None: a Text column
    abbr: str
    normalise: Callable[[str], str | None] | None = None


FIELDS = (
    Field("display_name", "Display Name", 255, "dn"),
    Field("first_name", "First Name", 255, "fn"),
    Field("last_name", "Last Name", 255, "ln"),
    Field("email", "Email", 255, "em", _email),
    Field("mobile_phone", "Mobile Phone", 64, "mp", _phone),
    Field("business_phone", "Business Phone", 64, "bp", _phone),
    Field("home_phone", "Home Phone", 64, "hp", _phone),
    Field("company", "Company", 255, "co"),
    Field("notes", "Notes", None, "no"),
)
CONTACT_COLUMNS = paging.Columns([("cid", "contact_id"), *((f.abbr, f.name) for f in FIELDS)])


def _field_values(errs: ErrorList, contact: Mapping[str, str], pos: Position) -> dict[str, str]:
    """The valid contact fields present in an item (an empty value clears a field)."""
    values: dict[str, str] = {}
    for f in FIELDS:
        if f.name not in contact:
            continue
        value = contact[f.name]
        if value and f.normalise is not None:
            normalised = f.normalise(value)
            if normalised is None:
                errs.add(f"{f.label} {pos[0]} of {pos[1]} Invalid")
                continue
            value = normalised
        if f.limit is None or check_length(errs, f.label, value, f.limit, pos):
            values[f.name] = value
    return values


def _contact_pk(conn: Connection, account_id: int, contact_id: str) -> int | None:
    pk: int | None = conn.execute(
        select(t.contacts.c.id).where(
            t.contacts.c.account_id == account_id, t.contacts.c.contact_id == contact_id
        )
    ).scalar()
    return pk


# ---------------------------------------------------------------- createContacts


def _new_contact(
    errs: ErrorList, taken: set[str], contact: Mapping[str, str], pos: Position
) -> dict[str, str] | None:
    before = len(errs.items)
    contact_id = contact.get("contact_id", "")
    if not contact_id:
        errs.add(f"Contact ID {pos[0]} of {pos[1]} Empty")
    elif contact_id in taken:
        errs.add(f"Contact ID {pos[0]} of {pos[1]} already exists")
    else:
        taken.add(contact_id)
        check_length(errs, "Contact ID", contact_id, ID_MAX, pos)
    values = _field_values(errs, contact, pos)
    if len(errs.items) > before:
        return None
    # Every row carries every field: an executemany needs the same keys in each row.
    return {"contact_id": contact_id, **{f.name: "" for f in FIELDS}, **values}


def _create(req: Request, contacts: Sequence[Mapping[str, str]]) -> None:
    total = len(contacts)
    errs = ErrorList()
    with req.db.write() as conn:
        taken = set(
            conn.execute(
                select(t.contacts.c.contact_id).where(
                    t.contacts.c.account_id == req.account.id,
                    t.contacts.c.contact_id.in_([c.get("contact_id", "") for c in contacts]),
                )
            ).scalars()
        )
        rows = [_new_contact(errs, taken, c, (i, total)) for i, c in enumerate(contacts, 1)]
        errs.raise_if_any()
        conn.execute(
            t.contacts.insert(),
            [{"account_id": req.account.id, **row} for row in rows if row is not None],
        )


@route("Contacts", "createContacts", "POST")
def create_contacts(req: Request) -> Result:
    contacts = request_items(req.body, "contact")
    _create(req, contacts)
    return Result(201)


# ---------------------------------------------------------------- getContacts


@route("Contacts", "getContacts", "GET")
def get_contacts(req: Request) -> Result:
    q = (
        select(t.contacts)
        .where(t.contacts.c.account_id == req.account.id)
        .order_by(t.contacts.c.id)
    )
    if req.query.get("contact_id"):
        q = q.where(t.contacts.c.contact_id == req.query["contact_id"])
    paging.page_params(req.query)
    with req.db.read() as conn:
        found = conn.execute(q).mappings().all()
    rows = [{name: str(r[name]) for _, name in CONTACT_COLUMNS.fields} for r in found]
    return Result(200, paging.paged(req.query, rows, CONTACT_COLUMNS))


# ---------------------------------------------------------------- updateContacts


def _new_contact_id(
    conn: Connection, account_id: int, contact: Mapping[str, str], errs: ErrorList, pos: Position
) -> dict[str, str]:
    new_id = contact.get("new_contact_id", "")
    if not new_id or new_id == contact["contact_id"]:
        return {}
    taken = conn.execute(
        select(func.count()).where(
            t.contacts.c.account_id == account_id, t.contacts.c.contact_id == new_id
        )
    ).scalar_one()
    if taken:
        errs.add(f"New Contact ID {pos[0]} of {pos[1]} already exist")
        return {}
    if not check_length(errs, "New Contact ID", new_id, ID_MAX, pos):
        return {}
    return {"contact_id": new_id}


def _update_one(
    conn: Connection, account_id: int, contact: Mapping[str, str], errs: ErrorList, pos: Position
) -> None:
    contact_id = contact.get("contact_id", "")
    if not contact_id:
        errs.add(f"Contact ID {pos[0]} of {pos[1]} Empty")
        return
    pk = _contact_pk(conn, account_id, contact_id)
    if pk is None:
        errs.add(f"Contact ID {pos[0]} of {pos[1]} does not exist")
        return
    values = _new_contact_id(conn, account_id, contact, errs, pos)
    values |= _field_values(errs, contact, pos)
    if values:
        conn.execute(t.contacts.update().where(t.contacts.c.id == pk).values(**values))


def _update(req: Request, contacts: Sequence[Mapping[str, str]]) -> None:
    errs = ErrorList()
    with req.db.write() as conn:
        for i, contact in enumerate(contacts, 1):
            _update_one(conn, req.account.id, contact, errs, (i, len(contacts)))
        errs.raise_if_any()  # inside the transaction: any error rolls back every item


@route("Contacts", "updateContacts", "PUT")
def update_contacts(req: Request) -> Result:
    contacts = request_items(req.body, "contact")
    _update(req, contacts)
    return Result.no_content()


# ---------------------------------------------------------------- deleteContacts


@route("Contacts", "deleteContacts", "DELETE")
def delete_contacts(req: Request) -> Result:
    ids = paging.id_list(req.query, "contact_ids")
    if not ids or ids == [""]:
        raise ApiError(CONTACT_IDS_EMPTY)
    errs = ErrorList()
    with req.db.write() as conn:
        found = existing_ids(
            conn,
            t.contacts,
            t.contacts.c.contact_id,
            req.account.id,
            ids,
            label="Contact ID",
            errs=errs,
        )
        errs.raise_if_any()
        conn.execute(t.contacts.delete().where(t.contacts.c.id.in_(list(found.values()))))
    return Result.no_content()
