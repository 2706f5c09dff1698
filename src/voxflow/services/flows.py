"""Stored call flows: lookups shared by the CallFlow, Rules, Links and Calling interfaces."""

from __future__ import annotations

import json
from dataclasses import dataclass

from lxml import etree
from sqlalchemy import Connection, select

from voxflow.domain.flow import Checks
from voxflow.domain.flow_variables import LinkValues
from voxflow.domain.sounds import SoundRef
from voxflow.store import tables as t


@dataclass(frozen=True)
class StoredFlow:
    pk: int
    name: str
    notes: str
    xml: str

    def element(self) -> etree._Element:
        return etree.fromstring(self.xml.encode("utf-8"))


def checks_for(conn: Connection, account_id: int) -> Checks:
    """Parser checks that look up the account's sound files and contacts (loaded once)."""
    sounds = {
        SoundRef(r.sound_group, r.sound_label)
        for r in conn.execute(
            select(t.sound_files.c.sound_group, t.sound_files.c.sound_label).where(
                t.sound_files.c.account_id == account_id
            )
        )
    }
    contacts = set(
        conn.execute(
            select(t.contacts.c.contact_id).where(t.contacts.c.account_id == account_id)
        ).scalars()
    )
    return Checks(sound_exists=sounds.__contains__, contact_exists=contacts.__contains__)


def find_flow(conn: Connection, account_id: int, name: str) -> StoredFlow | None:
    row = conn.execute(
        select(
            t.call_flows.c.id, t.call_flows.c.name, t.call_flows.c.notes, t.call_flows.c.xml
        ).where(t.call_flows.c.account_id == account_id, t.call_flows.c.name == name)
    ).first()
    return StoredFlow(row.id, row.name, row.notes, row.xml) if row is not None else None


def flow_by_pk(conn: Connection, pk: int) -> StoredFlow:
    row = conn.execute(
        select(
            t.call_flows.c.id, t.call_flows.c.name, t.call_flows.c.notes, t.call_flows.c.xml
        ).where(t.call_flows.c.id == pk)
    ).one()
    return StoredFlow(row.id, row.name, row.notes, row.xml)


def load_values(raw: str) -> LinkValues:
    values = json.loads(raw or "{}")
    return values if isinstance(values, dict) else {}


def dump_values(values: LinkValues) -> str:
    return json.dumps(values, sort_keys=True)


def canonical_xml(el: etree._Element) -> str:
    """The stored text of a flow element: no insignificant whitespace, attributes as sent."""
    return etree.tostring(el, encoding="unicode")
