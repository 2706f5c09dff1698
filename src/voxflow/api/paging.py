"""Paged reads: ``page``, ``limit``, ``req_fields`` and ``order`` for every get method."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from voxflow import errors
from voxflow.api.xmlcodec import Tree
from voxflow.digits import ascii_digits
from voxflow.errors import ApiError

MAX_LIMIT = 20000

# A row's fields are strings, or trees for nested fields (sorting sees those as "").
Row = Mapping[str, Tree]


@dataclass(frozen=True)
class Columns:
    """A read's row fields in output order, each with its ``req_fields`` abbreviation."""

    fields: Sequence[tuple[str, str]]  # (abbreviation, field name)

    def by_abbr(self) -> dict[str, str]:
        return {abbr: name for abbr, name in self.fields}


def _int_param(query: Mapping[str, str], name: str, default: int, message: str) -> int:
    raw = query.get(name)
    if raw is None or raw.strip() == "":
        return default
    raw = raw.strip()
    if not ascii_digits(raw) or len(raw) > 9:
        raise ApiError(message)
    return int(raw)


def _selected(query: Mapping[str, str], columns: Columns) -> list[str]:
    raw = query.get("req_fields", "").strip()
    if not raw:
        return [name for _, name in columns.fields]
    known = columns.by_abbr()
    asked = [a.strip() for a in raw.split(",") if a.strip()]
    bad = [a for a in asked if a not in known]
    if bad or not asked:
        raise ApiError(errors.required_fields_invalid(bad or [raw]))
    return [known[a] for a in asked]


def _order(
    query: Mapping[str, str], columns: Columns, default: str | None
) -> tuple[str, bool] | None:
    raw = query.get("order", "").strip() or default
    if not raw:
        return None
    abbr, sep, direction = raw.rpartition("_")
    if not sep:
        abbr, direction = raw, ""
    known = columns.by_abbr()
    if abbr not in known:
        raise ApiError(errors.ORDER_FIELD_INVALID)
    if direction.upper() not in ("ASC", "DESC"):
        raise ApiError(errors.ORDER_DIRECTION_INVALID)
    return known[abbr], direction.upper() == "DESC"


def _sort_key(value: Tree) -> str:
    return value if isinstance(value, str) else ""


def page_params(query: Mapping[str, str], max_limit: int = MAX_LIMIT) -> tuple[int, int]:
    page = _int_param(query, "page", 1, errors.PAGE_NOT_INTEGER)
    if page < 1:
        raise ApiError(errors.PAGE_NOT_INTEGER)
    limit = _int_param(query, "limit", max_limit, errors.LIMIT_NOT_INTEGER)
    if not 1 <= limit <= max_limit:
        raise ApiError(errors.limit_range(max_limit))
    return page, limit


def paged(
    query: Mapping[str, str],
    rows: Sequence[Row],
    columns: Columns,
    *,
    default_order: str | None = None,
    max_limit: int = MAX_LIMIT,
) -> Tree:
    """Validate the paging parameters and lay out one page of ``rows`` as an iovox response."""
    page, limit = page_params(query, max_limit)
    selected = _selected(query, columns)
    order = _order(query, columns, default_order)
    ordered = list(rows)
    if order is not None:
        name, descending = order
        ordered.sort(key=lambda r: _sort_key(r.get(name)), reverse=descending)
    start = (page - 1) * limit
    window = ordered[start : start + limit]
    return {
        "current_page": str(page),
        "total_pages": str(math.ceil(len(ordered) / limit)),
        "total_results": str(len(ordered)),
        "results": {"result": [{name: row.get(name, "") for name in selected} for row in window]},
    }


def id_list(query: Mapping[str, str], name: str, sep: str = ",") -> list[str] | None:
    """A comma-separated id list from the query string (None when the parameter is absent)."""
    raw = query.get(name)
    if raw is None:
        return None
    return [part.strip() for part in raw.split(sep)]
