"""Validation helpers for the repeated items of create/update/delete requests.

iovox numbers item errors as ``<Thing> x of y ...``: item x (1-based) of the y items sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from lxml import etree
from sqlalchemy import Column, Connection, Table, select

from voxflow.api import xmlcodec
from voxflow.clock import parse_wire_time
from voxflow.errors import ApiError, ErrorList


def request_items(body: etree._Element | None, tag: str) -> list[dict[str, str]]:
    """The ``<tag>`` items of a request body as field dicts; none at all is ``Request Empty``."""
    from voxflow import errors

    if body is None:
        raise ApiError(errors.REQUEST_EMPTY)
    found = [xmlcodec.fields(el) for el in xmlcodec.items(body, tag)]
    if not found:
        raise ApiError(errors.REQUEST_EMPTY)
    return found


def check_length(
    errs: ErrorList, label: str, value: str, limit: int, position: tuple[int, int] | None = None
) -> bool:
    """Add ``<label> [x of y] too long`` when ``value`` is longer than the column holds."""
    if len(value) <= limit:
        return True
    where = f" {position[0]} of {position[1]}" if position else ""
    errs.add(f"{label}{where} too long")
    return False


def parse_date(
    errs: ErrorList, label: str, value: str, position: tuple[int, int]
) -> datetime | None:
    parsed = parse_wire_time(value)
    if parsed is None:
        errs.add(f"{label} {position[0]} of {position[1]} Invalid")
    return parsed


def parse_flag(value: str | None, default: bool) -> bool | None:
    """``1``/``0``/``TRUE``/``FALSE`` (any case); None when it is something else."""
    if value is None or value == "":
        return default
    upper = value.upper()
    if upper in ("1", "TRUE"):
        return True
    if upper in ("0", "FALSE"):
        return False
    return None


def duplicates(values: Sequence[str]) -> set[str]:
    seen: set[str] = set()
    dup: set[str] = set()
    for v in values:
        if v in seen:
            dup.add(v)
        seen.add(v)
    return dup


def existing_ids(
    conn: Connection,
    table: Table,
    id_column: Column[str],
    account_id: int,
    ids: Sequence[str],
    *,
    label: str,
    errs: ErrorList,
) -> dict[str, int]:
    """The primary keys of the account's rows with these public ids; the rest is numbered
    ``<label> x of y Empty`` or ``<label> x of y does not exist`` in ``errs``."""
    rows = conn.execute(
        select(id_column, table.c.id).where(
            table.c.account_id == account_id, id_column.in_(list(ids))
        )
    )
    found = {str(row[0]): int(row[1]) for row in rows}
    for i, value in enumerate(ids, 1):
        if not value:
            errs.add(f"{label} {i} of {len(ids)} Empty")
        elif value not in found:
            errs.add(f"{label} {i} of {len(ids)} does not exist")
    return found
