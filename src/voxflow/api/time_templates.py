"""Rules: createTimeTemplates, getTimeTemplates, updateTimeTemplates, deleteTimeTemplates.

A time template is a ``label`` and a list of time frames, each with an optional date range
(``date_from``/``date_to`` as ``YYYY-MM-DD``), a ``recurrence`` of that range (``NONE``,
``MONTHLY``, ``YEARLY``), a daily window ``time_from`` to ``time_to`` (``HH:MM``; a ``time_to``
earlier than ``time_from`` runs past midnight) and the ``days`` it applies on (none: every day).
Frames are stored as JSON text. Time frames are numbered across the whole request in the
``Time Frame x of y`` errors, since a request may carry several templates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import date
from typing import Any

from lxml import etree
from sqlalchemy import Connection, select

from voxflow import errors
from voxflow.api import paging, xmlcodec
from voxflow.api.routing import Request, Result, route
from voxflow.api.xmlcodec import Tree
from voxflow.errors import ApiError, ErrorList
from voxflow.store import tables as t

LABEL_MAX = 255
RECURRENCES = ("NONE", "MONTHLY", "YEARLY")
DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
DEFAULT_TIME_FROM, DEFAULT_TIME_TO = "00:00", "23:59"
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")

TEMPLATE_COLUMNS = paging.Columns([("l", "label"), ("tf", "time_frames")])
TIME_TEMPLATES_EMPTY = "Time Templates Empty"

Frame = dict[str, Any]


class FrameInvalid(Exception):
    """One time frame cannot be accepted; the message is the reason."""


# ---------------------------------------------------------------- parsing time frames


def parse_frame(el: etree._Element) -> Frame:
    """A ``<time_frame>`` as the stored dict, or :class:`FrameInvalid`."""
    values = xmlcodec.fields(el)
    date_from = _date(values.get("date_from", ""), "date_from")
    date_to = _date(values.get("date_to", ""), "date_to")
    if date_from and date_to and date_to < date_from:
        raise FrameInvalid("date_to is before date_from")
    recurrence = values.get("recurrence", "").upper() or "NONE"
    if recurrence not in RECURRENCES:
        raise FrameInvalid("recurrence must be NONE, MONTHLY or YEARLY")
    return {
        "date_from": date_from,
        "date_to": date_to,
        "recurrence": recurrence,
        "time_from": _time(values.get("time_from", ""), "time_from", DEFAULT_TIME_FROM),
        "time_to": _time(values.get("time_to", ""), "time_to", DEFAULT_TIME_TO),
        "days": _days(el.find("days")),
    }


def _date(value: str, name: str) -> str:
    if not value:
        return ""
    try:
        if not _DATE_RE.match(value):
            raise ValueError(value)
        date.fromisoformat(value)
    except ValueError:
        raise FrameInvalid(f"{name} must be a date YYYY-MM-DD") from None
    return value


def _time(value: str, name: str, default: str) -> str:
    if not value:
        return default
    if not _TIME_RE.match(value):
        raise FrameInvalid(f"{name} must be a time HH:MM")
    return value


def _days(el: etree._Element | None) -> list[str]:
    if el is None:
        return []
    given = {(day.text or "").strip().upper() for day in xmlcodec.items(el, "day")}
    unknown = given - set(DAYS)
    if unknown:
        raise FrameInvalid("day must be one of " + ", ".join(DAYS))
    return [d for d in DAYS if d in given]


def frame_tree(frame: Frame) -> Tree:
    return {
        "date_from": frame["date_from"],
        "date_to": frame["date_to"],
        "recurrence": frame["recurrence"],
        "time_from": frame["time_from"],
        "time_to": frame["time_to"],
        "days": {"day": list(frame["days"])},
    }


class FrameCounter:
    """Numbers the time frames of a request in document order (``Time Frame x of y``)."""

    def __init__(self, templates: Sequence[etree._Element]) -> None:
        self.total = sum(len(_frame_elements(el) or []) for el in templates)
        self.seen = 0

    def parse(self, errs: ErrorList, frames: Sequence[etree._Element]) -> list[Frame] | None:
        parsed: list[Frame] = []
        ok = True
        for el in frames:
            self.seen += 1
            try:
                parsed.append(parse_frame(el))
            except FrameInvalid as exc:
                errs.add(f"Time Frame {self.seen} of {self.total} Invalid: {exc}")
                ok = False
        return parsed if ok else None


def _frame_elements(template: etree._Element) -> list[etree._Element] | None:
    """The ``time_frames/time_frame`` elements; None when ``<time_frames>`` is absent."""
    holder = template.find("time_frames")
    if holder is None:
        return None
    return xmlcodec.items(holder, "time_frame")


def _frames(
    errs: ErrorList, counter: FrameCounter, template: etree._Element, position: tuple[int, int]
) -> list[Frame] | None:
    elements = _frame_elements(template) or []
    if not elements:
        errs.add(f"Time Frames {position[0]} of {position[1]} Empty")
        return None
    return counter.parse(errs, elements)


# ---------------------------------------------------------------- handlers


def _templates(body: etree._Element | None) -> list[etree._Element]:
    found = xmlcodec.items(body, "time_template") if body is not None else []
    if not found:
        raise ApiError(errors.REQUEST_EMPTY)
    return found


def _template_pk(conn: Connection, account_id: int, label: str) -> int | None:
    tt = t.time_templates
    pk: int | None = conn.execute(
        select(tt.c.id).where(tt.c.account_id == account_id, tt.c.label == label)
    ).scalar()
    return pk


def _check_label(errs: ErrorList, label: str, position: tuple[int, int], new: bool = False) -> bool:
    what = f"{'New ' if new else ''}Time Template {position[0]} of {position[1]}"
    if not label:
        errs.add(f"{what} Empty")
        return False
    if len(label) > LABEL_MAX:
        errs.add(f"{what} too long")
        return False
    return True


@route("Rules", "createTimeTemplates", "POST")
def create_time_templates(req: Request) -> Result:
    templates = _templates(req.body)
    total = len(templates)
    counter = FrameCounter(templates)
    errs = ErrorList()
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    with req.db.write() as conn:
        for i, el in enumerate(templates, 1):
            label = xmlcodec.text(el, "label") or ""
            ok = _check_label(errs, label, (i, total))
            if ok and (label in seen or _template_pk(conn, req.account.id, label) is not None):
                errs.add(f"Time Template {i} of {total} already exists")
                ok = False
            seen.add(label)
            frames = _frames(errs, counter, el, (i, total))
            if ok and frames is not None:
                row = {"account_id": req.account.id, "label": label}
                rows.append({**row, "time_frames": json.dumps(frames)})
        errs.raise_if_any()
        conn.execute(t.time_templates.insert(), rows)
    return Result(201)


@route("Rules", "getTimeTemplates", "GET")
def get_time_templates(req: Request) -> Result:
    tt = t.time_templates
    q = select(tt.c.label, tt.c.time_frames).where(tt.c.account_id == req.account.id)
    if req.query.get("label"):
        q = q.where(tt.c.label == req.query["label"])
    paging.page_params(req.query)
    with req.db.read() as conn:
        found = conn.execute(q.order_by(tt.c.id)).all()
    rows: list[paging.Row] = [
        {
            "label": r.label,
            "time_frames": {"time_frame": [frame_tree(f) for f in json.loads(r.time_frames)]},
        }
        for r in found
    ]
    return Result(200, paging.paged(req.query, rows, TEMPLATE_COLUMNS))


@route("Rules", "updateTimeTemplates", "PUT")
def update_time_templates(req: Request) -> Result:
    templates = _templates(req.body)
    total = len(templates)
    counter = FrameCounter(templates)
    errs = ErrorList()
    tt = t.time_templates
    with req.db.write() as conn:
        for i, el in enumerate(templates, 1):
            change = _update_values(
                conn, req.account.id, el, errs=errs, counter=counter, position=(i, total)
            )
            if change is not None and change[1]:
                conn.execute(tt.update().where(tt.c.id == change[0]).values(**change[1]))
        errs.raise_if_any()  # inside the transaction: any error rolls back every item
    return Result.no_content()


def _update_values(
    conn: Connection,
    account_id: int,
    el: etree._Element,
    *,
    errs: ErrorList,
    counter: FrameCounter,
    position: tuple[int, int],
) -> tuple[int, dict[str, object]] | None:
    """The row and the new values of one ``<time_template>`` of an update (None: an error)."""
    label = xmlcodec.text(el, "label") or ""
    ok = _check_label(errs, label, position)
    pk = _template_pk(conn, account_id, label) if ok else None
    if ok and pk is None:
        errs.add(f"Time Template {position[0]} of {position[1]} does not exist")
    values: dict[str, object] = {}
    new_label = xmlcodec.text(el, "new_label")
    if new_label and new_label != label:
        if not _check_label(errs, new_label, position, new=True):
            ok = False
        elif _template_pk(conn, account_id, new_label) is not None:
            errs.add(f"New Time Template {position[0]} of {position[1]} already exists")
            ok = False
        values["label"] = new_label
    if _frame_elements(el) is not None:
        frames = _frames(errs, counter, el, position)
        ok &= frames is not None
        values["time_frames"] = json.dumps(frames)
    return (pk, values) if ok and pk is not None else None


@route("Rules", "deleteTimeTemplates", "DELETE")
def delete_time_templates(req: Request) -> Result:
    labels = paging.id_list(req.query, "labels")
    if not labels or labels == [""]:
        raise ApiError(TIME_TEMPLATES_EMPTY)
    total = len(labels)
    errs = ErrorList()
    pks: list[int] = []
    with req.db.write() as conn:
        for i, label in enumerate(labels, 1):
            if not label:
                errs.add(f"Time Template {i} of {total} Empty")
                continue
            pk = _template_pk(conn, req.account.id, label)
            if pk is None:
                errs.add(f"Time Template {i} of {total} does not exist")
                continue
            pks.append(pk)
        errs.raise_if_any()
        conn.execute(t.time_templates.delete().where(t.time_templates.c.id.in_(pks)))
    return Result.no_content()
