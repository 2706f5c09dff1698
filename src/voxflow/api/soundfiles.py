"""SoundFiles: createSoundFiles, getSoundFiles, getSoundFileData, deleteSoundFiles.

A sound file is addressed as ``<sound group>|<sound label>``; the label is unique within its
group. Uploads are WAV only and are stored converted to 16-bit PCM mono 8 kHz (see
:mod:`voxflow.media.wav`); the conversion runs before the write transaction opens.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping

from lxml import etree
from sqlalchemy import Connection, select, tuple_

from voxflow import errors
from voxflow.api import paging, xmlcodec
from voxflow.api.routing import Request, Result, route
from voxflow.clock import wire_time
from voxflow.domain.flow_variables import SOUND_FILES
from voxflow.domain.sounds import (
    DEFAULT_SOUND_GROUP,
    GROUP_MAX,
    LABEL_MAX,
    SoundRef,
    parse_sound_ref,
)
from voxflow.errors import ApiError, ErrorList
from voxflow.media import wav
from voxflow.store import tables as t

SOUND_COLUMNS = paging.Columns(
    [
        ("sg", "sound_group"),
        ("sl", "sound_label"),
        ("no", "notes"),
        ("du", "duration"),
        ("cr", "created"),
    ]
)

# voxflow decisions: iovox documents the shape of these methods but not their errors.
SOUND_LABEL_EMPTY = "Sound Label Empty"
SOUND_LABEL_TOO_LONG = "Sound Label too long"
SOUND_LABEL_INVALID = "Sound Label Invalid"
SOUND_GROUP_TOO_LONG = "Sound Group too long"
SOUND_GROUP_INVALID = "Sound Group Invalid"
SOUND_FILE_EMPTY = "Sound File Empty"
SOUND_FILE_NOT_BASE64 = "Sound File Invalid: base64 expected"
SOUND_LABEL_EXISTS = "Sound Label already exists in Sound Group"
SOUND_FILE_MISSING = "Sound File does not exist"
SOUND_FILES_EMPTY = "Sound Files Empty"
# A label or group holding these could not be named in a ``group|label,group|label`` list.
RESERVED_CHARS = frozenset(",|")
VARIABLE = "?"  # a flow attribute left open for each link's rules_variable values


def sound_file_invalid(reason: str) -> str:
    return f"Sound File Invalid: {reason}"


# ---------------------------------------------------------------- shared with other interfaces


def existing_sounds(conn: Connection, account_id: int, refs: Iterable[SoundRef]) -> set[SoundRef]:
    """Which of ``refs`` are sound files of the account (for call flows that play them)."""
    wanted = list(set(refs))
    if not wanted:
        return set()
    sf = t.sound_files
    rows = conn.execute(
        select(sf.c.sound_group, sf.c.sound_label).where(
            sf.c.account_id == account_id,
            tuple_(sf.c.sound_group, sf.c.sound_label).in_([tuple(r) for r in wanted]),
        )
    )
    return {SoundRef(r.sound_group, r.sound_label) for r in rows}


def sound_refs_in_flow(flow_xml: str) -> set[SoundRef]:
    """Every ``<soundFile soundGroup=".." soundLabel=".."/>`` anywhere in a stored call flow."""
    try:
        # A parser per call: lxml parsers must not be shared between the handler threads.
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        root = etree.fromstring(flow_xml.encode("utf-8"), parser)
    except etree.XMLSyntaxError:
        return set()
    refs: set[SoundRef] = set()
    for el in root.iter("soundFile"):
        group = (el.get("soundGroup") or "").strip() or DEFAULT_SOUND_GROUP
        label = (el.get("soundLabel") or "").strip()
        if label and label != VARIABLE:  # "?" is filled per link (see _used_sounds)
            refs.add(SoundRef(group, label))
    return refs


# ---------------------------------------------------------------- createSoundFiles


@route("SoundFiles", "createSoundFiles", "POST")
def create_sound_files(req: Request) -> Result:
    if req.body is None:
        raise ApiError(errors.REQUEST_EMPTY)
    values = xmlcodec.fields(req.body)
    errs = ErrorList()
    ref = _check_ref(errs, values)
    converted = _check_audio(errs, values.get("sound_file", ""))
    with req.db.write() as conn:
        if ref is not None and existing_sounds(conn, req.account.id, [ref]):
            errs.add(SOUND_LABEL_EXISTS)
        errs.raise_if_any()
        assert ref is not None and converted is not None
        row = {
            "account_id": req.account.id,
            "sound_group": ref.group,
            "sound_label": ref.label,
            "notes": values.get("notes", ""),
            "audio": converted.wav,
            "duration_ms": converted.duration_ms,
            "created_at": req.clock.now(),
        }
        conn.execute(t.sound_files.insert(), row)
    return Result(201)


def _check_ref(errs: ErrorList, values: Mapping[str, str]) -> SoundRef | None:
    label = values.get("sound_label", "")
    group = values.get("sound_group", "") or DEFAULT_SOUND_GROUP
    ok = True
    if not label:
        errs.add(SOUND_LABEL_EMPTY)
        ok = False
    elif len(label) > LABEL_MAX:
        errs.add(SOUND_LABEL_TOO_LONG)
        ok = False
    elif RESERVED_CHARS & set(label):
        errs.add(SOUND_LABEL_INVALID)
        ok = False
    if len(group) > GROUP_MAX:
        errs.add(SOUND_GROUP_TOO_LONG)
        ok = False
    elif RESERVED_CHARS & set(group):
        errs.add(SOUND_GROUP_INVALID)
        ok = False
    return SoundRef(group, label) if ok else None


def _check_audio(errs: ErrorList, encoded: str) -> wav.Converted | None:
    compact = "".join(encoded.split())  # base64 may arrive wrapped over several lines
    if not compact:
        errs.add(SOUND_FILE_EMPTY)
        return None
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        errs.add(SOUND_FILE_NOT_BASE64)
        return None
    try:
        return wav.convert(data)
    except wav.WavError as err:
        errs.add(sound_file_invalid(err.reason))
        return None


# ---------------------------------------------------------------- reads


@route("SoundFiles", "getSoundFiles", "GET")
def get_sound_files(req: Request) -> Result:
    sf = t.sound_files
    q = (
        select(sf.c.sound_group, sf.c.sound_label, sf.c.notes, sf.c.duration_ms, sf.c.created_at)
        .where(sf.c.account_id == req.account.id)
        .order_by(sf.c.id)
    )
    if req.query.get("sound_group"):
        q = q.where(sf.c.sound_group == req.query["sound_group"])
    if req.query.get("sound_label"):
        q = q.where(sf.c.sound_label == req.query["sound_label"])
    paging.page_params(req.query)
    with req.db.read() as conn:
        found = conn.execute(q).all()
    rows = [
        {
            "sound_group": r.sound_group,
            "sound_label": r.sound_label,
            "notes": r.notes,
            "duration": _seconds(r.duration_ms),
            "created": wire_time(r.created_at),
        }
        for r in found
    ]
    return Result(200, paging.paged(req.query, rows, SOUND_COLUMNS))


def _seconds(duration_ms: int) -> str:
    return f"{duration_ms // 1000}.{duration_ms % 1000:03d}"


@route("SoundFiles", "getSoundFileData", "GET")
def get_sound_file_data(req: Request) -> Result:
    label = req.query.get("sound_label", "").strip()
    group = req.query.get("sound_group", "").strip() or DEFAULT_SOUND_GROUP
    if not label:
        raise ApiError(SOUND_LABEL_EMPTY)
    sf = t.sound_files
    with req.db.read() as conn:
        audio = conn.execute(
            select(sf.c.audio).where(
                sf.c.account_id == req.account.id,
                sf.c.sound_group == group,
                sf.c.sound_label == label,
            )
        ).scalar()
    if audio is None:
        raise ApiError(SOUND_FILE_MISSING)
    tree = {
        "sound_group": group,
        "sound_label": label,
        "sound_file": base64.b64encode(audio).decode("ascii"),
    }
    return Result(200, tree)


# ---------------------------------------------------------------- deleteSoundFiles


@route("SoundFiles", "deleteSoundFiles", "DELETE")
def delete_sound_files(req: Request) -> Result:
    names = paging.id_list(req.query, "sound_files")
    if not names or names == [""]:
        raise ApiError(SOUND_FILES_EMPTY)
    total = len(names)
    errs = ErrorList()
    pks: list[int] = []
    with req.db.write() as conn:
        used = _used_sounds(conn, req.account.id)
        for i, name in enumerate(names, 1):
            pk = _deletable(conn, req.account.id, name, used=used, errs=errs, position=(i, total))
            if pk is not None:
                pks.append(pk)
        errs.raise_if_any()
        conn.execute(t.sound_files.delete().where(t.sound_files.c.id.in_(pks)))
    return Result.no_content()


def _deletable(
    conn: Connection,
    account_id: int,
    name: str,
    *,
    used: Mapping[SoundRef, str],
    errs: ErrorList,
    position: tuple[int, int],
) -> int | None:
    where = f"Sound File {position[0]} of {position[1]}"
    ref = parse_sound_ref(name)
    if ref is None:
        errs.add(f"{where} Empty")
        return None
    sf = t.sound_files
    pk: int | None = conn.execute(
        select(sf.c.id).where(
            sf.c.account_id == account_id,
            sf.c.sound_group == ref.group,
            sf.c.sound_label == ref.label,
        )
    ).scalar()
    if pk is None:
        errs.add(f"{where} does not exist")
        return None
    if ref in used:
        errs.add(f"{where} is used by CallFlow {used[ref]}")
        return None
    return pk


def _used_sounds(conn: Connection, account_id: int) -> dict[SoundRef, str]:
    """Each sound file the account's call flows play → the first flow (by age) that plays it.

    A flow plays the sound files named in its XML and, on each link it is attached to, those
    given for its ``?`` sound files in that link's ``rules_variable`` values.
    """
    cf = t.call_flows
    flows = conn.execute(
        select(cf.c.id, cf.c.name, cf.c.xml).where(cf.c.account_id == account_id).order_by(cf.c.id)
    ).all()
    names = {flow.id: flow.name for flow in flows}
    used: dict[SoundRef, str] = {}
    for flow in flows:
        for ref in sound_refs_in_flow(flow.xml):
            used.setdefault(ref, flow.name)
    links = conn.execute(
        select(t.links.c.call_flow_pk, t.links.c.rule_values)
        .where(t.links.c.account_id == account_id, t.links.c.call_flow_pk.is_not(None))
        .order_by(t.links.c.call_flow_pk, t.links.c.id)
    )
    for link in links:
        for ref in sound_refs_in_link_values(link.rule_values):
            used.setdefault(ref, names.get(link.call_flow_pk, ""))
    return used


def sound_refs_in_link_values(raw: str) -> set[SoundRef]:
    """The ``group|label`` sound files in a link's stored ``rules_variable`` values."""
    try:
        values = json.loads(raw or "{}")
    except ValueError:
        return set()
    if not isinstance(values, dict):
        return set()
    refs: set[SoundRef] = set()
    for rule in values.values():
        given = rule.get(SOUND_FILES) if isinstance(rule, dict) else None
        for name in given if isinstance(given, list) else ():
            ref = parse_sound_ref(name) if isinstance(name, str) else None
            if ref is not None:
                refs.add(ref)
    return refs
