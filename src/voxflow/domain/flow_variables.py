"""Per-link variable fields of a flow (``?`` values) and their ``rules_variable`` wire form.

When a template is attached to a link, ``rules_variable`` gives each variable rule its values:
``contact/contact_id`` and ``contact/phone_number`` fill a call rule's destination,
``send_call_alert``, ``record_call`` and ``timeout`` its options, ``sound_files/sound_file``
(``group|label``) the ``?`` sound files of the rule in order, and for any other attribute its
snake_case name (``destinationEmailAddress`` → ``destination_email_address``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from copy import deepcopy

from lxml import etree

from voxflow.domain.flow import KIND_NAMES, VARIABLE
from voxflow.domain.sounds import parse_sound_ref

SOUND_FILES = "sound_files"
CONTACT_FIELDS = ("contact_id", "phone_number")
CALL_FIELDS = {
    "destinationPhoneNumber": "phone_number",
    "destinationContactId": "contact_id",
    "sendCallAlert": "send_call_alert",
    "record": "record_call",
    "timeout": "timeout",
}
# Attributes whose "?" may stay unset on a link: the rule's default applies. A call rule's two
# destination attributes are each optional, but one of them must be set (checked per rule).
OPTIONAL_ATTRS = frozenset(
    {"sendCallAlert", "record", "timeout", "destinationPhoneNumber", "destinationContactId"}
)

RuleValues = dict[str, str | list[str]]
LinkValues = dict[str, RuleValues]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def field_name(kind: str, attr: str) -> str:
    if kind == "call" and attr in CALL_FIELDS:
        return CALL_FIELDS[attr]
    return _snake(attr)


def rule_elements(flow: etree._Element) -> Iterator[etree._Element]:
    """Every rule element of a flow element, in document order."""
    for el in flow.iter():
        if isinstance(el.tag, str) and el.tag in KIND_NAMES and el is not flow:
            yield el


def owned_sounds(rule: etree._Element) -> Iterator[etree._Element]:
    """The ``<soundFile>`` elements of a rule, not those of the rules nested inside it."""
    stack = list(reversed(list(rule)))
    while stack:
        el = stack.pop()
        if not isinstance(el.tag, str) or el.tag in KIND_NAMES:
            continue
        if el.tag == "soundFile":
            yield el
        else:
            stack.extend(reversed(list(el)))


def variable_fields(rule: etree._Element) -> list[str]:
    """The wire names of a rule's variable fields, in a stable order."""
    kind = str(rule.tag)
    names = [field_name(kind, a) for a, v in rule.attrib.items() if v == VARIABLE and a != "id"]
    if any(s.get("soundLabel") == VARIABLE for s in owned_sounds(rule)):
        names.append(SOUND_FILES)
    return names


def parse_rules_variable(el: etree._Element | None) -> LinkValues:
    """``<rules_variable><rule>..</rule></rules_variable>`` → ``{rule_id: {field: value}}``.

    Empty elements and ``?`` mean "no value" and are dropped.
    """
    values: LinkValues = {}
    for rule in el if el is not None else ():
        if rule.tag != "rule":
            continue
        rule_id = (rule.findtext("rule_id") or "").strip()
        fields: RuleValues = {}
        for child in rule:
            tag = str(child.tag)
            if tag in ("rule_id", "rule_type", "rule_label"):
                continue
            if tag == "contact":
                for sub in CONTACT_FIELDS:
                    text = (child.findtext(sub) or "").strip()
                    if text and text != VARIABLE:
                        fields[sub] = text
            elif tag == SOUND_FILES:
                refs = [(s.text or "").strip() for s in child if s.tag == "sound_file"]
                refs = [r for r in refs if r and r != VARIABLE]
                if refs:
                    fields[SOUND_FILES] = refs
            elif len(child) == 0:
                text = (child.text or "").strip()
                if text and text != VARIABLE:
                    fields[tag] = text
        values[rule_id] = fields
    return values


def describe(flow: etree._Element, values: LinkValues | None = None) -> list[dict[str, object]]:
    """The variable rules of a flow as ``getVariableRulesOfTemplate`` rows (``?`` when unset)."""
    rows: list[dict[str, object]] = []
    for rule in rule_elements(flow):
        names = variable_fields(rule)
        if not names:
            continue
        have = (values or {}).get(str(rule.get("id", "")), {})
        row: dict[str, object] = {
            "rule_id": str(rule.get("id", "")),
            "rule_type": str(rule.tag),
            "rule_label": str(rule.get("label", "")),
        }
        contact = {f: str(have.get(f, VARIABLE)) for f in CONTACT_FIELDS if f in names}
        if contact:
            row["contact"] = contact
        for name in names:
            if name in CONTACT_FIELDS:
                continue
            if name == SOUND_FILES:
                refs = have.get(SOUND_FILES)
                row[SOUND_FILES] = {
                    "sound_file": list(refs) if isinstance(refs, list) else [VARIABLE]
                }
            else:
                row[name] = str(have.get(name, VARIABLE))
        rows.append(row)
    return rows


def carry_over(flow: etree._Element, values: LinkValues) -> LinkValues:
    """Keep the values of rules that still exist (and still have those fields) in a new flow."""
    kept: LinkValues = {}
    for rule in rule_elements(flow):
        rid = str(rule.get("id", ""))
        if rid in values:
            names = set(variable_fields(rule))
            fields = {k: v for k, v in values[rid].items() if k in names}
            if fields:
                kept[rid] = fields
    return kept


def resolve(flow: etree._Element, values: LinkValues) -> tuple[etree._Element, list[str]]:
    """A copy of the flow with the link's values in place of ``?``, and what is still unset.

    Optional attributes left unset are removed so that the rule's default applies; the second
    element of the result lists ``"rule_id:field"`` for every required field still unset.
    """
    resolved = deepcopy(flow)
    missing: list[str] = []
    for rule in rule_elements(resolved):
        rid = str(rule.get("id", ""))
        have = values.get(rid, {})
        kind = str(rule.tag)
        for attr, value in list(rule.attrib.items()):
            if value != VARIABLE or attr == "id":
                continue
            given = have.get(field_name(kind, attr))
            if isinstance(given, str):
                rule.set(attr, given)
            else:
                del rule.attrib[attr]
                if attr not in OPTIONAL_ATTRS:
                    missing.append(f"{rid}:{field_name(kind, attr)}")
        _resolve_sounds(rule, have, missing)
        if kind == "call" and not (
            rule.get("destinationPhoneNumber") or rule.get("destinationContactId")
        ):
            missing.append(f"{rid}:phone_number")
    return resolved, list(dict.fromkeys(missing))


def _resolve_sounds(rule: etree._Element, have: RuleValues, missing: list[str]) -> None:
    refs = have.get(SOUND_FILES)
    queue = list(refs) if isinstance(refs, list) else []
    for sound in owned_sounds(rule):
        if sound.get("soundLabel") != VARIABLE:
            continue
        ref = parse_sound_ref(queue.pop(0)) if queue else None
        if ref is None:
            missing.append(f"{rule.get('id', '')}:{SOUND_FILES}")
            continue
        sound.set("soundGroup", ref.group)
        sound.set("soundLabel", ref.label)
