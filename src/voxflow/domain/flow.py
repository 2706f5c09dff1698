"""Call flows (iovox Rule Templates) as a typed rule tree.

A flow is ``<callFlow name=".." notes="..">`` holding rules; each rule is an element named by
its type with ``id`` and ``label`` attributes, and event handlers hold further rules, so a flow is
a tree. An attribute value ``?`` is a per-link variable field (filled by ``rules_variable``);
``$name`` inside a value refers to a call variable. :func:`parse_flow` builds the tree
and reports every problem with the iovox wording, in document order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from lxml import etree

from voxflow.digits import ascii_digits
from voxflow.domain.dialstring import DialStringError, parse_dial_string
from voxflow.domain.sounds import DEFAULT_SOUND_GROUP, SoundRef

NAME_MAX = 100
VARIABLE = "?"
VARIABLE_REF = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
CALL_RESULTS = frozenset({"ANSWERED", "BUSY", "REJECTED", "NO_ANSWER", "CANCELLED"})
CALL_ALERTS = frozenset({"NONE", "MISSED_CALLS", "MISSED_CALLS_NO_WITHHELD", "ALL_CALLS"})
KEYPRESS_SEQUENCE = re.compile(r"^[0-9*#]{1,20}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
FAILURE_MESSAGES = frozenset({"noKeypressMessage", "unmatchedKeypressMessage"})

KIND_NAMES = {
    "play": "Play",
    "call": "Call",
    "messageKeypress": "Message Keypress",
    "voicemail": "Voicemail",
    "httpRequest": "Http Request",
}


class FlowError(ValueError):
    """A flow that cannot be stored; ``problems`` are iovox error messages."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Sound:
    """A ``<soundFile>``: group and label, either of which may be the variable marker."""

    group: str
    label: str

    @property
    def is_variable(self) -> bool:
        return VARIABLE in (self.group, self.label)

    @property
    def ref(self) -> SoundRef:
        return SoundRef(self.group, self.label)


@dataclass(frozen=True)
class Rule:
    id: str
    label: str

    @property
    def kind(self) -> str:
        raise NotImplementedError

    def children(self) -> Iterator[Rule]:
        """Rules nested directly inside this one (event handlers, failure branches)."""
        return iter(())


@dataclass(frozen=True)
class Play(Rule):
    sounds: tuple[Sound, ...]

    @property
    def kind(self) -> str:
        return "play"


@dataclass(frozen=True)
class CallEvent:
    result: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Call(Rule):
    destination_phone_number: str
    destination_contact_id: str
    timeout: str
    record: str
    send_call_alert: str
    caller_message: tuple[Sound, ...] = ()
    called_message: tuple[Sound, ...] = ()
    events: tuple[CallEvent, ...] = ()
    failure: tuple[Rule, ...] = ()

    @property
    def kind(self) -> str:
        return "call"

    def children(self) -> Iterator[Rule]:
        for event in self.events:
            yield from event.rules
        yield from self.failure


@dataclass(frozen=True)
class KeyEvent:
    sequence: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class MessageKeypress(Rule):
    capture_keypress: str
    timeout: str
    prompt: Play | None
    events: tuple[KeyEvent, ...] = ()
    attempts: str = "3"
    no_keypress_message: tuple[Sound, ...] = ()
    unmatched_message: tuple[Sound, ...] = ()
    failure: tuple[Rule, ...] = ()

    @property
    def kind(self) -> str:
        return "messageKeypress"

    def children(self) -> Iterator[Rule]:
        if self.prompt is not None:
            yield self.prompt
        for event in self.events:
            yield from event.rules
        yield from self.failure


@dataclass(frozen=True)
class Voicemail(Rule):
    from_address: str
    from_name: str
    subject: str
    silence: str
    max_duration: str
    destination_email_address: str
    destination_contact_id: str
    greeting: tuple[Sound, ...] = ()
    completed: tuple[Sound, ...] = ()

    @property
    def kind(self) -> str:
        return "voicemail"


@dataclass(frozen=True)
class HttpRequest(Rule):
    url: str
    request_method: str
    params: tuple[tuple[str, str], ...] = ()

    @property
    def kind(self) -> str:
        return "httpRequest"


@dataclass(frozen=True)
class CallFlow:
    name: str
    notes: str
    rules: tuple[Rule, ...]

    def walk(self) -> Iterator[Rule]:
        """Every rule of the tree, depth first in document order."""
        stack = list(reversed(self.rules))
        while stack:
            rule = stack.pop()
            yield rule
            stack.extend(reversed(list(rule.children())))


def is_literal(value: str) -> bool:
    """A value fixed in the template: neither a per-link variable nor a call-variable reference."""
    return value != VARIABLE and "$" not in value


@dataclass
class Checks:
    """What the parser may look up, and where it collects problems."""

    sound_exists: Callable[[SoundRef], bool] = lambda _ref: True
    contact_exists: Callable[[str], bool] = lambda _cid: True
    problems: list[str] = field(default_factory=list)
    seen_ids: set[str] = field(default_factory=set)

    def add(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)


def _attr(el: etree._Element, name: str, default: str = "") -> str:
    return str(el.get(name, default)).strip()


def _child(el: etree._Element, tag: str) -> etree._Element | None:
    for c in el:
        if c.tag == tag:
            return c
    return None


def _sounds(el: etree._Element | None, kind: str, checks: Checks) -> tuple[Sound, ...]:
    if el is None:
        return ()
    found: list[Sound] = []
    for s in el:
        if s.tag != "soundFile":
            continue
        sound = Sound(_attr(s, "soundGroup") or DEFAULT_SOUND_GROUP, _attr(s, "soundLabel"))
        if not sound.label:
            checks.add(f"Sound File Empty in {KIND_NAMES[kind]} Rule")
        elif not sound.is_variable and not checks.sound_exists(sound.ref):
            checks.add(f"Sound File Does not exist in {KIND_NAMES[kind]} Rule")
        found.append(sound)
    return tuple(found)


def _check_int(value: str, bounds: tuple[int, int], what: str, kind: str, checks: Checks) -> None:
    low, high = bounds
    if value and is_literal(value) and not (ascii_digits(value) and low <= int(value) <= high):
        checks.add(f"{what} Invalid in {KIND_NAMES[kind]} Rule")


def _check_choice(
    value: str, allowed: frozenset[str], what: str, kind: str, checks: Checks
) -> None:
    if value and is_literal(value) and value.upper() not in allowed:
        checks.add(f"{what} Invalid in {KIND_NAMES[kind]} Rule")


def _parse_play(el: etree._Element, rid: str, label: str, checks: Checks) -> Play:
    sounds = _sounds(el, "play", checks)
    if not sounds:
        checks.add("Sound File Empty in Play Rule")
    return Play(rid, label, sounds)


def _call_events(el: etree._Element | None, checks: Checks) -> tuple[CallEvent, ...]:
    events: list[CallEvent] = []
    for ev in el if el is not None else ():
        if ev.tag != "callEvent":
            continue
        result = _attr(ev, "result").upper()
        if result not in CALL_RESULTS or _attr(ev, "action", "onMatchResult") != "onMatchResult":
            checks.add("Call Event Invalid in Call Rule")
        events.append(CallEvent(result, _parse_rules(ev, checks)))
    return tuple(events)


def _parse_call(el: etree._Element, rid: str, label: str, checks: Checks) -> Call:
    number = _attr(el, "destinationPhoneNumber")
    contact = _attr(el, "destinationContactId")
    if not number and not contact:
        checks.add("Destination Empty in Call Rule")
    if number and is_literal(number):
        try:
            parse_dial_string(number)
        except DialStringError:
            checks.add("Destination Phone Number Invalid in Call Rule")
    if contact and is_literal(contact) and not checks.contact_exists(contact):
        checks.add(f"Contact ID {contact} does not exist in Call Rule")
    rule = Call(
        rid,
        label,
        destination_phone_number=number,
        destination_contact_id=contact,
        timeout=_attr(el, "timeout"),
        record=_attr(el, "record", "false"),
        send_call_alert=_attr(el, "sendCallAlert", "NONE"),
        caller_message=_sounds(_child(el, "callerMessage"), "call", checks),
        called_message=_sounds(_child(el, "calledMessage"), "call", checks),
        events=_call_events(_child(el, "eventHandlers"), checks),
        failure=_parse_rules(_child(el, "failure"), checks),
    )
    _check_int(rule.timeout, (1, 600), "Timeout", "call", checks)
    _check_choice(rule.record, frozenset({"TRUE", "FALSE"}), "Record", "call", checks)
    _check_choice(rule.send_call_alert, CALL_ALERTS, "Send Call Alert", "call", checks)
    return rule


def _key_events(el: etree._Element | None, checks: Checks) -> tuple[KeyEvent, ...]:
    events: list[KeyEvent] = []
    for ev in el if el is not None else ():
        if ev.tag != "keyEvent":
            continue
        sequence = _attr(ev, "keypressSequence")
        action = _attr(ev, "action", "onMatchKeypressSequence")
        if not KEYPRESS_SEQUENCE.match(sequence) or action != "onMatchKeypressSequence":
            checks.add("Keypress Sequence Invalid in Message Keypress Rule")
        events.append(KeyEvent(sequence, _parse_rules(ev, checks)))
    return tuple(events)


def _parse_message_keypress(
    el: etree._Element, rid: str, label: str, checks: Checks
) -> MessageKeypress:
    prompt_el = _child(el, "play")
    prompt = _parse_rule(prompt_el, checks) if prompt_el is not None else None
    failure = _child(el, "failure")
    rule = MessageKeypress(
        rid,
        label,
        capture_keypress=_attr(el, "captureKeypress"),
        timeout=_attr(el, "timeout", "5"),
        prompt=prompt if isinstance(prompt, Play) else None,
        events=_key_events(_child(el, "eventHandlers"), checks),
        attempts=_attr(failure, "attempts", "3") if failure is not None else "3",
        no_keypress_message=_sounds(
            _child(failure, "noKeypressMessage") if failure is not None else None,
            "messageKeypress",
            checks,
        ),
        unmatched_message=_sounds(
            _child(failure, "unmatchedKeypressMessage") if failure is not None else None,
            "messageKeypress",
            checks,
        ),
        failure=_parse_rules(failure, checks, FAILURE_MESSAGES),
    )
    _check_int(rule.timeout, (1, 120), "Timeout", "messageKeypress", checks)
    _check_int(rule.attempts, (1, 10), "Attempts", "messageKeypress", checks)
    return rule


def _parse_voicemail(el: etree._Element, rid: str, label: str, checks: Checks) -> Voicemail:
    rule = Voicemail(
        rid,
        label,
        from_address=_attr(el, "from"),
        from_name=_attr(el, "fromName"),
        subject=_attr(el, "subject"),
        silence=_attr(el, "silence", "5"),
        max_duration=_attr(el, "maxDuration", "120"),
        destination_email_address=_attr(el, "destinationEmailAddress"),
        destination_contact_id=_attr(el, "destinationContactId"),
        greeting=_sounds(_child(el, "voicemailMessage"), "voicemail", checks),
        completed=_sounds(_child(el, "completedMessage"), "voicemail", checks),
    )
    if not rule.destination_email_address and not rule.destination_contact_id:
        checks.add("Destination Empty in Voicemail Rule")
    for address in (rule.destination_email_address, rule.from_address):
        if address and is_literal(address) and not EMAIL.match(address):
            checks.add("Email Address Invalid in Voicemail Rule")
    contact = rule.destination_contact_id
    if contact and is_literal(contact) and not checks.contact_exists(contact):
        checks.add(f"Contact ID {contact} does not exist in Voicemail Rule")
    _check_int(rule.silence, (1, 60), "Silence", "voicemail", checks)
    _check_int(rule.max_duration, (1, 3600), "Max Duration", "voicemail", checks)
    return rule


def _parse_http_request(el: etree._Element, rid: str, label: str, checks: Checks) -> HttpRequest:
    url = _attr(el, "url")
    if not url or (url != VARIABLE and not url.startswith(("http://", "https://", "$"))):
        checks.add("URL Invalid in Http Request Rule")
    method = _attr(el, "requestMethod", "GET").upper()
    _check_choice(method, frozenset({"GET", "POST"}), "Request Method", "httpRequest", checks)
    params_el = _child(el, "params")
    params = tuple(
        (_attr(p, "name"), str(p.get("value", "")))
        for p in (params_el if params_el is not None else ())
        if p.tag == "param"
    )
    if any(not name for name, _ in params):
        checks.add("Param Name Empty in Http Request Rule")
    return HttpRequest(rid, label, url=url, request_method=method, params=params)


_PARSERS: dict[str, Callable[[etree._Element, str, str, Checks], Rule]] = {
    "play": _parse_play,
    "call": _parse_call,
    "messageKeypress": _parse_message_keypress,
    "voicemail": _parse_voicemail,
    "httpRequest": _parse_http_request,
}


def _parse_rule(el: etree._Element, checks: Checks) -> Rule | None:
    tag = str(el.tag)
    parser = _PARSERS.get(tag)
    if parser is None:
        checks.add(f"Rule Type {tag} does not exist")
        return None
    rid, label = _attr(el, "id"), _attr(el, "label")
    if not rid:
        checks.add("Rule ID Empty")
    elif rid in checks.seen_ids:
        checks.add(f"Rule ID Not Unique in {KIND_NAMES[tag]} Rule")
    checks.seen_ids.add(rid)
    if not label:
        checks.add("Rule Label Empty")
    return parser(el, rid, label, checks)


def _parse_rules(
    container: etree._Element | None, checks: Checks, messages: frozenset[str] = frozenset()
) -> tuple[Rule, ...]:
    """The rules inside a container, skipping the container's own message elements."""
    if container is None:
        return ()
    rules: list[Rule] = []
    for el in container:
        if not isinstance(el.tag, str) or el.tag in messages:
            continue
        rule = _parse_rule(el, checks)
        if rule is not None:
            rules.append(rule)
    return tuple(rules)


def parse_flow(
    el: etree._Element, checks: Checks | None = None, *, name: str | None = None
) -> CallFlow:
    """Parse and validate a ``<callFlow>`` element; raise :class:`FlowError` with every problem."""
    checks = checks or Checks()
    flow_name = (name if name is not None else _attr(el, "name")).strip()
    if not flow_name:
        checks.add("CallFlow Name Empty")
    elif len(flow_name) > NAME_MAX:
        checks.add("CallFlow Name too long")
    rules = _parse_rules(el, checks)
    if not rules and not any(isinstance(c.tag, str) for c in el):
        checks.add("There are no Rules in this Template")
    if checks.problems:
        raise FlowError(checks.problems)
    return CallFlow(flow_name, _attr(el, "notes"), rules)


def call_variable_names(el: etree._Element) -> list[str]:
    """The call variables a flow element refers to (``$name``), in order, built-ins excluded."""
    names: list[str] = []
    for node in el.iter():
        if not isinstance(node.tag, str):
            continue
        for value in node.attrib.values():
            for match in VARIABLE_REF.finditer(str(value)):
                name = match.group(1)
                if not name.startswith("_") and name not in names:
                    names.append(name)
    return names
